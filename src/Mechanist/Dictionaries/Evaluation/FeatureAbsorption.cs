using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries.Evaluation;

/// <summary>The thresholds of the absorption suite (SAEBench's defaults).</summary>
/// <param name="F1Jump">A k-sparse probe's F1 must rise by more than this for one more latent to count among the main latents (a split).</param>
/// <param name="MaxK">Most main latents.</param>
/// <param name="MinProbeF1">A category is scored only where the probe on the raw activations reaches this held-out F1.</param>
/// <param name="FullCosine">Full absorption: the top projecting latent's cosine with the probe must reach this.</param>
/// <param name="FractionCosine">Absorption fraction: a latent counts as absorbing only at this cosine with the probe or more.</param>
/// <param name="ProjectionShare">Absorbing latents must carry at least this share of the reading's projection on the probe.</param>
/// <param name="MaxAbsorbers">At most this many latents share an absorption.</param>
public sealed record AbsorptionOptions(double F1Jump = 0.03, int MaxK = 10, double MinProbeF1 = 0.6, double FullCosine = 0.025, double FractionCosine = 0.1,
    double ProjectionShare = 0.4, int MaxAbsorbers = 3);

/// <summary>A latent that took a category over on some held-out readings.</summary>
/// <param name="Latent">The latent.</param>
/// <param name="Readings">Readings it fully absorbed.</param>
/// <param name="Words">The words read there.</param>
public sealed record AbsorbingLatent(int Latent, int Readings, string[] Words);

/// <summary>Absorption of one category at one layer.</summary>
/// <param name="Category">The category (the analogue of SAEBench's first letter).</param>
/// <param name="Layer">Dictionary layer.</param>
/// <param name="TrainWords">Words whose readings fitted the probes.</param>
/// <param name="TestWords">Held-out words (no reading of them was fitted on).</param>
/// <param name="ProbeF1">Held-out F1 of the probe on the raw activations.</param>
/// <param name="MainLatents">The latents that carry the category (the k-sparse probe's, grown while F1 jumps).</param>
/// <param name="SparseF1">Held-out F1 of the k-sparse probe for k = 1, 2, ….</param>
/// <param name="ProbeTruePositives">Held-out readings of the category that the raw probe calls: the ones scored.</param>
/// <param name="MeanAbsorptionFraction">Mean share of the probe projection taken by other latents instead of the main ones (SAEBench's absorption fraction).</param>
/// <param name="FullAbsorptionRate">Share of scored readings where the main latents are silent and one other latent carries the category.</param>
/// <param name="Absorbers">The latents behind full absorptions, most first.</param>
/// <param name="Skipped">Why the category was not scored, or null.</param>
public sealed record AbsorptionCategoryResult(string Category, int Layer, int TrainWords, int TestWords, double ProbeF1, int[] MainLatents, double[] SparseF1,
    int ProbeTruePositives, double MeanAbsorptionFraction, double FullAbsorptionRate, AbsorbingLatent[] Absorbers, string? Skipped);

/// <summary>Means over the scored categories at one layer.</summary>
/// <param name="Layer">Dictionary layer.</param>
/// <param name="Categories">Categories scored.</param>
/// <param name="MeanAbsorptionFraction">Mean absorption fraction.</param>
/// <param name="MeanFullAbsorption">Mean full-absorption rate.</param>
/// <param name="MeanMainLatents">Mean number of main latents per category (more than one: the category is split).</param>
public sealed record AbsorptionLayer(int Layer, int Categories, double MeanAbsorptionFraction, double MeanFullAbsorption, double MeanMainLatents);

/// <summary>The absorption suite's report.</summary>
/// <param name="Suite">"absorption".</param>
/// <param name="Model">The model read.</param>
/// <param name="Seed">Seed of the readings and the word split.</param>
/// <param name="Options">Thresholds.</param>
/// <param name="Categories">Per category and layer.</param>
/// <param name="Layers">Means per layer.</param>
public sealed record AbsorptionReport(string Suite, string Model, int Seed, AbsorptionOptions Options, AbsorptionCategoryResult[] Categories, AbsorptionLayer[] Layers);

