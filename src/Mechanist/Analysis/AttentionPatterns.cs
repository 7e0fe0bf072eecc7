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
/// <param name="Thumbnail">When set, patterns longer than this were averaged over blocks to at most this many rows and columns (thumbnails); null: full patterns.</param>
public sealed record AttentionPatternsResult(string[] Tokens, int Layers, int HeadsPerLayer, HeadPattern[] Heads, bool Causal = true, int? Thumbnail = null);

/// <summary>Attention patterns of selected heads, from one run.</summary>
public static class AttentionPatterns
{
    /// <summary>
    /// Runs one prompt [1, pos] and returns the patterns of the heads selected by <paramref name="layers"/> and
    /// <paramref name="heads"/> (every layer / head when null). With <paramref name="thumbnail"/>, each pattern is averaged over
    /// blocks to at most that many rows and columns (PyTorch's adaptive average pooling): a grid of every head of a long prompt stays
    /// small (GPT-2 small on 512 tokens: 144 full patterns are 38M numbers, 144 thumbnails of 48 are 0.3M).
    /// </summary>
    public static AttentionPatternsResult Compute(HookedTransformer model, Tensor tokens, IReadOnlyCollection<int>? layers = null, IReadOnlyCollection<int>? heads = null,
        int? thumbnail = null)
    {
        CheckThumbnail(thumbnail);
        if (tokens.shape[0] != 1) throw new MechanistException("attention patterns take one prompt");
        var cfg = model.Config;
        var (wantedLayers, wantedHeads) = Select(cfg.NLayers, cfg.NHeads, layers, heads);
        var names = wantedLayers.Select(l => model.HookPoints.Name(HookKind.Pattern, l)).ToHashSet();
        using var scope = NewDisposeScope();
        var (_, cache) = model.RunWithCache(tokens, names.Contains);
        using var _c = cache;
        var result = new List<HeadPattern>();
        foreach (int l in wantedLayers) result.AddRange(Of(cache[HookKind.Pattern, l][0], l, wantedHeads, thumbnail));
        return new AttentionPatternsResult(TokenText.Of(model, tokens[0].cpu().data<long>().ToArray()), cfg.NLayers, cfg.NHeads, result.ToArray(), cfg.Causal, thumbnail);
    }

    /// <summary>The layers and heads asked for (every one when null), checked against the model's, sorted and distinct.</summary>
    internal static (int[] Layers, int[] Heads) Select(int nLayers, int nHeads, IReadOnlyCollection<int>? layers, IReadOnlyCollection<int>? heads)
    {
        foreach (int l in layers ?? Array.Empty<int>()) if (l < 0 || l >= nLayers) throw new MechanistException($"layer {l} is outside the model's 0..{nLayers - 1}");
        foreach (int h in heads ?? Array.Empty<int>()) if (h < 0 || h >= nHeads) throw new MechanistException($"head {h} is outside the model's 0..{nHeads - 1}");
        return ((layers ?? Enumerable.Range(0, nLayers).ToArray()).Distinct().Order().ToArray(), (heads ?? Enumerable.Range(0, nHeads).ToArray()).Distinct().Order().ToArray());
    }

    internal static void CheckThumbnail(int? thumbnail)
    {
        if (thumbnail is < 1 or > 4096) throw new MechanistException($"a thumbnail size must be within 1..4096 (got {thumbnail})");
    }

    /// <summary>The chosen heads of one layer's pattern [head, queries, keys], rounded to 4 decimals, block-averaged to at most <paramref name="thumbnail"/> cells a side.</summary>
    internal static IEnumerable<HeadPattern> Of(Tensor pattern, int layer, int[] heads, int? thumbnail = null)
    {
        using var scope = NewDisposeScope();
        var chosen = pattern.to(ScalarType.Float32).index_select(0, tensor(heads.Select(h => (long)h).ToArray(), device: pattern.device));
        if (thumbnail is { } t && (chosen.shape[1] > t || chosen.shape[2] > t))
            chosen = TorchSharp.torch.nn.functional.adaptive_avg_pool2d(chosen, new[] { Math.Min(chosen.shape[1], t), Math.Min(chosen.shape[2], t) });
        var p = chosen.contiguous().cpu();
        int q = (int)p.shape[1], k = (int)p.shape[2];
        var data = p.data<float>().ToArray();
        return heads.Select((h, i) => new HeadPattern(layer, h, Enumerable.Range(0, q).Select(row => data.AsSpan(i * q * k + row * k, k).ToArray().Select(v => MathF.Round(v, 4)).ToArray()).ToArray())).ToList();
    }
}
