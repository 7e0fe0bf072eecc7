using Mechanist.IO;

namespace Mechanist.Models.Architectures;

/// <summary>GPT-NeoX / Pythia: partial rotary, parallel residual, per-head interleaved fused query_key_value.</summary>
public sealed class GptNeoXArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "gpt_neox" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        int d = c.PositiveInt("hidden_size"), heads = c.PositiveInt("num_attention_heads"), dh = d / heads;
        return new TransformerConfig
        {
            Architecture = "gpt_neox", DModel = d, NLayers = c.PositiveInt("num_hidden_layers"), NHeads = heads, NKvHeads = heads,
            DHead = dh, DMlp = c.PositiveInt("intermediate_size"), VocabSize = c.PositiveInt("vocab_size"),
            NCtx = c.PositiveInt("max_position_embeddings"), Norm = NormKind.LayerNorm, NormEps = c.Double("layer_norm_eps", 1e-5),
            Activation = c.String("hidden_act") ?? "gelu", RopeTheta = c.DoubleOrNull("rope_theta") ?? c.Double("rotary_emb_base", 10000),
            RotaryDim = (int)(dh * c.Double("rotary_pct", 0.25)), RopeScaling = ConfigConventions.RopeScaling(c),
            ParallelResidual = c.Bool("use_parallel_residual", true), AttnScale = 1.0 / Math.Sqrt(dh),
            TiedEmbeddings = c.Bool("tie_word_embeddings", false), QkvBias = c.Bool("attention_bias", true),
            OutBias = c.Bool("attention_bias", true), MlpBias = true,
            BosTokenId = c.IntOrNull("bos_token_id"), EosTokenIds = ConfigConventions.EosIds(c),
            AttnOnly = c.Bool("attn_only", false), // Mechanist's extension for attention-only toy models
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg)
    {
        long d = cfg.DModel, m = cfg.DMlp, h = cfg.NHeads, dh = cfg.DHead;
        r.Ignore(n => n.EndsWith(".attention.bias") || n.EndsWith(".attention.masked_bias") || n.EndsWith("rotary_emb.inv_freq"));
        var w = new TransformerWeights
        {
            WE = r.Take("gpt_neox.embed_in.weight", cfg.VocabSize, d),
            LnFinalW = r.Take("gpt_neox.final_layer_norm.weight", d),
            LnFinalB = r.Take("gpt_neox.final_layer_norm.bias", d),
            Blocks = new BlockWeights[cfg.NLayers],
        };
        for (int i = 0; i < cfg.NLayers; i++)
        {
            string b = $"gpt_neox.layers.{i}.";
            // Fused rows are [head, (q|k|v), d_head]: split per head, then regroup by q, k, v.
            using var qkv = r.Take(b + "attention.query_key_value.weight", 3 * d, d);
            using var perHead = qkv.view(h, 3, dh, d);
            using var qkvB = cfg.QkvBias ? r.Take(b + "attention.query_key_value.bias", 3 * d) : null;
            using var perHeadB = qkvB?.view(h, 3, dh);
            w.Blocks[i] = new BlockWeights
            {
                Ln1W = r.Take(b + "input_layernorm.weight", d), Ln1B = r.Take(b + "input_layernorm.bias", d),
                Wq = perHead[.., 0].reshape(h * dh, d).contiguous(), Wk = perHead[.., 1].reshape(h * dh, d).contiguous(),
                Wv = perHead[.., 2].reshape(h * dh, d).contiguous(),
                Bq = perHeadB?[.., 0].reshape(h * dh).contiguous(), Bk = perHeadB?[.., 1].reshape(h * dh).contiguous(),
                Bv = perHeadB?[.., 2].reshape(h * dh).contiguous(),
                Wo = r.Take(b + "attention.dense.weight", d, d), Bo = cfg.OutBias ? r.Take(b + "attention.dense.bias", d) : null,
            };
            if (cfg.AttnOnly) continue;
            var block = w.Blocks[i];
            block.Ln2W = r.Take(b + "post_attention_layernorm.weight", d); block.Ln2B = r.Take(b + "post_attention_layernorm.bias", d);
            block.WIn = r.Take(b + "mlp.dense_h_to_4h.weight", m, d); block.BIn = r.Take(b + "mlp.dense_h_to_4h.bias", m);
            block.WOut = r.Take(b + "mlp.dense_4h_to_h.weight", d, m); block.BOut = r.Take(b + "mlp.dense_4h_to_h.bias", d);
        }
        w.WU = cfg.TiedEmbeddings ? w.WE : r.Take("embed_out.weight", cfg.VocabSize, d);
        return w;
    }
}