/// <summary>
/// Feature absorption as SAEBench measures it, on word categories in place of first letters: a probe on the activations the
/// dictionary reconstructs finds the category's direction; a k-sparse probe finds the category's main latents; on held-out words
/// that the probe recognises, absorption is the share of the probe projection that other latents carry instead (a latent's
/// projection is its activation times its decoder row's component along the probe).
/// </summary>
public static class FeatureAbsorption
{
    const double Silent = 1e-8;

    /// <summary>
    /// Scores one category. <paramref name="x"/> [n, d] are the readings in the space the dictionary writes, <paramref name="latents"/>
    /// [n, f] its activations there, <paramref name="decoder"/> [f, d] its decoder rows; <paramref name="categories"/> and
    /// <paramref name="words"/> label each reading; <paramref name="testWords"/> are held out.
    /// </summary>
    public static AbsorptionCategoryResult Category(string category, int layer, Tensor x, Tensor latents, Tensor decoder, string[] categories, string[] words,
        IReadOnlySet<string> testWords, AbsorptionOptions o)
    {
        using var scope = NewDisposeScope();
        int n = words.Length;
        var labels = categories.Select(c => c == category).ToArray();
        int[] train = Enumerable.Range(0, n).Where(i => !testWords.Contains(words[i])).ToArray(), test = Enumerable.Range(0, n).Where(i => testWords.Contains(words[i])).ToArray();
        int trainWords = words.Where((w, i) => labels[i] && !testWords.Contains(w)).Distinct().Count(), heldWords = words.Where((w, i) => labels[i] && testWords.Contains(w)).Distinct().Count();
        AbsorptionCategoryResult Skip(string why, double f1 = double.NaN) =>
            new(category, layer, trainWords, heldWords, f1, Array.Empty<int>(), Array.Empty<double>(), 0, double.NaN, double.NaN, Array.Empty<AbsorbingLatent>(), why);
        if (trainWords == 0 || heldWords == 0) return Skip("needs words of the category both to fit on and to hold out");
        var trainIdx = tensor(train.Select(i => (long)i).ToArray()); var testIdx = tensor(test.Select(i => (long)i).ToArray());
        bool[] trainY = train.Select(i => labels[i]).ToArray(), testY = test.Select(i => labels[i]).ToArray();

        var probe = LogisticProbe.Fit(x.index_select(0, trainIdx), trainY);
        var testX = x.index_select(0, testIdx);
        var scores = probe.Scores(testX);
        var (_, probeF1) = ProbeMetrics.Of(scores.Select(s => s > 0).ToArray(), testY);
        if (probeF1 < o.MinProbeF1) return Skip($"the raw probe's held-out F1 {probeF1:F2} is below {o.MinProbeF1}", probeF1);

        var trainLatents = latents.index_select(0, trainIdx); var testLatents = latents.index_select(0, testIdx);
        var ranked = SparseProbing.RankLatents(trainLatents, trainY, absolute: false, o.MaxK);
        var sparseF1 = Enumerable.Range(1, ranked.Length).Select(k =>
        {
            var columns = tensor(ranked.Take(k).Select(c => (long)c).ToArray());
            var trainCols = trainLatents.index_select(1, columns);
            if (trainY.All(v => v) || !trainY.Any(v => v)) return 0.0;
            return LogisticProbe.Fit(trainCols, trainY).Score(testLatents.index_select(1, columns), testY).F1;
        }).ToArray();
        int main = 1;
        while (main < sparseF1.Length && sparseF1[main] - sparseF1[main - 1] > o.F1Jump) main++;
        var mainLatents = ranked.Take(main).ToArray();

        // Projections on the unit probe direction: of each reading, and of each latent's contribution.
        var direction = tensor(probe.Weights, ScalarType.Float64);
        direction = direction.Div(direction.norm().item<double>());
        var dec = decoder.to(ScalarType.Float64);
        var along = dec.matmul(direction);                                                      // [f]: decoder row · p̂
        var cosine = along.div(dec.norm(1).ClampMin(1e-12));
        var readingProjection = testX.to(ScalarType.Float64).matmul(direction).data<double>().ToArray();
        var testActs = testLatents.to(ScalarType.Float64);
        var latentProjection = testActs.mul(along);                                             // [m, f]
        var mainIndex = tensor(mainLatents.Select(c => (long)c).ToArray());
        var notMain = Enumerable.Repeat(true, (int)latents.shape[1]).ToArray();
        foreach (var c in mainLatents) notMain[c] = false;
        var absorberMask = tensor(notMain).logical_and(cosine.Ge(o.FractionCosine));

        double fractionSum = 0; int fullCount = 0, scored = 0;
        var absorbers = new Dictionary<int, List<string>>();
        for (int r = 0; r < test.Length; r++)
        {
            if (!testY[r] || scores[r] <= 0) continue;
            scored++;
            using var row = NewDisposeScope();
            double total = readingProjection[r];
            var proj = latentProjection[r];
            double mainProj = proj.index_select(0, mainIndex).sum().item<double>();
            var candidates = proj.masked_select(absorberMask.logical_and(proj.Gt(0)));
            double absorbed = candidates.numel() == 0 ? 0 : candidates.topk((int)Math.Min(o.MaxAbsorbers, candidates.numel())).values.sum().item<double>();
            double fraction;
            if (total <= 0 || mainProj >= total || absorbed / total < o.ProjectionShare) fraction = 0;
            else if (mainProj <= 0) fraction = 1;
            else { double a = Math.Min(absorbed, total - mainProj); fraction = Math.Clamp(a / (a + mainProj), 0, 1); }
            fractionSum += fraction;

            bool mainSilent = mainLatents.All(c => testActs[r, c].item<double>() < Silent);
            var top = proj.argmax().item<long>();
            bool full = mainSilent && total > 0 && cosine[top].item<double>() >= o.FullCosine && proj[top].item<double>() / total >= o.ProjectionShare;
            if (full)
            {
                fullCount++;
                if (!absorbers.TryGetValue((int)top, out var list)) absorbers[(int)top] = list = new List<string>();
                list.Add(words[test[r]]);
            }
        }
        var absorbing = absorbers.OrderByDescending(a => a.Value.Count).Select(a => new AbsorbingLatent(a.Key, a.Value.Count, a.Value.Distinct().ToArray())).ToArray();
        return new AbsorptionCategoryResult(category, layer, trainWords, heldWords, probeF1, mainLatents, sparseF1, scored,
            scored == 0 ? double.NaN : fractionSum / scored, scored == 0 ? double.NaN : (double)fullCount / scored, absorbing, scored == 0 ? "the raw probe recognised no held-out reading" : null);
    }

