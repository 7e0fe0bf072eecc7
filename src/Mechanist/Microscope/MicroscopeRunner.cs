using Mechanist.Tensors;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Microscope;

/// <summary>What to compute.</summary>
/// <param name="Contextuality">Contextuality settings, or null to skip it.</param>
/// <param name="RemovalLengths">Text lengths for token removal (empty: skip).</param>
/// <param name="CustomRemoval">An extra word list to remove.</param>
/// <param name="PerTextViews">How many texts get per-token views.</param>
/// <param name="MaxPointsForGeometry">Rows subsampled for TwoNN and anisotropy.</param>
/// <param name="IncludeBos">Keep the BOS rows in every statistic (the reference LLM-Microscope notebook stacks them into its linearity fit); by default they are dropped, since BOS states are outliers.</param>
public sealed record MicroscopeOptions(ContextualityOptions? Contextuality = null, int[]? RemovalLengths = null,
    IReadOnlyCollection<string>? CustomRemoval = null, int PerTextViews = 3, int MaxPointsForGeometry = 3000, bool IncludeBos = false);

/// <summary>Runs every LLM-Microscope measurement and returns one report.</summary>
public static class MicroscopeRunner
{
    /// <summary>Progress of a stage.</summary>
    /// <param name="Stage">Stage name.</param>
    /// <param name="Done">Units done.</param>
    /// <param name="Total">Units in all.</param>
    public readonly record struct Progress(string Stage, int Done, int Total);

    /// <summary>Computes the report for a corpus of texts.</summary>
    public static MicroscopeReport Run(HookedTransformer model, IReadOnlyList<string> texts, MicroscopeOptions options, IProgress<Progress>? progress = null)
    {
        using var states = CorpusStates.Collect(model, texts, new Relay(progress, "hidden states"), options.IncludeBos);
        var (report, fits) = Run(model, states, options, progress);
        foreach (var f in fits) f.Dispose();
        return report;
    }

    /// <summary>
    /// Computes the report on collected states and also returns the fitted layer-to-layer maps
    /// (owned by the caller), so that new prompts can be read against them.
    /// </summary>
    public static (MicroscopeReport Report, Geometry.LinearFit[] Fits) Run(HookedTransformer model, CorpusStates states, MicroscopeOptions options, IProgress<Progress>? progress = null)
    {
        int depths = states.Layers.Length;
        var linearity = new double[depths - 1]; var centred = new double[depths - 1];
        var fits = new Geometry.LinearFit[depths - 1];
        for (int l = 0; l + 1 < depths; l++)
        {
            // One pass over the rows gives both fits: the update's moments follow from the same ones.
            using var moments = Geometry.CentredMoments.Of(states.Layers[l], states.Layers[l + 1]);
            fits[l] = Geometry.FitLinear(moments);
            linearity[l] = fits[l].Score;
            using var ofUpdate = moments.OfUpdate();
            using var centredFit = Geometry.FitLinear(ofUpdate);
            centred[l] = centredFit.Score;
            progress?.Report(new Progress("linearity", l + 1, depths - 1));
        }

        var id = new double[depths]; var aniso = new double[depths]; var anisoPower = new double[depths];
        using (var sample = SampleRows(states.RowCount, options.MaxPointsForGeometry))
            for (int l = 0; l < depths; l++)
            {
                using var points = states.Layers[l].index_select(0, sample);
                id[l] = Geometry.TwoNN(points);
                (aniso[l], anisoPower[l]) = Geometry.Anisotropy(points);
                progress?.Report(new Progress("intrinsic dimension and anisotropy", l + 1, depths));
            }

        var (lensLoss, lensTop, lensPerText) = Lens(model, states);
        progress?.Report(new Progress("logit lens", 1, 1));

        ContextualityResult? ctx = null;
        if (options.Contextuality is { } co)
            ctx = Contextuality.Run(model, states, co, new Progress<(int Step, int Steps, double Loss)>(p => progress?.Report(new Progress("contextuality", p.Step, p.Steps))));

        RemovalCurve[]? removal = null;
        if (options.RemovalLengths is { Length: > 0 } lengths)
        {
            removal = TokenRemoval.Run(model, states, lengths, options.CustomRemoval);
            progress?.Report(new Progress("token removal", 1, 1));
        }

        var views = Enumerable.Range(0, Math.Min(options.PerTextViews, states.Texts.Count))
            .Concat(ctx?.PerText.Keys.Take(options.PerTextViews) ?? Enumerable.Empty<int>()).Distinct()
            .Select(t => View(states, fits, lensPerText[t], t, ctx)).ToArray();
        return (new MicroscopeReport(model.Name, states.Texts.Count, states.RowCount, states.Labels, linearity, centred, id, aniso, anisoPower,
            lensLoss, lensTop, views, ctx, removal), fits);
    }

