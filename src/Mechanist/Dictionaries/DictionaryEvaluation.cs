using Mechanist.Tensors;
using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries;

/// <summary>Reconstruction quality of one layer of a dictionary on held-out activations.</summary>
/// <param name="Layer">Layer (0 for a single-layer dictionary).</param>
/// <param name="Mse">Mean squared error per token (summed over the d dimensions).</param>
/// <param name="Fvu">Fraction of variance unexplained: MSE / the targets' variance.</param>
/// <param name="L0">Active features per token.</param>
/// <param name="DeadFraction">Features that never fired on these tokens.</param>
/// <param name="DenseFraction">Features that fired on more than 10% of the tokens.</param>
public sealed record DictionaryLayerMetrics(int Layer, double Mse, double Fvu, double L0, double DeadFraction, double DenseFraction);

/// <summary>The model with the dictionary spliced in (error terms dropped), against the clean model and zero-ablation.</summary>
/// <param name="Tokens">Tokens scored.</param>
/// <param name="CleanLoss">Next-token cross-entropy of the model.</param>
/// <param name="SplicedLoss">With the reconstruction in place.</param>
/// <param name="ZeroAblatedLoss">With what the dictionary replaces set to zero.</param>
/// <param name="LossRecovered">(zero − spliced) / (zero − clean): 1 for a perfect reconstruction, 0 for one no better than zero.</param>
/// <param name="Kl">Mean KL(clean ‖ spliced) of the next-token distributions.</param>
/// <param name="TopTokenAgreement">Share of positions whose spliced top-1 token is the model's.</param>
/// <param name="ConfidentShare">Share of positions where the model gives its top-1 token at least half the probability.</param>
/// <param name="ConfidentAgreement">Top-1 agreement on those positions (elsewhere the top tokens are near-ties that any perturbation reorders).</param>
public sealed record SpliceMetrics(long Tokens, double CleanLoss, double SplicedLoss, double ZeroAblatedLoss, double LossRecovered, double Kl, double TopTokenAgreement,
    double ConfidentShare, double ConfidentAgreement);

/// <summary>A dictionary's evaluation.</summary>
/// <param name="Layers">Per-layer reconstruction metrics.</param>
/// <param name="Splice">Downstream metrics, when a model and texts were given.</param>
public sealed record DictionaryEvaluationResult(DictionaryLayerMetrics[] Layers, SpliceMetrics? Splice);

/// <summary>Evaluates dictionaries: reconstruction on activations, and the model's behaviour with them spliced in.</summary>
public static class DictionaryEvaluation
{
    /// <summary>Activations [N, L, f] and reconstructions [N, L, d_out] of raw inputs [N, L, d_in].</summary>
    public static (Tensor Acts, Tensor Recon) Reconstruct(ICrossLayerDictionary d, Tensor x)
    {
        int layers = (int)x.shape[1];
        if (layers != d.NLayers) throw new MechanistException($"the activations have {layers} layers; the dictionary has {d.NLayers}");
        var acts = Enumerable.Range(0, layers).Select(l => d.Encode(l, x.select(1, l))).ToArray();
        var recon = Enumerable.Range(0, layers).Select(j =>
        {
            var r = d.DecoderBias(j).expand(x.shape[0], -1);
            for (int i = 0; i <= j; i++) if (d.WritesTo(i, j)) r = r.Add(d.Decode(i, j, acts[i]));
            return d.Skip(j, x.select(1, j)) is { } s ? r.Add(s) : r;
        }).ToArray();
        return (stack(acts, 1), stack(recon, 1));
    }

    /// <summary>Activations and reconstruction of a single-layer dictionary on [N, 1, d_in].</summary>
    public static (Tensor Acts, Tensor Recon) Reconstruct(ISparseDictionary d, Tensor x)
    {
        var input = x.select(1, 0);
        var acts = d.Encode(input);
        var recon = d.Decode(acts);
        if (d.Skip(input) is { } s) recon = recon.Add(s);
        return (acts.unsqueeze(1), recon.unsqueeze(1));
    }

    /// <summary>Per-layer metrics of transcoders or a CLT on held-out activations (in chunks, so any size fits).</summary>
    public static DictionaryLayerMetrics[] Layers(ICrossLayerDictionary dictionary, ActivationSet data, int chunk = 1024) =>
        Measure(x => Reconstruct(dictionary, x), data, chunk).Metrics;