    /// <summary>A seeded split of each category's words, holding out <paramref name="testShare"/> of them (at least one where a category has two).</summary>
    public static HashSet<string> HeldOutWords(IEnumerable<(string Category, string Word)> words, double testShare, int seed)
    {
        var rng = new Random(seed);
        var held = new HashSet<string>();
        foreach (var group in words.Distinct().GroupBy(w => w.Category).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var members = group.Select(w => w.Word).OrderBy(w => w, StringComparer.Ordinal).OrderBy(_ => rng.Next()).ToArray();
            int count = members.Length < 2 ? 0 : Math.Max(1, (int)Math.Round(members.Length * testShare));
            foreach (var w in members.Take(count)) held.Add(w);
        }
        return held;
    }

    /// <summary>Means over the scored categories of each layer.</summary>
    public static AbsorptionLayer[] Summarise(IEnumerable<AbsorptionCategoryResult> results) =>
        results.GroupBy(r => r.Layer).OrderBy(g => g.Key).Select(g =>
        {
            var scored = g.Where(r => r.Skipped is null).ToArray();
            return new AbsorptionLayer(g.Key, scored.Length, scored.Length == 0 ? double.NaN : scored.Average(r => r.MeanAbsorptionFraction),
                scored.Length == 0 ? double.NaN : scored.Average(r => r.FullAbsorptionRate), scored.Length == 0 ? double.NaN : scored.Average(r => r.MainLatents.Length));
        }).ToArray();
}
