using Mechanist.IO;

namespace Mechanist.Models.Architectures;

/// <summary>
/// Falcon with the new decoder architecture (40B/180B style): a fused grouped query_key_value ([q heads of a group, k, v] per kv
/// group), two LayerNorms feeding parallel attention and MLP, exact GELU, full RoPE; or the older single-LayerNorm parallel layout.
/// </summary>
public sealed class FalconArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "falcon" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        if (c.Bool("alibi", false)) throw c.Bad("alibi", "is true; Falcon with ALiBi is not supported yet");
        if (!c.Bool("parallel_attn", true)) throw c.Bad("parallel_attn", "is false; sequential Falcon blocks are not supported yet");
        if (!c.Bool("new_decoder_architecture", false)) throw c.Bad("new_decoder_architecture", "is false; only Falcon's new decoder architecture (two LayerNorms, grouped qkv) is supported yet");
        int d = c.PositiveInt("hidden_size"), heads = c.PositiveInt("num_attention_heads"), dh = d / heads;
        int kv = c.IntOrNull("num_kv_heads") ?? heads;
        ConfigConventions.CheckHeads(c, heads, kv);
        bool bias = c.Bool("bias", false);
        return new TransformerConfig
        {
            Architecture = "falcon", DModel = d, NLayers = c.PositiveInt("num_hidden_layers"), NHeads = heads, NKvHeads = kv, DHead = dh,
            DMlp = c.IntOrNull("ffn_hidden_size") ?? 4 * d, VocabSize = c.PositiveInt("vocab_size"), NCtx = c.Int("max_position_embeddings"),
            Norm = NormKind.LayerNorm, NormEps = c.Double("layer_norm_epsilon", 1e-5), Activation = c.String("activation") ?? "gelu",
            RopeTheta = c.Double("rope_theta", 10000), RotaryDim = dh, RopeScaling = ConfigConventions.RopeScaling(c), ParallelResidual = true,
            AttnScale = 1.0 / Math.Sqrt(dh), TiedEmbeddings = c.Bool("tie_word_embeddings", true), QkvBias = bias, OutBias = bias, MlpBias = bias,
            BosTokenId = c.IntOrNull("bos_token_id"), EosTokenIds = ConfigConventions.EosIds(c), PadTokenId = c.IntOrNull("pad_token_id"),
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg)
    {
        long d = cfg.DModel, m = cfg.DMlp, dh = cfg.DHead, g = cfg.NKvHeads, per = cfg.HeadsPerKvHead;
        r.Ignore(n => n.EndsWith("rotary_emb.inv_freq"));
        var w = new TransformerWeights
        {
            WE = r.Take("transformer.word_embeddings.weight", cfg.VocabSize, d),
            LnFinalW = r.Take("transformer.ln_f.weight", d), LnFinalB = r.Take("transformer.ln_f.bias", d),
            Blocks = new BlockWeights[cfg.NLayers],
        };
        for (int i = 0; i < cfg.NLayers; i++)
        {
            string b = $"transformer.h.{i}.";
            // Rows grouped per kv head: [q_{g·per} .. q_{g·per+per−1}, k_g, v_g], each d_head rows.
            using var qkv = r.Take(b + "self_attention.query_key_value.weight", (cfg.NHeads + 2 * g) * dh, d);
            using var grouped = qkv.view(g, per + 2, dh, d);
            using var qkvB = cfg.QkvBias ? r.Take(b + "self_attention.query_key_value.bias", (cfg.NHeads + 2 * g) * dh) : null;
            using var groupedB = qkvB?.view(g, per + 2, dh);
            w.Blocks[i] = new BlockWeights
            {
                Ln1W = r.Take(b + "ln_attn.weight", d), Ln1B = r.Take(b + "ln_attn.bias", d),
                Ln2W = r.Take(b + "ln_mlp.weight", d), Ln2B = r.Take(b + "ln_mlp.bias", d),
                Wq = grouped[.., ..(int)per].reshape(cfg.NHeads * dh, d).contiguous(),
                Wk = grouped[.., (int)per].reshape(g * dh, d).contiguous(), Wv = grouped[.., (int)per + 1].reshape(g * dh, d).contiguous(),
                Bq = groupedB?[.., ..(int)per].reshape(cfg.NHeads * dh).contiguous(),
                Bk = groupedB?[.., (int)per].reshape(g * dh).contiguous(), Bv = groupedB?[.., (int)per + 1].reshape(g * dh).contiguous(),
                Wo = r.Take(b + "self_attention.dense.weight", d, d), Bo = cfg.OutBias ? r.Take(b + "self_attention.dense.bias", d) : null,
                WIn = r.Take(b + "mlp.dense_h_to_4h.weight", m, d), BIn = cfg.MlpBias ? r.Take(b + "mlp.dense_h_to_4h.bias", m) : null,
                WOut = r.Take(b + "mlp.dense_4h_to_h.weight", d, m), BOut = cfg.MlpBias ? r.Take(b + "mlp.dense_4h_to_h.bias", d) : null,
            };
        }
        w.WU = cfg.TiedEmbeddings ? r.TakeOrNull("lm_head.weight", cfg.VocabSize, d) ?? w.WE : r.Take("lm_head.weight", cfg.VocabSize, d);
        return w;
    }
}
