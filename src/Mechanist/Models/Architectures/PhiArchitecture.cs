using Mechanist.IO;

namespace Mechanist.Models.Architectures;

/// <summary>Phi (1, 1.5, 2): parallel attention and MLP reading one LayerNorm, partial half-split RoPE, biases everywhere, lm_head bias.</summary>
public sealed class PhiArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "phi" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        if (c.Bool("qk_layernorm", false)) throw c.Bad("qk_layernorm", "is true; Phi's q/k LayerNorms are not supported yet");
        var cfg = LlamaLayout.ReadConfig(c, "phi", tiedDefault: false, NormKind.LayerNorm);
        return cfg with
        {
            NormEps = c.Double("layer_norm_eps", 1e-5), Activation = c.String("hidden_act") ?? "gelu_new", GatedMlp = false, ParallelResidual = true,
            // HF: int(head_dim * partial_rotary_factor).
            RotaryDim = (int)(cfg.DHead * c.Double("partial_rotary_factor", 0.5)),
            QkvBias = true, OutBias = true, MlpBias = true, SlidingWindow = null,
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg)
    {
        long d = cfg.DModel, q = cfg.NHeads * cfg.DHead, kv = cfg.NKvHeads * cfg.DHead, m = cfg.DMlp;
        r.Ignore(n => n.EndsWith("rotary_emb.inv_freq"));
        var w = new TransformerWeights
        {
            WE = r.Take("model.embed_tokens.weight", cfg.VocabSize, d),
            LnFinalW = r.Take("model.final_layernorm.weight", d), LnFinalB = r.Take("model.final_layernorm.bias", d),
            Blocks = new BlockWeights[cfg.NLayers],
        };
        for (int i = 0; i < cfg.NLayers; i++)
        {
            string b = $"model.layers.{i}.";
            var ln1W = r.Take(b + "input_layernorm.weight", d); var ln1B = r.Take(b + "input_layernorm.bias", d);
            w.Blocks[i] = new BlockWeights
            {
                // One norm feeds both branches; the MLP's copy lets hooks and weight processing treat it as its own.
                Ln1W = ln1W, Ln1B = ln1B, Ln2W = ln1W.clone(), Ln2B = ln1B.clone(),
                Wq = r.Take(b + "self_attn.q_proj.weight", q, d), Bq = r.Take(b + "self_attn.q_proj.bias", q),
                Wk = r.Take(b + "self_attn.k_proj.weight", kv, d), Bk = r.Take(b + "self_attn.k_proj.bias", kv),
                Wv = r.Take(b + "self_attn.v_proj.weight", kv, d), Bv = r.Take(b + "self_attn.v_proj.bias", kv),
                Wo = r.Take(b + "self_attn.dense.weight", d, q), Bo = r.Take(b + "self_attn.dense.bias", d),
                WIn = r.Take(b + "mlp.fc1.weight", m, d), BIn = r.Take(b + "mlp.fc1.bias", m),
                WOut = r.Take(b + "mlp.fc2.weight", d, m), BOut = r.Take(b + "mlp.fc2.bias", d),
            };
        }
        w.WU = cfg.TiedEmbeddings ? r.TakeOrNull("lm_head.weight", cfg.VocabSize, d) ?? w.WE : r.Take("lm_head.weight", cfg.VocabSize, d);
        w.BU = r.TakeOrNull("lm_head.bias", cfg.VocabSize);
        return w;
    }
}