    /// <summary>Per-layer metrics of a single-layer dictionary on held-out activations [N, 1, d].</summary>
    public static DictionaryLayerMetrics[] Layers(ISparseDictionary dictionary, ActivationSet data, int chunk = 1024) =>
        Measure(x => Reconstruct(dictionary, x), data, chunk).Metrics;

    /// <summary>
    /// Per-layer variance [L] of rows [N, L, d] around <paramref name="mean"/> [L, d] (each row multiplied by <paramref name="scale"/> [1, L, 1]
    /// first, when given): mean over rows of the squared distance, summed over d. A chunk of rows at a time: over all rows at once the
    /// temporaries are three copies of the rows.
    /// </summary>
    internal static Tensor PerLayerVariance(Tensor rows, Tensor mean, Tensor? scale = null)
    {
        const long chunk = 16_384;
        long n = rows.shape[0];
        using var sum = zeros(rows.shape[1], dtype: ScalarType.Float64);
        for (long start = 0; start < n; start += chunk)
        {
            using var scope = NewDisposeScope();
            var part = rows.narrow(0, start, Math.Min(chunk, n - start));
            if (scale is not null) part = part * scale;
            sum.AddInPlace((part - mean).Square().sum(-1).sum(new long[] { 0 }).to(ScalarType.Float64));
        }
        return sum.Div((double)Math.Max(1, n)).to(rows.dtype);
    }

    /// <summary>
    /// One pass over held-out activations: the per-layer metrics, and per layer the summed cosine of each reconstruction with its
    /// target, the summed ‖x̂‖/‖x‖, and how many rows each feature fired on.
    /// </summary>
    internal static (DictionaryLayerMetrics[] Metrics, double[] CosineSum, double[] L2RatioSum, long[][] Fires) Measure(ICrossLayerDictionary dictionary, ActivationSet data,
        int chunk = 1024) => Measure(x => Reconstruct(dictionary, x), data, chunk);

    static (DictionaryLayerMetrics[] Metrics, double[] CosineSum, double[] L2RatioSum, long[][] Fires) Measure(Func<Tensor, (Tensor Acts, Tensor Recon)> reconstruct,
        ActivationSet data, int chunk)
    {
        int layers = (int)data.Inputs.shape[1];
        var sq = new double[layers]; var l0 = new double[layers]; var cos = new double[layers]; var ratio = new double[layers];
        Tensor? fires = null;
        long n = data.Rows;
        using var targetMean = data.Targets.mean(new long[] { 0 });                         // [L, d]
        using var variance = PerLayerVariance(data.Targets, targetMean);                      // [L]
        try
        {
            for (long start = 0; start < n; start += chunk)
            {
                using var scope = NewDisposeScope();
                long len = Math.Min(chunk, n - start);
                var x = data.Inputs.narrow(0, start, len); var y = data.Targets.narrow(0, start, len);
                var (acts, recon) = reconstruct(x);
                var err = (recon - y).Square().sum(-1).sum(new long[] { 0 }).to(ScalarType.Float64).data<double>().ToArray();
                var y64 = y.to(ScalarType.Float64); var r64 = recon.to(ScalarType.Float64);
                var yNorm = y64.norm(-1).ClampMin(1e-12); var rNorm = r64.norm(-1);
                var c = r64.mul(y64).sum(-1).div(yNorm.mul(rNorm.ClampMin(1e-12))).sum(new long[] { 0 }).data<double>().ToArray();   // [L]
                var q = rNorm.div(yNorm).sum(new long[] { 0 }).data<double>().ToArray();
                // Counted from the boolean mask straight into int64 sums: widened copies of the mask were the pass's largest tensors.
                var active = acts.Gt(0);
                var f = active.sum(new long[] { 0 }, type: ScalarType.Int64);                                  // [L, f]
                var count = f.sum(new long[] { 1 }).to(ScalarType.Float64).data<double>().ToArray();
                for (int l = 0; l < layers; l++) { sq[l] += err[l]; l0[l] += count[l]; cos[l] += c[l]; ratio[l] += q[l]; }
                if (fires is null) fires = f.DetachFromDisposeScope(); else fires.AddInPlace(f);
            }
            var v = variance.to(ScalarType.Float64).data<double>().ToArray();
            var dead = fires!.Eq(0).to(ScalarType.Float64).mean(new long[] { 1 }).data<double>().ToArray();
            var dense = fires!.to(ScalarType.Float64).Gt(0.1 * n).to(ScalarType.Float64).mean(new long[] { 1 }).data<double>().ToArray();
            var metrics = Enumerable.Range(0, layers).Select(l => new DictionaryLayerMetrics(l, sq[l] / n, sq[l] / n / v[l], l0[l] / n, dead[l], dense[l])).ToArray();
            return (metrics, cos, ratio, Enumerable.Range(0, layers).Select(l => fires![l].data<long>().ToArray()).ToArray());
        }
        finally { fires?.Dispose(); }
    }

