using Mechanist.Tensors;
using Mechanist.IO;

namespace Mechanist.Models.Architectures;

/// <summary>
/// Cohere (Command-R): mean-subtracting LayerNorm with a weight and no bias, parallel attention and SwiGLU MLP reading one norm,
/// rotary on interleaved pairs, and logits scaled by logit_scale (folded into the unembedding).
/// </summary>
public sealed class CohereArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "cohere" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        if (c.Bool("use_qk_norm", false)) throw c.Bad("use_qk_norm", "is true; Cohere's q/k LayerNorms are not supported yet");
        var cfg = LlamaLayout.ReadConfig(c, "cohere", tiedDefault: true, NormKind.LayerNorm);
        return cfg with
        {
            NormEps = c.Double("layer_norm_eps", 1e-5), ParallelResidual = true, RotaryInterleaved = true, SlidingWindow = null,
            LogitScale = c.Double("logit_scale", 0.0625),
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg)
    {
        var w = LlamaLayout.Load(r, cfg, b =>
        {
            long d = cfg.DModel, m = cfg.DMlp;
            var ln = r.Take(b + "input_layernorm.weight", d);
            return new BlockWeights
            {
                Ln1W = ln, Ln2W = ln.clone(),
                WIn = r.Take(b + "mlp.gate_proj.weight", m, d), WUp = r.Take(b + "mlp.up_proj.weight", m, d), WOut = r.Take(b + "mlp.down_proj.weight", d, m),
            }.WithAttention(r, cfg, b + "self_attn.");
        });
        // logits = (x · W_Eᵀ) · logit_scale: the scale lives in an untied copy of the unembedding, so every analysis reads true logits.
        if (cfg.LogitScale != 1.0) w.WU = w.WU.Mul(cfg.LogitScale);
        return w;
    }
}
