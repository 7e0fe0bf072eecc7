using Mechanist.Tensors;
using Mechanist.IO;

namespace Mechanist.Models.Architectures;

/// <summary>
/// BERT for masked LM, run as an encoder: bidirectional attention masking only padding, post-LN blocks, absolute positions
/// (token type 0 folded into them), a LayerNorm after the embeddings, and cls.predictions (dense, GELU, LayerNorm, tied decoder + bias).
/// </summary>
public sealed class BertArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "bert" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        if ((c.String("position_embedding_type") ?? "absolute") != "absolute") throw c.Bad("position_embedding_type", "is not 'absolute'; relative BERT positions are not supported");
        if (c.Bool("is_decoder", false)) throw c.Bad("is_decoder", "is true; BERT as a decoder is not supported");
        int d = c.PositiveInt("hidden_size"), heads = c.PositiveInt("num_attention_heads");
        return new TransformerConfig
        {
            Architecture = "bert", DModel = d, NLayers = c.PositiveInt("num_hidden_layers"), NHeads = heads, NKvHeads = heads, DHead = d / heads,
            DMlp = c.PositiveInt("intermediate_size"), VocabSize = c.PositiveInt("vocab_size"), NCtx = c.PositiveInt("max_position_embeddings"),
            Norm = NormKind.LayerNorm, NormEps = c.Double("layer_norm_eps", 1e-12), Activation = c.String("hidden_act") ?? "gelu",
            Positional = PositionKind.Learned, AttnScale = 1.0 / Math.Sqrt(d / heads), TiedEmbeddings = c.Bool("tie_word_embeddings", true),
            QkvBias = true, OutBias = true, MlpBias = true, Causal = false, PostLayerNorm = true, MlmHead = true, EmbeddingNorm = true,
            PadTokenId = c.IntOrNull("pad_token_id"), TypeVocabSize = c.IntOrNull("type_vocab_size") ?? 2,
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg)
    {
        long d = cfg.DModel, m = cfg.DMlp;
        r.Ignore(n => n.StartsWith("bert.pooler.") || n.EndsWith("position_ids") || n.StartsWith("cls.seq_relationship"));
        using var positions = r.Take("bert.embeddings.position_embeddings.weight", cfg.NCtx, d);
        using var types = r.TakeOrNull("bert.embeddings.token_type_embeddings.weight", cfg.TypeVocabSize, d);
        var w = new TransformerWeights
        {
            WE = r.Take("bert.embeddings.word_embeddings.weight", cfg.VocabSize, d),
            // Every token has type 0: its embedding rides with the positions (hook_pos_embed holds both).
            WPos = types is null ? positions.clone() : positions.Add(types[0]),
            EmbedLnW = r.Take("bert.embeddings.LayerNorm.weight", d), EmbedLnB = r.Take("bert.embeddings.LayerNorm.bias", d),
            HeadDenseW = r.Take("cls.predictions.transform.dense.weight", d, d), HeadDenseB = r.Take("cls.predictions.transform.dense.bias", d),
            LnFinalW = r.Take("cls.predictions.transform.LayerNorm.weight", d), LnFinalB = r.Take("cls.predictions.transform.LayerNorm.bias", d),
            Blocks = new BlockWeights[cfg.NLayers],
        };
        for (int i = 0; i < cfg.NLayers; i++)
        {
            string b = $"bert.encoder.layer.{i}.";
            w.Blocks[i] = new BlockWeights
            {
                Wq = r.Take(b + "attention.self.query.weight", d, d), Bq = r.Take(b + "attention.self.query.bias", d),
                Wk = r.Take(b + "attention.self.key.weight", d, d), Bk = r.Take(b + "attention.self.key.bias", d),
                Wv = r.Take(b + "attention.self.value.weight", d, d), Bv = r.Take(b + "attention.self.value.bias", d),
                Wo = r.Take(b + "attention.output.dense.weight", d, d), Bo = r.Take(b + "attention.output.dense.bias", d),
                Ln1W = r.Take(b + "attention.output.LayerNorm.weight", d), Ln1B = r.Take(b + "attention.output.LayerNorm.bias", d),
                WIn = r.Take(b + "intermediate.dense.weight", m, d), BIn = r.Take(b + "intermediate.dense.bias", m),
                WOut = r.Take(b + "output.dense.weight", d, m), BOut = r.Take(b + "output.dense.bias", d),
                Ln2W = r.Take(b + "output.LayerNorm.weight", d), Ln2B = r.Take(b + "output.LayerNorm.bias", d),
            };
        }
        w.WU = cfg.TiedEmbeddings ? r.TakeOrNull("cls.predictions.decoder.weight", cfg.VocabSize, d) ?? w.WE : r.Take("cls.predictions.decoder.weight", cfg.VocabSize, d);
        w.BU = r.Take("cls.predictions.bias", cfg.VocabSize);
        r.Ignore(n => n == "cls.predictions.decoder.bias");
        return w;
    }
}
