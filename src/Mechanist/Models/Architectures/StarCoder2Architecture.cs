using Mechanist.IO;

namespace Mechanist.Models.Architectures;

/// <summary>StarCoder2: LayerNorm with bias, biases on every attention and MLP linear, a plain (non-gated) GELU-tanh MLP, GQA, full RoPE.</summary>
public sealed class StarCoder2Architecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "starcoder2" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        var cfg = LlamaLayout.ReadConfig(c, "starcoder2", tiedDefault: true, NormKind.LayerNorm);
        bool bias = c.Bool("use_bias", true);
        return cfg with
        {
            NormEps = c.Double("norm_epsilon", 1e-5), Activation = c.String("hidden_act") ?? "gelu_pytorch_tanh", GatedMlp = false,
            QkvBias = bias, OutBias = bias, MlpBias = bias,
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg)
    {
        long d = cfg.DModel, q = cfg.NHeads * cfg.DHead, kv = cfg.NKvHeads * cfg.DHead, m = cfg.DMlp;
        var w = LlamaLayout.Load(r, cfg, b => new BlockWeights
        {
            Ln1W = r.Take(b + "input_layernorm.weight", d), Ln1B = r.Take(b + "input_layernorm.bias", d),
            Ln2W = r.Take(b + "post_attention_layernorm.weight", d), Ln2B = r.Take(b + "post_attention_layernorm.bias", d),
            Wq = r.Take(b + "self_attn.q_proj.weight", q, d), Wk = r.Take(b + "self_attn.k_proj.weight", kv, d),
            Wv = r.Take(b + "self_attn.v_proj.weight", kv, d), Wo = r.Take(b + "self_attn.o_proj.weight", d, q),
            Bq = cfg.QkvBias ? r.Take(b + "self_attn.q_proj.bias", q) : null, Bk = cfg.QkvBias ? r.Take(b + "self_attn.k_proj.bias", kv) : null,
            Bv = cfg.QkvBias ? r.Take(b + "self_attn.v_proj.bias", kv) : null, Bo = cfg.OutBias ? r.Take(b + "self_attn.o_proj.bias", d) : null,
            WIn = r.Take(b + "mlp.c_fc.weight", m, d), BIn = cfg.MlpBias ? r.Take(b + "mlp.c_fc.bias", m) : null,
            WOut = r.Take(b + "mlp.c_proj.weight", d, m), BOut = cfg.MlpBias ? r.Take(b + "mlp.c_proj.bias", d) : null,
        });
        w.LnFinalB = r.Take("model.norm.bias", d);
        return w;
    }
}
