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
            long d = cfg.DModel, q = cfg.NHeads * cfg.DHead, kv = cfg.NKvHeads * cfg.DHead, m = cfg.DMlp;
            var ln = r.Take(b + "input_layernorm.weight", d);
            return new BlockWeights
            {
                Ln1W = ln, Ln2W = ln.clone(),
                Wq = r.Take(b + "self_attn.q_proj.weight", q, d), Wk = r.Take(b + "self_attn.k_proj.weight", kv, d),
                Wv = r.Take(b + "self_attn.v_proj.weight", kv, d), Wo = r.Take(b + "self_attn.o_proj.weight", d, q),
                Bq = cfg.QkvBias ? r.Take(b + "self_attn.q_proj.bias", q) : null, Bk = cfg.QkvBias ? r.Take(b + "self_attn.k_proj.bias", kv) : null,
                Bv = cfg.QkvBias ? r.Take(b + "self_attn.v_proj.bias", kv) : null, Bo = cfg.OutBias ? r.Take(b + "self_attn.o_proj.bias", d) : null,
                WIn = r.Take(b + "mlp.gate_proj.weight", m, d), WUp = r.Take(b + "mlp.up_proj.weight", m, d), WOut = r.Take(b + "mlp.down_proj.weight", d, m),
            };
        });
        // logits = (x · W_Eᵀ) · logit_scale: the scale lives in an untied copy of the unembedding, so every analysis reads true logits.
        if (cfg.LogitScale != 1.0) w.WU = w.WU * cfg.LogitScale;
        return w;
    }
}
