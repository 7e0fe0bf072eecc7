using Mechanist.IO;

namespace Mechanist.Models.Architectures;

/// <summary>BLOOM: ALiBi instead of positions, a LayerNorm after the embedding, a per-head fused query_key_value, tanh GELU, tied unembedding.</summary>
public sealed class BloomArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "bloom" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        if (c.Bool("apply_residual_connection_post_layernorm", false)) throw c.Bad("apply_residual_connection_post_layernorm", "is true; not supported yet");
        int d = c.IntOrNull("hidden_size") ?? c.PositiveInt("n_embed"), heads = c.IntOrNull("n_head") ?? c.PositiveInt("num_attention_heads");
        int layers = c.IntOrNull("n_layer") ?? c.PositiveInt("num_hidden_layers");
        return new TransformerConfig
        {
            Architecture = "bloom", DModel = d, NLayers = layers, NHeads = heads, NKvHeads = heads, DHead = d / heads, DMlp = 4 * d,
            VocabSize = c.PositiveInt("vocab_size"),
            // ALiBi has no position table; the context is what the config says, or BLOOM's training length.
            NCtx = c.IntOrNull("seq_length") ?? c.IntOrNull("max_position_embeddings") ?? 2048,
            Norm = NormKind.LayerNorm, NormEps = c.Double("layer_norm_epsilon", 1e-5), Activation = "gelu_pytorch_tanh",
            Positional = PositionKind.Alibi, EmbeddingNorm = true, AttnScale = 1.0 / Math.Sqrt(d / heads),
            TiedEmbeddings = c.Bool("tie_word_embeddings", true), QkvBias = true, OutBias = true, MlpBias = true,
            BosTokenId = c.IntOrNull("bos_token_id"), EosTokenIds = ConfigConventions.EosIds(c), PadTokenId = c.IntOrNull("pad_token_id"),
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg)
    {
        long d = cfg.DModel, m = cfg.DMlp, h = cfg.NHeads, dh = cfg.DHead;
        var w = new TransformerWeights
        {
            WE = r.Take("transformer.word_embeddings.weight", cfg.VocabSize, d),
            EmbedLnW = r.Take("transformer.word_embeddings_layernorm.weight", d), EmbedLnB = r.Take("transformer.word_embeddings_layernorm.bias", d),
            LnFinalW = r.Take("transformer.ln_f.weight", d), LnFinalB = r.Take("transformer.ln_f.bias", d),
            Blocks = new BlockWeights[cfg.NLayers],
        };
        for (int i = 0; i < cfg.NLayers; i++)
        {
            string b = $"transformer.h.{i}.";
            // Fused rows are [head, (q|k|v), d_head], as GPT-NeoX.
            using var qkv = r.Take(b + "self_attention.query_key_value.weight", 3 * d, d);
            using var perHead = qkv.view(h, 3, dh, d);
            using var qkvB = r.Take(b + "self_attention.query_key_value.bias", 3 * d);
            using var perHeadB = qkvB.view(h, 3, dh);
            w.Blocks[i] = new BlockWeights
            {
                Ln1W = r.Take(b + "input_layernorm.weight", d), Ln1B = r.Take(b + "input_layernorm.bias", d),
                Ln2W = r.Take(b + "post_attention_layernorm.weight", d), Ln2B = r.Take(b + "post_attention_layernorm.bias", d),
                Wq = perHead[.., 0].reshape(h * dh, d).contiguous(), Wk = perHead[.., 1].reshape(h * dh, d).contiguous(), Wv = perHead[.., 2].reshape(h * dh, d).contiguous(),
                Bq = perHeadB[.., 0].reshape(h * dh).contiguous(), Bk = perHeadB[.., 1].reshape(h * dh).contiguous(), Bv = perHeadB[.., 2].reshape(h * dh).contiguous(),
                Wo = r.Take(b + "self_attention.dense.weight", d, d), Bo = r.Take(b + "self_attention.dense.bias", d),
                WIn = r.Take(b + "mlp.dense_h_to_4h.weight", m, d), BIn = r.Take(b + "mlp.dense_h_to_4h.bias", m),
                WOut = r.Take(b + "mlp.dense_4h_to_h.weight", d, m), BOut = r.Take(b + "mlp.dense_4h_to_h.bias", d),
            };
        }
        w.WU = cfg.TiedEmbeddings ? r.TakeOrNull("lm_head.weight", cfg.VocabSize, d) ?? w.WE : r.Take("lm_head.weight", cfg.VocabSize, d);
        return w;
    }
}
