using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries.Evaluation;

/// <summary>How much of a child's firing its parent's latent loses (feature absorption) for one (parent, child) pair of the hierarchy.</summary>
/// <param name="Parent">The parent's true feature.</param>
/// <param name="Child">The child's true feature.</param>
/// <param name="ParentLatent">The learned latent matched to the parent (Hungarian matching of codes), −1 when none is.</param>
/// <param name="ChildSamples">Samples where the child fires (its parent with it).</param>
/// <param name="ChildMissRate">Share of those where the parent's latent is silent.</param>
/// <param name="ParentOnlyMissRate">Share of the samples where the parent fires with none of its children where the parent's latent is silent.</param>
/// <param name="Absorption">max(0, child miss rate − parent-only miss rate): the parent's firing lost to the child beyond its ordinary misses.</param>
public sealed record AbsorptionPair(int Parent, int Child, int ParentLatent, long ChildSamples, double ChildMissRate, double ParentOnlyMissRate, double Absorption);

/// <summary>A dictionary scored against the features that made its data.</summary>
/// <param name="TrueFeatures">True features.</param>
/// <param name="Latents">Learned latents.</param>
/// <param name="Samples">Samples scored.</param>
/// <param name="Mcc">Mean correlation of each true feature's code with its latent's under the one-to-one matching that maximises the total (Hungarian); unmatched true features count 0.</param>
/// <param name="Precision">Share of live latents whose decoder direction is within the cosine threshold of some true direction.</param>
/// <param name="Recall">Share of true features whose direction is within the cosine threshold of some latent's decoder direction.</param>
/// <param name="F1">2PR / (P + R).</param>
/// <param name="MeanMaxCosine">Mean over true features of the best cosine with any decoder direction.</param>
/// <param name="CosineThreshold">The threshold of precision and recall.</param>
/// <param name="ExplainedVariance">1 − Σ‖x − x̂‖² / Σ‖x − x̄‖².</param>
/// <param name="L0">Mean live latents per sample.</param>
/// <param name="TrueL0">Mean true features per sample.</param>
/// <param name="DeadFraction">Share of latents that never fire on these samples.</param>
/// <param name="Shrinkage">Mean ‖x̂‖ / ‖x‖ over the samples with any true feature (1: no shrinkage).</param>
/// <param name="Absorption">Per hierarchy pair.</param>
/// <param name="MeanAbsorption">Mean absorption over the pairs (0 without a hierarchy).</param>
public sealed record GroundTruthMetrics(int TrueFeatures, int Latents, long Samples, double Mcc, double Precision, double Recall, double F1, double MeanMaxCosine,
    double CosineThreshold, double ExplainedVariance, double L0, double TrueL0, double DeadFraction, double Shrinkage, AbsorptionPair[] Absorption, double MeanAbsorption);

/// <summary>
/// Scores a dictionary against ground truth (SynthSAEBench's measures): feature recovery by decoder cosine, code recovery by the
/// matched correlation coefficient, reconstruction, sparsity, shrinkage and absorption.
/// </summary>
public static class GroundTruthEvaluation
{
    /// <summary>Encodes the ground truth's activations with a single-layer dictionary and scores it.</summary>
    public static GroundTruthMetrics Evaluate(ICrossLayerDictionary dictionary, SyntheticData truth, double cosine = 0.9)
    {
        if (dictionary.NLayers != 1) throw new MechanistException($"ground-truth evaluation scores one layer's dictionary (an SAE); this one has {dictionary.NLayers} layers");
        if (dictionary.DModel != truth.Config.DModel) throw new MechanistException($"the dictionary reads width {dictionary.DModel}; the ground truth's activations have {truth.Config.DModel}");
        using var scope = NewDisposeScope();
        var (acts, recon) = DictionaryEvaluation.Reconstruct(dictionary, truth.Activations.unsqueeze(1));
        var decoder = dictionary.DecoderRows(0, 0, SafeOps.Arange(dictionary.DDict));
        return Score(truth, acts.squeeze(1), decoder, recon.squeeze(1), cosine);
    }