    /// <summary>
    /// Runs <paramref name="texts"/> through the model clean, with <paramref name="splice"/> (reconstruction only), and with
    /// <paramref name="zeroAblated"/> set to zero, and compares the next-token losses and predictions.
    /// </summary>
    public static SpliceMetrics Spliced(HookedTransformer model, IEnumerable<string> texts, ISplice splice, IReadOnlyCollection<string> zeroAblated, long maxTokens = 20_000, int batchTexts = 16)
    {
        var tok = model.Tokenizer ?? throw new MechanistException($"{model.Name} has no tokenizer");
        foreach (var n in zeroAblated) model.HookPoints.Check(n);
        var zero = new ForwardHookSpec(HookFilter.Where(zeroAblated.Contains), (x, _) => zeros_like(x));
        double clean = 0, spliced = 0, ablated = 0, kl = 0; long agree = 0, tokens = 0, positions = 0, confident = 0, confidentAgree = 0;
        foreach (var batch in texts.Chunk(batchTexts))
        {
            if (tokens >= maxTokens) break;
            var enc = batch.Select(t => tok.Encode(t).Take(model.Config.NCtx).Select(i => (long)i).ToArray()).Where(e => e.Length > 1).ToList();
            if (enc.Count == 0) continue;
            int width = enc.Max(e => e.Length);
            using var scope = NewDisposeScope();
            var ids = tensor(enc.SelectMany(e => e.Concat(Enumerable.Repeat(0L, width - e.Length))).ToArray(), new long[] { enc.Count, width }, device: model.Device);
            var mask = tensor(enc.SelectMany(e => Enumerable.Range(0, width).Select(p => p < e.Length ? 1L : 0L)).ToArray(), new long[] { enc.Count, width }, device: model.Device);
            var options = new RunOptions { AttentionMask = mask };
            var lpClean = model.Run(ids, options).to(ScalarType.Float32).log_softmax(-1);
            var lpSpliced = model.Run(ids, options with { Splices = new[] { splice } }).to(ScalarType.Float32).log_softmax(-1);
            var lpZero = model.Run(ids, options with { Hooks = new[] { zero } }).to(ScalarType.Float32).log_softmax(-1);
            var next = ids[.., 1..].unsqueeze(-1);
            var scored = mask[.., 1..].Gt(0).to(ScalarType.Float32);                      // real next tokens
            double Nll(Tensor lp) => -(lp[.., ..^1].gather(-1, next).squeeze(-1) * scored).sum().item<float>();
            clean += Nll(lpClean); spliced += Nll(lpSpliced); ablated += Nll(lpZero);
            tokens += (long)scored.sum().item<float>();
            var real = mask.Gt(0);
            kl += ((lpClean.exp() * (lpClean - lpSpliced)).sum(-1) * real.to(ScalarType.Float32)).sum().item<float>();
            var same = (lpClean.argmax(-1) == lpSpliced.argmax(-1)).logical_and(real);
            var sure = lpClean.max(-1).values.Gt(Math.Log(0.5)).logical_and(real);
            agree += same.sum().item<long>();
            positions += real.sum().item<long>();
            confident += sure.sum().item<long>();
            confidentAgree += same.logical_and(sure).sum().item<long>();
        }
        if (tokens == 0) throw new MechanistException("no texts with at least two tokens to evaluate on");
        double c = clean / tokens, s = spliced / tokens, z = ablated / tokens;
        return new SpliceMetrics(tokens, c, s, z, Math.Abs(z - c) < 1e-12 ? double.NaN : (z - s) / (z - c), kl / positions, (double)agree / positions,
            (double)confident / positions, confident == 0 ? double.NaN : (double)confidentAgree / confident);
    }
}
