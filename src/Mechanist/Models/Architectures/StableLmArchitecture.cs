using Mechanist.IO;

namespace Mechanist.Models.Architectures;

/// <summary>StableLM (2): the Llama layout with LayerNorm (weight and bias), optional q/k/v biases and partial RoPE.</summary>
public sealed class StableLmArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "stablelm" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        if (c.Bool("qk_layernorm", false)) throw c.Bad("qk_layernorm", "is true; StableLM's per-head q/k LayerNorms are not supported yet");
        if (c.Bool("use_parallel_residual", false)) throw c.Bad("use_parallel_residual", "is true; StableLM's parallel residual is not supported yet");
        var cfg = LlamaLayout.ReadConfig(c, "stablelm", tiedDefault: false, NormKind.LayerNorm);
        bool qkvBias = c.Bool("use_qkv_bias", false);
        return cfg with { NormEps = c.Double("layer_norm_eps", 1e-5), QkvBias = qkvBias, OutBias = false, SlidingWindow = null };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg)
    {
        long d = cfg.DModel;
        var w = LlamaLayout.Load(r, cfg, b =>
        {
            var block = LlamaLayout.StandardBlock(r, cfg, b);
            block.Ln1B = r.Take(b + "input_layernorm.bias", d);
            block.Ln2B = r.Take(b + "post_attention_layernorm.bias", d);
            return block;
        });
        w.LnFinalB = r.Take("model.norm.bias", d);
        return w;
    }
}