    /// <summary>Scores learned <paramref name="codes"/> [N, F'] with decoder rows <paramref name="decoder"/> [F', d] and reconstructions [N, d] against <paramref name="truth"/>.</summary>
    public static GroundTruthMetrics Score(SyntheticData truth, Tensor codes, Tensor decoder, Tensor reconstruction, double cosine = 0.9)
    {
        using var scope = NewDisposeScope();
        var x = truth.Activations.to(ScalarType.Float64);
        var trueCodes = truth.Codes.to(ScalarType.Float64);
        var learned = codes.to(ScalarType.Float64);
        long n = x.shape[0];
        if (codes.shape[0] != n || reconstruction.shape[0] != n) throw new MechanistException($"{codes.shape[0]} codes and {reconstruction.shape[0]} reconstructions for {n} samples");
        int trueCount = (int)trueCodes.shape[1], latents = (int)learned.shape[1];

        // Codes: the Pearson correlation of every (true, learned) pair of columns; the matching maximises its sum.
        var correlation = Standardize(trueCodes).t().matmul(Standardize(learned)).Div(n);              // [F, F']
        var corr = correlation.contiguous().data<double>().ToArray();
        var match = Hungarian.MaximumMatching(corr, trueCount, latents);
        double mcc = Enumerable.Range(0, trueCount).Sum(t => match[t] >= 0 ? corr[(long)t * latents + match[t]] : 0) / trueCount;

        // Directions: cosines of the true directions with the decoder rows.
        var unitTrue = Unit(truth.Directions.to(ScalarType.Float64));
        var unitLearned = Unit(decoder.to(ScalarType.Float64));
        var cosines = unitTrue.matmul(unitLearned.t());                                                 // [F, F']
        var fired = learned.Gt(0).any(0);                                                               // [F']
        var bestForTrue = cosines.max(1).values;
        var bestForLearned = cosines.max(0).values;
        double recall = bestForTrue.Ge(cosine).to(ScalarType.Float64).mean().item<double>();
        long live = fired.sum().item<long>();
        double precision = live == 0 ? 0 : bestForLearned.Ge(cosine).logical_and(fired).sum().item<long>() / (double)live;
        double f1 = precision + recall == 0 ? 0 : 2 * precision * recall / (precision + recall);

        var xhat = reconstruction.to(ScalarType.Float64);
        double residual = xhat.sub(x).Square().sum().item<double>();
        double spread = x.sub(x.mean(new long[] { 0 }, keepdim: true)).Square().sum().item<double>();
        var norms = x.norm(1);
        var any = trueCodes.Gt(0).any(1).logical_and(norms.Gt(0));
        double shrinkage = any.sum().item<long>() == 0 ? 1 : xhat.norm(1).div(norms.ClampMin(1e-30)).masked_select(any).mean().item<double>();

        var pairs = truth.Hierarchy.Select(h => Absorb(h.Parent, h.Child, match[h.Parent], trueCodes, learned, truth.Config)).ToArray();
        return new GroundTruthMetrics(trueCount, latents, n, mcc, precision, recall, f1, bestForTrue.mean().item<double>(), cosine,
            spread == 0 ? 0 : 1 - residual / spread, learned.Gt(0).sum(1).to(ScalarType.Float64).mean().item<double>(),
            trueCodes.Gt(0).sum(1).to(ScalarType.Float64).mean().item<double>(), 1 - live / (double)latents, shrinkage,
            pairs, pairs.Length == 0 ? 0 : pairs.Average(p => p.Absorption));
    }

