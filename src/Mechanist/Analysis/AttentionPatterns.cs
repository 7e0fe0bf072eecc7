using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>One head's attention pattern on a prompt.</summary>
/// <param name="Layer">Layer.</param>
/// <param name="Head">Head.</param>
/// <param name="Pattern">[query][key] attention weights, rounded to 4 decimals.</param>
public sealed record HeadPattern(int Layer, int Head, float[][] Pattern);

/// <summary>Attention patterns of a prompt.</summary>
/// <param name="Tokens">Prompt tokens.</param>
/// <param name="Layers">Number of layers of the model.</param>
/// <param name="HeadsPerLayer">Heads per layer of the model.</param>
/// <param name="Heads">The selected heads' patterns.</param>
/// <param name="Causal">Whether queries see only earlier keys (false for an encoder such as BERT).</param>
public sealed record AttentionPatternsResult(string[] Tokens, int Layers, int HeadsPerLayer, HeadPattern[] Heads, bool Causal = true);

/// <summary>Attention patterns of selected heads, from one run.</summary>
public static class AttentionPatterns
{
    /// <summary>
    /// Runs one prompt [1, pos] and returns the patterns of the heads selected by <paramref name="layers"/> and
    /// <paramref name="heads"/> (every layer / head when null).
    /// </summary>
    public static AttentionPatternsResult Compute(HookedTransformer model, Tensor tokens, IReadOnlyCollection<int>? layers = null, IReadOnlyCollection<int>? heads = null)
    {
        if (tokens.shape[0] != 1) throw new MechanistException("attention patterns take one prompt");
        var cfg = model.Config;
        var (wantedLayers, wantedHeads) = Select(cfg.NLayers, cfg.NHeads, layers, heads);
        var names = wantedLayers.Select(l => model.HookPoints.Name(HookKind.Pattern, l)).ToHashSet();
        using var scope = NewDisposeScope();
        var (_, cache) = model.RunWithCache(tokens, names.Contains);
        using var _c = cache;
        var result = new List<HeadPattern>();
        foreach (int l in wantedLayers) result.AddRange(Of(cache[HookKind.Pattern, l][0], l, wantedHeads));
        return new AttentionPatternsResult(TokenText.Of(model, tokens[0].cpu().data<long>().ToArray()), cfg.NLayers, cfg.NHeads, result.ToArray(), cfg.Causal);
    }

    /// <summary>The layers and heads asked for (every one when null), checked against the model's, sorted and distinct.</summary>
    internal static (int[] Layers, int[] Heads) Select(int nLayers, int nHeads, IReadOnlyCollection<int>? layers, IReadOnlyCollection<int>? heads)
    {
        foreach (int l in layers ?? Array.Empty<int>()) if (l < 0 || l >= nLayers) throw new MechanistException($"layer {l} is outside the model's 0..{nLayers - 1}");
        foreach (int h in heads ?? Array.Empty<int>()) if (h < 0 || h >= nHeads) throw new MechanistException($"head {h} is outside the model's 0..{nHeads - 1}");
        return ((layers ?? Enumerable.Range(0, nLayers).ToArray()).Distinct().Order().ToArray(), (heads ?? Enumerable.Range(0, nHeads).ToArray()).Distinct().Order().ToArray());
    }

    /// <summary>The chosen heads of one layer's pattern [head, queries, keys], rounded to 4 decimals.</summary>
    internal static IEnumerable<HeadPattern> Of(Tensor pattern, int layer, int[] heads)
    {
        using var p = pattern.to(ScalarType.Float32).cpu();
        int q = (int)p.shape[1], k = (int)p.shape[2];
        var data = p.data<float>().ToArray();
        return heads.Select(h => new HeadPattern(layer, h, Enumerable.Range(0, q).Select(row => data.AsSpan(h * q * k + row * k, k).ToArray().Select(v => MathF.Round(v, 4)).ToArray()).ToArray())).ToList();
    }
}
