using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>Which experts one layer sent each token to.</summary>
/// <param name="Layer">Layer.</param>
/// <param name="Experts">[position][k] chosen experts, best first.</param>
/// <param name="Weights">[position][k] their weights in the mixture.</param>
/// <param name="Load">Tokens routed to each expert (over all k slots).</param>
public sealed record LayerRouting(int Layer, int[][] Experts, float[][] Weights, int[] Load);

/// <summary>The routing of a prompt through every mixture-of-experts layer.</summary>
/// <param name="Tokens">Prompt tokens.</param>
/// <param name="ExpertCount">Experts per layer.</param>
/// <param name="TopK">Experts per token.</param>
/// <param name="Layers">Per layer.</param>
public sealed record ExpertRouting(string[] Tokens, int ExpertCount, int TopK, LayerRouting[] Layers);

/// <summary>Reads the routers' choices from one run (the hook points <c>mlp.hook_expert_indices</c> and <c>hook_expert_weights</c>).</summary>
public static class ExpertRoutingAnalysis
{
    /// <summary>The routing of <paramref name="tokens"/> [1, pos]; a clear error for a model without experts.</summary>
    public static ExpertRouting Run(HookedTransformer model, Tensor tokens)
    {
        var moe = model.Config.Moe ?? throw new MechanistException($"{model.Name} ({model.Config.Architecture}) has no mixture-of-experts layers");
        if (tokens.shape[0] != 1) throw new MechanistException("expert routing takes one prompt");
        using var scope = NewDisposeScope();
        var reg = model.HookPoints;
        var (_, cache) = model.RunWithCache(tokens, n => reg.Find(n)?.Kind is HookKind.ExpertIndices or HookKind.ExpertWeights);
        using (cache)
        {
            var layers = Enumerable.Range(0, model.Config.NLayers).Select(l =>
            {
                var idx = cache[HookKind.ExpertIndices, l][0].cpu().data<long>().ToArray();
                var w = cache[HookKind.ExpertWeights, l][0].to(ScalarType.Float32).cpu().data<float>().ToArray();
                int p = idx.Length / moe.TopK;
                var load = new int[moe.Experts];
                foreach (var e in idx) load[e]++;
                return new LayerRouting(l, Enumerable.Range(0, p).Select(i => idx[(i * moe.TopK)..((i + 1) * moe.TopK)].Select(x => (int)x).ToArray()).ToArray(),
                    Enumerable.Range(0, p).Select(i => w[(i * moe.TopK)..((i + 1) * moe.TopK)]).ToArray(), load);
            }).ToArray();
            return new ExpertRouting(TokenText.Of(model, tokens[0].cpu().data<long>().ToArray()), moe.Experts, moe.TopK, layers);
        }
    }
}