    static Tensor SampleRows(int rows, int max)
    {
        if (rows <= max) return SafeOps.Arange(rows);
        using var generator = new Generator(0);
        using var perm = randperm(rows, generator: generator);
        using var head = perm[..max];
        var (values, indices) = head.sort();
        indices.Dispose();
        return values;
    }

    static TextView View(CorpusStates states, Geometry.LinearFit[] fits, double[][] lens, int t, ContextualityResult? ctx)
    {
        var text = states.Texts[t];
        var (start, count, offset) = states.Rows[t];
        var nonlinearity = fits.Select((fit, l) =>
        {
            // The slices are held until the errors are read: a temporary passed straight in is unreachable during the native calls
            // on it, and a collection there frees it mid-call (this crashed under forced collections once the states were float32,
            // where the widening is a copy).
            using var x = states.Layers[l][start..(start + count)];
            using var y = states.Layers[l + 1][start..(start + count)];
            var errors = fit.RowErrors(x, y, states.RowCount);
            return Enumerable.Repeat(0.0, offset).Concat(errors).ToArray();
        }).ToArray();
        return new TextView(t, text.Tokens, text.Classes, nonlinearity, lens, ctx?.PerText.GetValueOrDefault(t));
    }

    /// <summary>Logit-lens loss per depth (mean), its top-1 variant, and per text the [depth][token] losses.</summary>
    public static (double[] Loss, double[] TopLoss, double[][][] PerText) Lens(HookedTransformer model, CorpusStates states)
    {
        var t = LensTotals(model, states);
        return (t.LossSum.Select(s => t.LossCount == 0 ? double.NaN : s / t.LossCount).ToArray(),
            t.TopSum.Select(s => t.TopCount == 0 ? double.NaN : s / t.TopCount).ToArray(), t.PerText);
    }

    /// <summary>
    /// The logit lens's sums over tokens (so that shards of a corpus add up): per depth Σ −log p(next token) over the rows that have a
    /// next token, and Σ −log p(own top-1 token) over every row; the counts; and per text the [depth][token] losses.
    /// </summary>
    public static (double[] LossSum, long LossCount, double[] TopSum, long TopCount, double[][][] PerText) LensTotals(HookedTransformer model, CorpusStates states)
    {
        int depths = states.Layers.Length;
        var loss = new double[depths]; var top = new double[depths];
        long n = 0, m = 0;
        var perText = states.Texts.Select(t => new double[depths][]).ToArray();
        for (int l = 0; l < depths; l++)
        {
            double sum = 0, topSum = 0; n = 0; m = 0;
            for (int t = 0; t < states.Texts.Count; t++)
            {
                using var scope = NewDisposeScope();
                var (start, count, offset) = states.Rows[t];
                var ids = states.Texts[t].Ids;
                var logProbs = model.UnembedResidual(states.Layers[l][start..(start + count)].unsqueeze(0))[0].to(ScalarType.Float32).log_softmax(-1);
                var row = Enumerable.Repeat(double.NaN, ids.Length).ToArray();
                topSum -= logProbs.max(-1).values.sum().item<float>(); m += count;
                // Rows j predict token offset + j + 1; the last token has no next token.
                int predicted = Math.Min(count, ids.Length - offset - 1);
                if (predicted > 0)
                {
                    var next = tensor(ids[(offset + 1)..(offset + 1 + predicted)], device: model.Device).unsqueeze(1);
                    var values = (-logProbs[..predicted].gather(1, next).squeeze(1)).to(ScalarType.Float64).cpu().data<double>().ToArray();
                    for (int j = 0; j < predicted; j++) { row[offset + j] = values[j]; sum += values[j]; }
                    n += predicted;
                }
                perText[t][l] = row;
            }
            loss[l] = sum; top[l] = topSum;
        }
        return (loss, n, top, m, perText);
    }

    sealed class Relay(IProgress<Progress>? inner, string stage) : IProgress<(int Done, int Total)>
    {
        public void Report((int Done, int Total) value) => inner?.Report(new Progress(stage, value.Done, value.Total));
    }
}
