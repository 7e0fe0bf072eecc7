namespace Mechanist.Features;

/// <summary>
/// One example of a feature firing: a window of the text around the token where it fired, with the feature's
/// activation on every token of the window.
/// </summary>
/// <param name="Text">Index of the text in the corpus.</param>
/// <param name="Position">Token position where the feature fired (in the tokenized text, BOS included).</param>
/// <param name="Activation">Its activation there.</param>
/// <param name="Hash">The example's sampling hash (examples within an activation interval are the ones with the smallest hashes).</param>
/// <param name="Start">Position of the window's first token.</param>
/// <param name="Ids">Token ids of the window.</param>
/// <param name="Acts">The feature's activation on each token of the window.</param>
public sealed record FeatureExample(long Text, int Position, float Activation, ulong Hash, int Start, long[] Ids, float[] Acts)
{
    /// <summary>Whether this example ranks above <paramref name="other"/> among top activations (larger activation; ties: earlier text and position).</summary>
    public bool RanksAbove(FeatureExample other) =>
        Activation > other.Activation || (Activation == other.Activation && (Text < other.Text || (Text == other.Text && Position < other.Position)));
}

/// <summary>Sizes of what a build keeps per feature.</summary>
/// <param name="TopK">Top-activating examples per feature.</param>
/// <param name="PerInterval">Examples kept per activation interval (one octave of activation each).</param>
/// <param name="Before">Tokens of context before the firing token.</param>
/// <param name="After">Tokens of context after it.</param>
public sealed record FeatureSketchSettings(int TopK = 20, int PerInterval = 4, int Before = 12, int After = 4);

/// <summary>
/// What a streaming pass keeps for every feature of one dictionary layer, in memory bounded by the number of features
/// (never by the corpus): firing count, activation sum and maximum, a histogram of activations in quarter-octave bins,
/// the top-k examples (a window repeated token for token counts once, as its best occurrence), and per octave of activation the distinct windows with the smallest hashes (a bottom-k sample, so that
/// sketches of disjoint shards merge into exactly the sketch of the whole corpus).
/// </summary>
public sealed class FeatureSketch
{
    /// <summary>Quarter-octave histogram bins: bin b holds activations in [2^(b/4 − 10), 2^((b+1)/4 − 10)); the ends are open.</summary>
    public const int HistogramBins = 80;
    /// <summary>Octave intervals for sampled examples: interval i holds [2^(i − 10), 2^(i − 9)); the ends are open.</summary>
    public const int Intervals = 20;

    /// <summary>A new, empty sketch.</summary>
    public FeatureSketch(int layerIndex, int dDict, FeatureSketchSettings settings)
    {
        LayerIndex = layerIndex; DDict = dDict; Settings = settings;
        Count = new long[dDict]; Sum = new double[dDict]; Max = new float[dDict];
        Histogram = new long[dDict * HistogramBins];
        Top = new List<FeatureExample>?[dDict];
        Sampled = new List<FeatureExample>?[dDict * Intervals];
    }

    /// <summary>Index of the dictionary layer.</summary>
    public int LayerIndex { get; }
    /// <summary>Features.</summary>
    public int DDict { get; }
    /// <summary>Sizes.</summary>
    public FeatureSketchSettings Settings { get; }
    /// <summary>Tokens seen.</summary>
    public long Tokens { get; set; }
    /// <summary>Tokens where each feature fired (activation &gt; 0).</summary>
    public long[] Count { get; }
    /// <summary>Sum of each feature's activations.</summary>
    public double[] Sum { get; }
    /// <summary>Largest activation of each feature.</summary>
    public float[] Max { get; }
    /// <summary>[feature × bin] counts (see <see cref="HistogramBins"/>).</summary>
    public long[] Histogram { get; }
    /// <summary>Top examples of each feature, best first.</summary>
    public List<FeatureExample>?[] Top { get; }
    /// <summary>[feature × interval] sampled examples, smallest hash first.</summary>
    public List<FeatureExample>?[] Sampled { get; }

    /// <summary>The histogram bin of a positive activation.</summary>
    public static int BinOf(float a) => Math.Clamp((int)Math.Floor(4 * (Math.Log2(a) + 10)), 0, HistogramBins - 1);
    /// <summary>The octave interval of a positive activation.</summary>
    public static int IntervalOf(float a) => Math.Clamp((int)Math.Floor(Math.Log2(a)) + 10, 0, Intervals - 1);
    /// <summary>Lower edge of histogram bin b (0 for the first, open bin).</summary>
    public static double BinLow(int b) => b == 0 ? 0 : Math.Pow(2, b / 4.0 - 10);
    /// <summary>Lower edge of interval i (0 for the first, open one).</summary>
    public static double IntervalLow(int i) => i == 0 ? 0 : Math.Pow(2, i - 10);

