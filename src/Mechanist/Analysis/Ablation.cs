using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>How an activation is knocked out.</summary>
public enum AblationKind
{
    /// <summary>Set to zero.</summary>
    Zero,
    /// <summary>Replaced by its mean over a dataset (per position when lengths match, else over positions too).</summary>
    Mean,
    /// <summary>Replaced by its value on another (resampled) input.</summary>
    Resample,
}

/// <summary>Hooks that ablate one head's output (hook_z) or a whole hook point.</summary>
public static class Ablation
{
    /// <summary>A hook ablating head <paramref name="head"/> of <paramref name="layer"/> (or the whole activation when head is null).</summary>
    /// <param name="model">The model.</param>
    /// <param name="layer">Layer.</param>
    /// <param name="head">Head, or null.</param>
    /// <param name="kind">Zero, mean or resample.</param>
    /// <param name="reference">For mean: dataset tokens [n, pos]; for resample: the other input [1, pos].</param>
    public static ForwardHookSpec Head(HookedTransformer model, int layer, int? head, AblationKind kind, Tensor? reference = null)
    {
        string name = model.HookPoints.Name(HookKind.Z, layer);
        Tensor? replacement = null;
        if (kind != AblationKind.Zero)
        {
            if (reference is null) throw new MechanistException($"{kind} ablation needs reference tokens");
            var (_, cache) = model.RunWithCache(reference, n => n == name);
            using (cache)
            {
                var z = cache[name];
                replacement = (kind == AblationKind.Mean ? z.mean(new long[] { 0 }, keepdim: true) : z[..1]).clone().DetachFromDisposeScope();
            }
        }
        return new ForwardHookSpec(name, (x, _) =>
        {
            var value = replacement is null ? zeros_like(x) : FitPositions(replacement, x);
            if (head is not { } h) return value.expand(x.shape).to(x.dtype);
            var result = x.clone();
            result[.., .., h] = value.expand(x.shape)[.., .., h];
            return result;
        });
    }

    static Tensor FitPositions(Tensor source, Tensor x) =>
        source.shape[1] == x.shape[1] ? source : source.mean(new long[] { 1 }, keepdim: true).expand(-1, x.shape[1], -1, -1);

    /// <summary>The metric after ablating each head in turn, next to the unablated metric.</summary>
    public static AblationGrid HeadGrid(HookedTransformer model, Tensor tokens, PatchMetric metric, AblationKind kind, Tensor? reference = null)
    {
        var cfg = model.Config;
        double baseline;
        using (NewDisposeScope()) baseline = metric.Compute(model.Run(tokens)).item<float>();
        var grid = new double[cfg.NLayers][];
        for (int l = 0; l < cfg.NLayers; l++)
        {
            grid[l] = new double[cfg.NHeads];
            for (int h = 0; h < cfg.NHeads; h++)
            {
                using var scope = NewDisposeScope();
                grid[l][h] = metric.Compute(model.RunWithHooks(tokens, new[] { Head(model, l, h, kind, reference) })).item<float>();
            }
        }
        return new AblationGrid(kind, metric.Describe, baseline, grid);
    }
}

/// <summary>A metric with each head ablated in turn.</summary>
/// <param name="Kind">How heads were ablated.</param>
/// <param name="Metric">The metric's description.</param>
/// <param name="Baseline">The metric without ablation.</param>
/// <param name="Values">[layer][head] the metric with that head ablated.</param>
public sealed record AblationGrid(AblationKind Kind, string Metric, double Baseline, double[][] Values);
