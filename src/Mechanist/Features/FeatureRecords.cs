namespace Mechanist.Features;

/// <summary>What a feature store holds and where it came from (the store's meta row).</summary>
/// <param name="Model">Model name.</param>
/// <param name="Dictionary">Dictionary folder as given.</param>
/// <param name="DictionaryId">Fingerprint of the dictionary's files.</param>
/// <param name="DictionaryKind">sae, transcoder, skip-transcoder or clt (<see cref="Dictionaries.DictionaryNames.Kinds"/>; older stores say "transcoders" for a transcoder set; "published" for <see cref="PublishedFeatures"/>).</param>
/// <param name="Layers">The model layer of each dictionary layer.</param>
/// <param name="DDict">Features per layer.</param>
/// <param name="CorpusHash">SHA-256 of the corpus texts.</param>
/// <param name="CorpusTexts">Texts in the whole corpus.</param>
/// <param name="ShardIndex">This shard (−1 in a merged store).</param>
/// <param name="ShardCount">Shards in the plan.</param>
/// <param name="TextsDone">Texts of this shard read so far (a merged store: all).</param>
/// <param name="Tokens">Tokens read.</param>
/// <param name="Complete">Whether every text of the shard was read.</param>
/// <param name="Settings">Examples kept per feature.</param>
public sealed record FeatureStoreInfo(string Model, string Dictionary, string DictionaryId, string DictionaryKind, int[] Layers, int DDict,
    string CorpusHash, long CorpusTexts, int ShardIndex, int ShardCount, long TextsDone, long Tokens, bool Complete, FeatureSketchSettings Settings);

/// <summary>A token with a value (a logit effect).</summary>
/// <param name="Token">The token as text.</param>
/// <param name="Id">Token id.</param>
/// <param name="Value">The value.</param>
public sealed record TokenValue(string Token, long Id, float Value);

/// <summary>What the features of one dictionary layer write, independent of any text.</summary>
/// <param name="TopLogits">Per feature, the tokens whose logits its output direction raises most (W_dec · W_U).</param>
/// <param name="BottomLogits">Per feature, the tokens it lowers most.</param>
/// <param name="DecoderNorms">For a CLT: per feature, its decoder norm into each model layer.</param>
/// <param name="Similar">Per feature, the features whose output directions are closest (see <see cref="FeatureBuild.Similar"/>).</param>
public sealed record FeatureEffects(TokenValue[][] TopLogits, TokenValue[][] BottomLogits, float[][]? DecoderNorms, SimilarFeature[][]? Similar = null);

/// <summary>A feature whose output direction is close to another's.</summary>
/// <param name="Layer">Its model layer.</param>
/// <param name="Feature">Its index.</param>
/// <param name="Cosine">Cosine similarity of the two features' output directions (a CLT feature's: the sum of its decoders).</param>
public sealed record SimilarFeature(int Layer, int Feature, double Cosine);

/// <summary>One bin of a feature's activation histogram.</summary>
/// <param name="Low">Lower edge.</param>
/// <param name="High">Upper edge (∞ for the last, open bin).</param>
/// <param name="Count">Activations in it.</param>
public sealed record HistogramBin(double Low, double High, long Count);

/// <summary>An example as shown: tokens of the window as text, the activation on each, and which one is the firing token.</summary>
/// <param name="Text">Text index in the corpus.</param>
/// <param name="Position">Position of the firing token.</param>
/// <param name="Activation">Activation there.</param>
/// <param name="Tokens">Window tokens.</param>
/// <param name="Acts">The feature's activation on each.</param>
/// <param name="MaxIndex">Index of the firing token in the window.</param>
public sealed record ShownExample(long Text, int Position, float Activation, string[] Tokens, float[] Acts, int MaxIndex);

/// <summary>Sampled examples from one activation interval.</summary>
/// <param name="Low">Lower edge of the interval.</param>
/// <param name="High">Upper edge.</param>
/// <param name="Count">Firings in the interval over the whole corpus.</param>
/// <param name="Examples">A uniform sample of them.</param>
/// <param name="Name">The group's name where the source names it (published features: their <c>quantile_name</c>).</param>
public sealed record ExampleInterval(double Low, double High, long Count, ShownExample[] Examples, string? Name = null);

/// <summary>Summary of one feature.</summary>
/// <param name="LayerIndex">Dictionary layer index.</param>
/// <param name="Layer">Model layer.</param>
/// <param name="Feature">Feature index.</param>
/// <param name="Label">The label shown: the user's, else the automatic one.</param>
/// <param name="AutoLabel">The automatic label.</param>
/// <param name="UserLabel">The user's label, if any.</param>
/// <param name="Explanation">An LLM explanation, if any.</param>
/// <param name="Count">Tokens it fired on.</param>
/// <param name="Tokens">Tokens read.</param>
/// <param name="Frequency">Count / tokens.</param>
/// <param name="Max">Largest activation.</param>
/// <param name="Mean">Mean activation when firing.</param>
public sealed record FeatureHit(int LayerIndex, int Layer, int Feature, string Label, string AutoLabel, string? UserLabel, string? Explanation,
    long Count, long Tokens, double Frequency, float Max, double Mean);

/// <summary>Everything a feature page shows.</summary>
/// <param name="Summary">Counts and labels.</param>
/// <param name="DictionaryKind">sae, transcoder, skip-transcoder or clt (<see cref="Dictionaries.DictionaryNames.Kinds"/>; older stores say "transcoders" for a transcoder set).</param>
/// <param name="Histogram">Activation histogram (quarter-octave bins that hold any).</param>
/// <param name="TopLogits">Tokens it promotes.</param>
/// <param name="BottomLogits">Tokens it suppresses.</param>
/// <param name="DecoderNorms">For a CLT: decoder norm per model layer.</param>
/// <param name="Top">Top-activating examples.</param>
/// <param name="Intervals">Sampled examples per activation interval, highest first.</param>
/// <param name="Similar">The features (of any layer) whose output directions are closest, closest first (empty for stores built before they were kept).</param>
/// <param name="HistogramScale">How the histogram's bins are laid out (<see cref="FeatureHistograms"/>).</param>
public sealed record FeatureDashboard(FeatureHit Summary, string DictionaryKind, HistogramBin[] Histogram, TokenValue[] TopLogits, TokenValue[] BottomLogits,
    float[]? DecoderNorms, ShownExample[] Top, ExampleInterval[] Intervals, SimilarFeature[]? Similar = null, string HistogramScale = FeatureHistograms.QuarterOctave);

/// <summary>The histogram layouts a dashboard can hold.</summary>
public static class FeatureHistograms
{
    /// <summary>Our stores: quarter-octave bins (log scale) that hold any firing.</summary>
    public const string QuarterOctave = "quarter-octave";

    /// <summary>Published features: equal-width bins from the smallest to the largest activation.</summary>
    public const string EqualWidth = "equal-width";
}
