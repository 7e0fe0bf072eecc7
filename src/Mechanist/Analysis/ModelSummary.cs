using Mechanist.Hooks;
using Mechanist.Models;

namespace Mechanist.Analysis;

/// <summary>A hook point as listed by <c>mechanist hooks</c> and the workbench.</summary>
/// <param name="Name">TransformerLens name.</param>
/// <param name="Shape">Shape for a [batch, pos] input.</param>
public sealed record HookPointInfo(string Name, string Shape);

/// <summary>What a model is: its shape and its hook points.</summary>
/// <param name="Name">Display name.</param>
/// <param name="Architecture">Architecture (model_type).</param>
/// <param name="Layers">Blocks.</param>
/// <param name="DModel">Residual width.</param>
/// <param name="Heads">Query heads.</param>
/// <param name="KvHeads">Key/value heads.</param>
/// <param name="DHead">Head width.</param>
/// <param name="DMlp">MLP width (0 for attention-only models).</param>
/// <param name="Vocab">Vocabulary size.</param>
/// <param name="Context">Context length.</param>
/// <param name="Parameters">Parameter count.</param>
/// <param name="Hooks">Hook points in forward order.</param>
public sealed record ModelSummary(string Name, string Architecture, int Layers, int DModel, int Heads, int KvHeads, int DHead, int DMlp,
    int Vocab, int Context, long Parameters, HookPointInfo[] Hooks)
{
    /// <summary>The summary of a model; <paramref name="attnResult"/> includes the per-head attn.hook_result points.</summary>
    public static ModelSummary Of(HookedTransformer m, string? name = null, bool attnResult = false)
    {
        var c = m.Config;
        return new ModelSummary(name ?? m.Name, c.Architecture, c.NLayers, c.DModel, c.NHeads, c.NKvHeads, c.DHead, c.AttnOnly ? 0 : c.DMlp,
            c.VocabSize, c.NCtx, m.Weights.ParameterCount, m.HookPoints.Firing(attnResult).Select(p => new HookPointInfo(p.Name, p.Shape)).ToArray());
    }
}
