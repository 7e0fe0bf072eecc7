using TorchSharp;
using static TorchSharp.torch;

namespace Mechanist.Models;

/// <summary>
/// The weights of one block, in nn.Linear orientation ([out, in]). Optional tensors are null when the
/// architecture lacks them.
/// </summary>
public sealed class BlockWeights
{
    /// <summary>Attention-input norm weight / bias.</summary>
    public Tensor? Ln1W, Ln1B;
    /// <summary>MLP-input norm weight / bias.</summary>
    public Tensor? Ln2W, Ln2B;
    /// <summary>Gemma-2 norms after attention and after the MLP.</summary>
    public Tensor? PostAttnNormW, PostMlpNormW;
    /// <summary>Qwen3 per-head query / key RMSNorm weights [d_head].</summary>
    public Tensor? QNormW, KNormW;
    /// <summary>Query [n_heads·d_head, d_model], key and value [n_kv·d_head, d_model], output [d_model, n_heads·d_head].</summary>
    public Tensor Wq = null!, Wk = null!, Wv = null!, Wo = null!;
    /// <summary>Attention biases.</summary>
    public Tensor? Bq, Bk, Bv, Bo;
    /// <summary>MLP input (gate when gated) [d_mlp, d_model], up [d_mlp, d_model] when gated, output [d_model, d_mlp].</summary>
    public Tensor WIn = null!, WOut = null!; // null in attention-only blocks
    /// <summary>Gated MLP's linear ("up") projection.</summary>
    public Tensor? WUp;
    /// <summary>MLP biases.</summary>
    public Tensor? BIn, BUp, BOut;
    /// <summary>MoE router [experts, d_model].</summary>
    public Tensor? Router;
    /// <summary>MoE experts stacked: gate and up [experts, d_expert, d_model], down [experts, d_model, d_expert].</summary>
    public Tensor? ExpertGate, ExpertUp, ExpertDown;
    /// <summary>Qwen2-MoE's shared-expert gate [1, d_model].</summary>
    public Tensor? SharedExpertGate;

    /// <summary>A copy with every tensor passed through <paramref name="map"/> (e.g. widened to the compute dtype).</summary>
    public BlockWeights Map(Func<Tensor, Tensor> map)
    {
        Tensor? M(Tensor? t) => t is null ? null : map(t);
        return new BlockWeights
        {
            Ln1W = M(Ln1W), Ln1B = M(Ln1B), Ln2W = M(Ln2W), Ln2B = M(Ln2B), PostAttnNormW = M(PostAttnNormW), PostMlpNormW = M(PostMlpNormW),
            QNormW = M(QNormW), KNormW = M(KNormW), Wq = M(Wq)!, Wk = M(Wk)!, Wv = M(Wv)!, Wo = M(Wo)!, Bq = M(Bq), Bk = M(Bk), Bv = M(Bv), Bo = M(Bo),
            WIn = M(WIn)!, WOut = M(WOut)!, WUp = M(WUp), BIn = M(BIn), BUp = M(BUp), BOut = M(BOut), Router = M(Router),
            ExpertGate = M(ExpertGate), ExpertUp = M(ExpertUp), ExpertDown = M(ExpertDown), SharedExpertGate = M(SharedExpertGate),
        };
    }

    /// <summary>Every tensor with a TransformerLens-like name.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> Named()
    {
        var all = new (string, Tensor?)[]
        {
            ("ln1.w", Ln1W), ("ln1.b", Ln1B), ("ln2.w", Ln2W), ("ln2.b", Ln2B), ("ln1_post.w", PostAttnNormW), ("ln2_post.w", PostMlpNormW),
            ("attn.q_norm.w", QNormW), ("attn.k_norm.w", KNormW), ("attn.W_Q", Wq), ("attn.W_K", Wk), ("attn.W_V", Wv), ("attn.W_O", Wo),
            ("attn.b_Q", Bq), ("attn.b_K", Bk), ("attn.b_V", Bv), ("attn.b_O", Bo), ("mlp.W_in", WIn!), ("mlp.W_gate_up", WUp),
            ("mlp.W_out", WOut!), ("mlp.b_in", BIn), ("mlp.b_up", BUp), ("mlp.b_out", BOut),
            ("mlp.W_router", Router), ("mlp.experts.W_gate", ExpertGate), ("mlp.experts.W_up", ExpertUp), ("mlp.experts.W_down", ExpertDown),
            ("mlp.W_shared_gate", SharedExpertGate),
        };
        foreach (var (n, t) in all) if (t is not null) yield return (n, t!);
    }
}

/// <summary>All weights of a <see cref="HookedTransformer"/>.</summary>
public sealed class TransformerWeights : IDisposable
{
    /// <summary>Token embedding [vocab, d_model].</summary>
    public Tensor WE = null!;
    /// <summary>Learned position embedding [n_ctx, d_model], when the model has one.</summary>
    public Tensor? WPos;
    /// <summary>Per-block weights.</summary>
    public BlockWeights[] Blocks = Array.Empty<BlockWeights>();
    /// <summary>Final norm weight / bias.</summary>
    public Tensor? LnFinalW, LnFinalB;
    /// <summary>BERT's masked-LM head transform (dense before the head's LayerNorm).</summary>
    public Tensor? HeadDenseW, HeadDenseB;
    /// <summary>BLOOM's LayerNorm after the token embedding.</summary>
    public Tensor? EmbedLnW, EmbedLnB;
    /// <summary>Unembedding [vocab, d_model] (the same tensor as <see cref="WE"/> when tied).</summary>
    public Tensor WU = null!;
    /// <summary>Unembedding bias.</summary>
    public Tensor? BU;

    /// <summary>Every tensor with a TransformerLens-like name (tied tensors once).</summary>
    public IEnumerable<(string Name, Tensor Tensor)> Named()
    {
        yield return ("embed.W_E", WE);
        if (WPos is not null) yield return ("pos_embed.W_pos", WPos);
        for (int i = 0; i < Blocks.Length; i++)
            foreach (var (n, t) in Blocks[i].Named()) yield return ($"blocks.{i}.{n}", t);
        if (LnFinalW is not null) yield return ("ln_final.w", LnFinalW);
        if (LnFinalB is not null) yield return ("ln_final.b", LnFinalB);
        if (EmbedLnW is not null) yield return ("embed_ln.w", EmbedLnW);
        if (HeadDenseW is not null) yield return ("unembed.head_dense.W", HeadDenseW);
        if (HeadDenseB is not null) yield return ("unembed.head_dense.b", HeadDenseB);
        if (EmbedLnB is not null) yield return ("embed_ln.b", EmbedLnB);
        if (!ReferenceEquals(WU, WE)) yield return ("unembed.W_U", WU);
        if (BU is not null) yield return ("unembed.b_U", BU);
    }

    /// <summary>Number of parameters (tied tensors counted once).</summary>
    public long ParameterCount => Named().Sum(t => t.Tensor.numel());

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var (_, t) in Named().ToList()) t.Dispose();
    }
}
