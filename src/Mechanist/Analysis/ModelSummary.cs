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
/// <param name="Kind">"decoder" (causal LM), "encoder" (bidirectional, e.g. BERT) or "encoder-decoder" (T5).</param>
/// <param name="EncoderLayers">Encoder blocks of an encoder-decoder (<paramref name="Layers"/> are then its decoder blocks); 0 otherwise.</param>
/// <param name="Experts">Experts per MLP of a mixture-of-experts model; 0 for a dense one.</param>
public sealed record ModelSummary(string Name, string Architecture, int Layers, int DModel, int Heads, int KvHeads, int DHead, int DMlp,
    int Vocab, int Context, long Parameters, HookPointInfo[] Hooks, string Kind = "decoder", int EncoderLayers = 0, int Experts = 0)
{
    /// <summary>The summary of an encoder-decoder (context 0: relative positions set no limit).</summary>
    public static ModelSummary Of(HookedEncoderDecoder m, string? name = null)
    {
        var c = m.Config;
        return new ModelSummary(name ?? m.Name, "t5", c.DecoderLayers, c.DModel, c.NHeads, c.NHeads, c.DKv, c.DFf, c.VocabSize, 0, m.ParameterCount,
            m.HookNames.Select(h => new HookPointInfo(h, m.HookShape(h))).ToArray(), "encoder-decoder", c.EncoderLayers);
    }

    /// <summary>The summary of a model; <paramref name="attnResult"/> includes the per-head attn.hook_result points.</summary>
    public static ModelSummary Of(HookedTransformer m, string? name = null, bool attnResult = false)
    {
        var c = m.Config;
        return new ModelSummary(name ?? m.Name, c.Architecture, c.NLayers, c.DModel, c.NHeads, c.NKvHeads, c.DHead, c.AttnOnly ? 0 : c.DMlp,
            c.VocabSize, c.NCtx, m.Weights.ParameterCount, m.HookPoints.Firing(attnResult).Select(p => new HookPointInfo(p.Name, p.Shape.ToString())).ToArray(),
            c.Causal ? "decoder" : "encoder", Experts: c.Moe?.Experts ?? 0);
    }
}
