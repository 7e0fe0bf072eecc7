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
public sealed record AttentionPatternsResult(string[] Tokens, int Layers, int HeadsPerLayer, HeadPattern[] Heads);

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
        foreach (int l in layers ?? Array.Empty<int>()) if (l < 0 || l >= cfg.NLayers) throw new MechanistException($"layer {l} is outside the model's 0..{cfg.NLayers - 1}");
        foreach (int h in heads ?? Array.Empty<int>()) if (h < 0 || h >= cfg.NHeads) throw new MechanistException($"head {h} is outside the model's 0..{cfg.NHeads - 1}");
        var wantedLayers = (layers ?? Enumerable.Range(0, cfg.NLayers).ToArray()).Distinct().Order().ToArray();
        var wantedHeads = (heads ?? Enumerable.Range(0, cfg.NHeads).ToArray()).Distinct().Order().ToArray();
        var names = wantedLayers.Select(l => model.HookPoints.Name(HookKind.Pattern, l)).ToHashSet();
        using var scope = NewDisposeScope();
        var (_, cache) = model.RunWithCache(tokens, names.Contains);
        using var _c = cache;
        var result = new List<HeadPattern>();
        foreach (int l in wantedLayers)
        {
            var p = cache[HookKind.Pattern, l][0].to(ScalarType.Float32).cpu(); // [head, q, k]
            int n = (int)p.shape[1];
            var data = p.data<float>().ToArray();
            foreach (int h in wantedHeads)
                result.Add(new HeadPattern(l, h, Enumerable.Range(0, n).Select(q => data.AsSpan(h * n * n + q * n, n).ToArray().Select(v => MathF.Round(v, 4)).ToArray()).ToArray()));
        }
        return new AttentionPatternsResult(TokenText.Of(model, tokens[0].cpu().data<long>().ToArray()), cfg.NLayers, cfg.NHeads, result.ToArray());
    }
}