    /// <summary>The sampling hash of (layer, feature, text, position): SplitMix64 over the four.</summary>
    public static ulong HashOf(int layer, int feature, long text, int position)
    {
        ulong Mix(ulong z)
        {
            z += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
        return Mix(Mix(Mix((ulong)layer << 32 | (uint)feature) ^ (ulong)text) ^ (uint)position);
    }

    /// <summary>Builds an example's window only when a sketch keeps it (a struct, so that the many firings that are not kept allocate nothing).</summary>
    public interface IWindow
    {
        /// <summary>The example.</summary>
        FeatureExample Build();
    }

    // What a firing must reach to be a candidate at all, so that most firings touch only flat arrays: per feature the activation
    // of the worst top example (−∞ while there is room), per [feature × interval] the largest sampled hash (the maximum while there is
    // room). Built from the lists at the first Add (a store read back fills the lists directly) and kept by the inserts after that.
    float[]? _topFloor;
    ulong[]? _sampleCeiling;

    /// <summary>Adds one firing of <paramref name="feature"/>; <paramref name="window"/> builds its example only when it is kept.</summary>
    public void Add<TWindow>(int feature, float activation, long text, int position, in TWindow window, ulong hash) where TWindow : struct, IWindow
    {
        if (!(activation > 0)) return;
        Count[feature]++;
        Sum[feature] += activation;
        if (activation > Max[feature]) Max[feature] = activation;
        Histogram[feature * HistogramBins + BinOf(activation)]++;
        var floors = _topFloor ??= Enumerable.Range(0, DDict).Select(TopFloor).ToArray();
        var ceilings = _sampleCeiling ??= Enumerable.Range(0, Sampled.Length).Select(SampleCeiling).ToArray();
        int slot = feature * Intervals + IntervalOf(activation);
        bool top = Settings.TopK > 0 && activation >= floors[feature], sample = Settings.PerInterval > 0 && hash <= ceilings[slot];
        if (!top && !sample) return;
        FeatureExample? built = null;
        if (top && (Top[feature] is not { } list || list.Count < Settings.TopK || Beats(activation, text, position, list[^1])))
            InsertTop(feature, built = window.Build());
        if (sample && (Sampled[slot] is not { } kept || kept.Count < Settings.PerInterval || hash < kept[^1].Hash))
            InsertSample(slot, built ?? window.Build());
    }

    float TopFloor(int feature) => Top[feature] is { } top && top.Count >= Settings.TopK ? top[^1].Activation : float.NegativeInfinity;

    ulong SampleCeiling(int slot) => Sampled[slot] is { } sample && sample.Count >= Settings.PerInterval ? sample[^1].Hash : ulong.MaxValue;

    static bool Beats(float a, long text, int position, FeatureExample worst) =>
        a > worst.Activation || (a == worst.Activation && (text < worst.Text || (text == worst.Text && position < worst.Position)));

    void InsertTop(int feature, FeatureExample e)
    {
        var top = Top[feature] ??= new List<FeatureExample>(Settings.TopK);
        // A window repeated token for token (a repeated text) counts once, as its best-ranked occurrence, so the top examples differ.
        // Streaming keeps exactly the top k windows by their best occurrence: an occurrence that beats the current worst also beats
        // every earlier occurrence of its window that was turned away, and merged shards follow the same rule.
        for (int j = 0; j < top.Count; j++)
            if (top[j].Ids.AsSpan().SequenceEqual(e.Ids))
            {
                if (!e.RanksAbove(top[j])) return;
                top.RemoveAt(j);
                break;
            }
        int i = top.Count;
        while (i > 0 && e.RanksAbove(top[i - 1])) i--;
        top.Insert(i, e);
        if (top.Count > Settings.TopK) top.RemoveAt(top.Count - 1);
        if (_topFloor is { } floors) floors[feature] = TopFloor(feature);
    }

    void InsertSample(int slot, FeatureExample e)
    {
        var sample = Sampled[slot] ??= new List<FeatureExample>(Settings.PerInterval);
        // A window repeated token for token counts once, as its occurrence with the smallest hash: the sample is then exactly the
        // distinct windows with the smallest such hashes, whatever the order of occurrences or shards (one eviction argument as for the top).
        for (int j = 0; j < sample.Count; j++)
            if (sample[j].Ids.AsSpan().SequenceEqual(e.Ids))
            {
                if (e.Hash >= sample[j].Hash) return;
                sample.RemoveAt(j);
                break;
            }
        int i = sample.Count;
        while (i > 0 && e.Hash < sample[i - 1].Hash) i--;
        sample.Insert(i, e);
        if (sample.Count > Settings.PerInterval) sample.RemoveAt(sample.Count - 1);
        if (_sampleCeiling is { } ceilings) ceilings[slot] = SampleCeiling(slot);
    }

    /// <summary>Adds another shard's sketch of the same layer (disjoint texts): the result is the sketch of both.</summary>
    public void MergeFrom(FeatureSketch other)
    {
        if (other.DDict != DDict || other.Settings != Settings) throw new MechanistException("cannot merge feature sketches of different sizes");
        Tokens += other.Tokens;
        for (int f = 0; f < DDict; f++)
        {
            Count[f] += other.Count[f]; Sum[f] += other.Sum[f]; Max[f] = Math.Max(Max[f], other.Max[f]);
            if (other.Top[f] is { } ot) foreach (var e in ot) InsertTop(f, e);
        }
        for (int i = 0; i < Histogram.Length; i++) Histogram[i] += other.Histogram[i];
        for (int s = 0; s < Sampled.Length; s++)
            if (other.Sampled[s] is { } os) foreach (var e in os) InsertSample(s, e);
    }
}
