using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Models;

/// <summary>Randomly initialised models of real sizes, for benchmarks (no checkpoint needed).</summary>
public static class RandomModels
{
    /// <summary>GPT-2 small's configuration: 12 layers, d_model 768, 12 heads, vocab 50,257, context 1,024 (124M parameters).</summary>
    public static TransformerConfig Gpt2SmallConfig() => new()
    {
        Architecture = "gpt2", DModel = 768, NLayers = 12, NHeads = 12, NKvHeads = 12, DHead = 64, DMlp = 3072,
        VocabSize = 50257, NCtx = 1024, Norm = NormKind.LayerNorm, NormEps = 1e-5, Activation = "gelu_new",
        Positional = PositionKind.Learned, AttnScale = 1.0 / 8, TiedEmbeddings = true, QkvBias = true, OutBias = true, MlpBias = true,
    };

    /// <summary>A Llama-style model of GPT-2-small size: 12 layers, d_model 768, 12 query / 4 key-value heads, SwiGLU 2048, RMSNorm, rotary, vocab 32,000 (≈110M parameters).</summary>
    public static TransformerConfig LlamaSmallConfig() => new()
    {
        Architecture = "llama", DModel = 768, NLayers = 12, NHeads = 12, NKvHeads = 4, DHead = 64, DMlp = 2048,
        VocabSize = 32000, NCtx = 2048, Norm = NormKind.RmsNorm, NormEps = 1e-6, Activation = "silu", GatedMlp = true,
        Positional = PositionKind.Rotary, RotaryDim = 64, RopeTheta = 10000, AttnScale = 1.0 / 8, TiedEmbeddings = false,
    };

    /// <summary>
    /// A Mixtral-shaped mixture of experts scaled to fit a workstation: Mixtral-8x7B's layout (8 SwiGLU experts, top-2 renormalised,
    /// GQA 4:1, RMSNorm, rotary θ = 10⁶, vocab 32,000) at d_model 1,024, 8 layers, 16 / 4 heads, expert width 3,584 (≈ 0.77B parameters,
    /// 0.25B active per token).
    /// </summary>
    public static TransformerConfig MixtralShapedConfig() => new()
    {
        Architecture = "mixtral", DModel = 1024, NLayers = 8, NHeads = 16, NKvHeads = 4, DHead = 64, DMlp = 3584,
        VocabSize = 32000, NCtx = 4096, Norm = NormKind.RmsNorm, NormEps = 1e-5, Activation = "silu", GatedMlp = true,
        Positional = PositionKind.Rotary, RotaryDim = 64, RopeTheta = 1e6, AttnScale = 1.0 / 8, TiedEmbeddings = false,
        Moe = new MoeConfig(Experts: 8, TopK: 2, NormalizeTopK: true, DExpert: 3584),
    };

    /// <summary>A model with weights ~ N(0, 0.02²), norms at 1 and biases at 0.</summary>
    public static HookedTransformer Create(TransformerConfig cfg, long seed = 0, ScalarType dtype = ScalarType.Float32)
    {
        manual_seed(seed);
        using var scope = NewDisposeScope();
        Tensor R(params long[] shape) => randn(shape).Mul(0.02f).to(dtype).DetachFromDisposeScope();
        Tensor Z(params long[] shape) => zeros(shape, dtype).DetachFromDisposeScope();
        Tensor O(params long[] shape) => ones(shape, dtype).DetachFromDisposeScope();
        long d = cfg.DModel, q = cfg.NHeads * cfg.DHead, kv = cfg.NKvHeads * cfg.DHead, m = cfg.DMlp;
        bool ln = cfg.Norm == NormKind.LayerNorm;
        bool dense = !cfg.AttnOnly && cfg.Moe is not { SharedExpert: false };
        var w = new TransformerWeights
        {
            WE = R(cfg.VocabSize, d),
            WPos = cfg.Positional == PositionKind.Learned ? R(cfg.NCtx, d) : null,
            LnFinalW = O(d), LnFinalB = ln ? Z(d) : null,
            Blocks = Enumerable.Range(0, cfg.NLayers).Select(_ => new BlockWeights
            {
                Ln1W = O(d), Ln1B = ln ? Z(d) : null, Ln2W = cfg.AttnOnly ? null : O(d), Ln2B = ln && !cfg.AttnOnly ? Z(d) : null,
                Wq = R(q, d), Wk = R(kv, d), Wv = R(kv, d), Wo = R(d, q),
                Bq = cfg.QkvBias ? Z(q) : null, Bk = cfg.QkvBias ? Z(kv) : null, Bv = cfg.QkvBias ? Z(kv) : null, Bo = cfg.OutBias ? Z(d) : null,
                // A dense MLP, unless there is none (attention-only) or the experts replace it (MoE without a shared expert).
                WIn = dense ? R(m, d) : null!, WUp = cfg.GatedMlp && dense ? R(m, d) : null, WOut = dense ? R(d, m) : null!,
                BIn = cfg.MlpBias && dense ? Z(m) : null, BUp = cfg.MlpBias && cfg.GatedMlp && dense ? Z(m) : null,
                BOut = cfg.MlpBias && dense ? Z(d) : null,
            }).ToArray(),
        };
        if (cfg.Moe is { } moe)
            foreach (var b in w.Blocks)
            {
                if (moe.SharedExpert) b.SharedExpertGate = R(1, d);
                b.Router = R(moe.Experts, d);
                b.ExpertGate = R(moe.Experts, moe.DExpert, d); b.ExpertUp = R(moe.Experts, moe.DExpert, d); b.ExpertDown = R(moe.Experts, d, moe.DExpert);
            }
        w.WU = cfg.TiedEmbeddings ? w.WE : R(cfg.VocabSize, d);
        return new HookedTransformer(cfg, w, null, $"random-{cfg.Architecture}");
    }
}
