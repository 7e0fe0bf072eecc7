using Mechanist.IO;

namespace Mechanist.Models.Architectures;

/// <summary>OPT: pre-LN blocks with biases everywhere, ReLU MLP, learned positions stored with an offset of 2, tied unembedding.</summary>
public sealed class OptArchitecture : IArchitecture
{
    /// <summary>OPT's position table has two extra leading rows: position p reads row p + 2.</summary>
    const int PositionOffset = 2;

    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "opt" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        if (!c.Bool("do_layer_norm_before", true)) throw c.Bad("do_layer_norm_before", "is false; post-LN OPT (350m) is not supported yet");
        int d = c.PositiveInt("hidden_size"), heads = c.PositiveInt("num_attention_heads");
        if ((c.IntOrNull("word_embed_proj_dim") ?? d) != d) throw c.Bad("word_embed_proj_dim", "differs from hidden_size; OPT's project_in/project_out are not supported yet");
        if (!c.Bool("layer_norm_elementwise_affine", true)) throw c.Bad("layer_norm_elementwise_affine", "is false; not supported yet");
        if (c.Bool("_remove_final_layer_norm", false)) throw c.Bad("_remove_final_layer_norm", "is true; not supported");
        bool bias = c.Bool("enable_bias", true);
        return new TransformerConfig
        {
            Architecture = "opt", DModel = d, NLayers = c.PositiveInt("num_hidden_layers"), NHeads = heads, NKvHeads = heads, DHead = d / heads,
            DMlp = c.PositiveInt("ffn_dim"), VocabSize = c.PositiveInt("vocab_size"), NCtx = c.PositiveInt("max_position_embeddings"),
            Norm = NormKind.LayerNorm, NormEps = 1e-5, Activation = c.String("activation_function") ?? "relu", Positional = PositionKind.Learned,
            AttnScale = 1.0 / Math.Sqrt(d / heads), TiedEmbeddings = c.Bool("tie_word_embeddings", true), QkvBias = bias, OutBias = bias, MlpBias = bias,
            BosTokenId = c.IntOrNull("bos_token_id"), EosTokenIds = ConfigConventions.EosIds(c), PadTokenId = c.IntOrNull("pad_token_id"),
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg)
    {
        long d = cfg.DModel, m = cfg.DMlp;
        using var positions = r.Take("model.decoder.embed_positions.weight", cfg.NCtx + PositionOffset, d);
        var w = new TransformerWeights
        {
            WE = r.Take("model.decoder.embed_tokens.weight", cfg.VocabSize, d),
            WPos = positions[PositionOffset..].contiguous(),
            LnFinalW = r.Take("model.decoder.final_layer_norm.weight", d), LnFinalB = r.Take("model.decoder.final_layer_norm.bias", d),
            Blocks = new BlockWeights[cfg.NLayers],
        };
        for (int i = 0; i < cfg.NLayers; i++)
        {
            string b = $"model.decoder.layers.{i}.";
            TorchSharp.torch.Tensor? Bias(string name, long n) => cfg.QkvBias ? r.Take(b + name, n) : null;
            w.Blocks[i] = new BlockWeights
            {
                Ln1W = r.Take(b + "self_attn_layer_norm.weight", d), Ln1B = r.Take(b + "self_attn_layer_norm.bias", d),
                Ln2W = r.Take(b + "final_layer_norm.weight", d), Ln2B = r.Take(b + "final_layer_norm.bias", d),
                Wq = r.Take(b + "self_attn.q_proj.weight", d, d), Bq = Bias("self_attn.q_proj.bias", d),
                Wk = r.Take(b + "self_attn.k_proj.weight", d, d), Bk = Bias("self_attn.k_proj.bias", d),
                Wv = r.Take(b + "self_attn.v_proj.weight", d, d), Bv = Bias("self_attn.v_proj.bias", d),
                Wo = r.Take(b + "self_attn.out_proj.weight", d, d), Bo = Bias("self_attn.out_proj.bias", d),
                WIn = r.Take(b + "fc1.weight", m, d), BIn = Bias("fc1.bias", m),
                WOut = r.Take(b + "fc2.weight", d, m), BOut = Bias("fc2.bias", d),
            };
        }
        w.WU = cfg.TiedEmbeddings ? r.TakeOrNull("lm_head.weight", cfg.VocabSize, d) ?? w.WE : r.Take("lm_head.weight", cfg.VocabSize, d);
        return w;
    }
}
