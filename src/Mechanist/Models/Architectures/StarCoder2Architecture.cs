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
        long d = cfg.DModel, m = cfg.DMlp;
        var w = LlamaLayout.Load(r, cfg, b => new BlockWeights
        {
            Ln1W = r.Take(b + "input_layernorm.weight", d), Ln1B = r.Take(b + "input_layernorm.bias", d),
            Ln2W = r.Take(b + "post_attention_layernorm.weight", d), Ln2B = r.Take(b + "post_attention_layernorm.bias", d),
            WIn = r.Take(b + "mlp.c_fc.weight", m, d), BIn = cfg.MlpBias ? r.Take(b + "mlp.c_fc.bias", m) : null,
            WOut = r.Take(b + "mlp.c_proj.weight", d, m), BOut = cfg.MlpBias ? r.Take(b + "mlp.c_proj.bias", d) : null,
        }.WithAttention(r, cfg, b + "self_attn."));
        w.LnFinalB = r.Take("model.norm.bias", d);
        return w;
    }
}