    static AbsorptionPair Absorb(int parent, int child, int latent, Tensor trueCodes, Tensor learned, SyntheticConfig config)
    {
        using var scope = NewDisposeScope();
        var childFires = trueCodes.select(1, child).Gt(0);
        var siblings = trueCodes.narrow(1, config.Parents + parent * config.ChildrenPerParent, config.ChildrenPerParent).Gt(0).any(1);
        var parentOnly = trueCodes.select(1, parent).Gt(0).logical_and(siblings.logical_not());
        long childSamples = childFires.sum().item<long>(), parentSamples = parentOnly.sum().item<long>();
        if (latent < 0) return new AbsorptionPair(parent, child, -1, childSamples, 1, 1, 0);
        var silent = learned.select(1, latent).Le(0);
        double childMiss = childSamples == 0 ? 0 : silent.logical_and(childFires).sum().item<long>() / (double)childSamples;
        double parentMiss = parentSamples == 0 ? 0 : silent.logical_and(parentOnly).sum().item<long>() / (double)parentSamples;
        return new AbsorptionPair(parent, child, latent, childSamples, childMiss, parentMiss, Math.Max(0, childMiss - parentMiss));
    }

    /// <summary>Columns centred and scaled to unit variance; a constant column stays zero (it correlates with nothing).</summary>
    static Tensor Standardize(Tensor m)
    {
        var centred = m.sub(m.mean(new long[] { 0 }, keepdim: true));
        var std = centred.Square().mean(new long[] { 0 }, keepdim: true).sqrt();
        return centred.div(std.ClampMin(1e-12));
    }

    static Tensor Unit(Tensor rows) => rows.div(rows.norm(1, keepdim: true).ClampMin(1e-30));
}

/// <summary>The Hungarian algorithm (Kuhn–Munkres with potentials, O(n² m)) for one-to-one matchings.</summary>
public static class Hungarian
{
    /// <summary>
    /// For a row-major [rows, cols] score matrix, the matching of rows to distinct columns with the largest total score:
    /// match[r] = its column, or −1 when there are more rows than columns and r is left out.
    /// </summary>
    public static int[] MaximumMatching(double[] scores, int rows, int cols)
    {
        if (scores.Length != (long)rows * cols) throw new ArgumentException("scores must hold rows × cols values");
        bool transpose = rows > cols;
        int n = transpose ? cols : rows, m = transpose ? rows : cols;
        // Minimise the negated scores over an n × m matrix with n ≤ m (1-based potentials as in the textbook form).
        double Cost(int i, int j) => transpose ? -scores[(long)j * cols + i] : -scores[(long)i * cols + j];
        var u = new double[n + 1]; var v = new double[m + 1]; var p = new int[m + 1]; var way = new int[m + 1];
        var minv = new double[m + 1]; var used = new bool[m + 1];
        for (int i = 1; i <= n; i++)
        {
            p[0] = i; int j0 = 0;
            Array.Fill(minv, double.PositiveInfinity); Array.Fill(used, false);
            do
            {
                used[j0] = true;
                int i0 = p[j0], j1 = 0; double delta = double.PositiveInfinity;
                for (int j = 1; j <= m; j++)
                {
                    if (used[j]) continue;
                    double cur = Cost(i0 - 1, j - 1) - u[i0] - v[j];
                    if (cur < minv[j]) { minv[j] = cur; way[j] = j0; }
                    if (minv[j] < delta) { delta = minv[j]; j1 = j; }
                }
                for (int j = 0; j <= m; j++)
                    if (used[j]) { u[p[j]] += delta; v[j] -= delta; }
                    else minv[j] -= delta;
                j0 = j1;
            } while (p[j0] != 0);
            do { int j1 = way[j0]; p[j0] = p[j1]; j0 = j1; } while (j0 != 0);
        }
        var match = Enumerable.Repeat(-1, rows).ToArray();
        for (int j = 1; j <= m; j++)
        {
            if (p[j] == 0) continue;
            if (transpose) match[j - 1] = p[j] - 1; else match[p[j] - 1] = j - 1;
        }
        return match;
    }
}
