using Mechanist.Hooks;
using static TorchSharp.torch;

namespace Mechanist.Models;

/// <summary>Options of one forward pass.</summary>
public sealed record RunOptions
{
    /// <summary>[batch, pos] (or [batch, past + pos] with a KV cache) of 1 for real tokens and 0 for padding.</summary>
    public Tensor? AttentionMask { get; init; }

    /// <summary>[batch, pos] positions; by default derived from the attention mask (left padding) or 0..pos-1.</summary>
    public Tensor? PositionIds { get; init; }

    /// <summary>Hooks for this run only (never seen by concurrent runs).</summary>
    public IReadOnlyList<ForwardHookSpec> Hooks { get; init; } = Array.Empty<ForwardHookSpec>();

    /// <summary>Backward hooks for this run (they fire when the caller runs backward on the output).</summary>
    public IReadOnlyList<BackwardHookSpec> BackwardHooks { get; init; } = Array.Empty<BackwardHookSpec>();

    /// <summary>
    /// The input is token embeddings [batch, pos, d_model] instead of token ids (HF's inputs_embeds): they
    /// pass through hook_embed, and positional embeddings are added as usual.
    /// </summary>
    public bool InputIsEmbeddings { get; init; }

    /// <summary>
    /// Begin at this block: the input is then the residual stream [batch, pos, d_model] entering it
    /// (TransformerLens's start_at_layer).
    /// </summary>
    public int StartAtLayer { get; init; }

    /// <summary>Stop before this block and return the residual stream entering it (TransformerLens's stop_at_layer).</summary>
    public int? StopAtLayer { get; init; }

    /// <summary>
    /// Stop at the unembedding's input (after the final norm and <c>unembed.hook_in</c>) and return it instead of the logits: for runs
    /// that only read or differentiate the residual stream, where the vocabulary-wide product would be most of the cost.
    /// </summary>
    public bool SkipUnembedding { get; init; }

    /// <summary>A KV cache to read and extend (generation).</summary>
    public KvCache? KvCache { get; init; }

    /// <summary>Record gradients (autograd on); off by default for speed and memory.</summary>
    public bool EnableGrad { get; init; }

    /// <summary>Attention patterns are detached: no gradient flows through them (attribution with frozen attention).</summary>
    public bool FreezeAttention { get; init; }

    /// <summary>Norm scales are detached: no gradient flows through them (TransformerLens / circuit-tracer style linearisation).</summary>
    public bool FreezeNormScales { get; init; }

    /// <summary>
    /// Use libtorch's fused attention when nothing reads the scores or the pattern (on by default; about 40%
    /// faster at 1,024 tokens). Its results differ from the unfused path by float rounding (~1e-6): turn it
    /// off for bit-identical comparisons of runs with and without cached patterns.
    /// </summary>
    public bool FusedAttention { get; init; } = true;

    /// <summary>Compute per-head outputs at <c>attn.hook_result</c> (costs memory; TransformerLens's use_attn_result).</summary>
    public bool UseAttnResult { get; init; }

    /// <summary>Modules spliced into this run (sparse dictionaries at hook points, transcoders in place of MLPs).</summary>
    public IReadOnlyList<ISplice> Splices { get; init; } = Array.Empty<ISplice>();
}
