using Mechanist.IO;

namespace Mechanist.Models.Architectures;

/// <summary>GPT-J: parallel attention and MLP reading one LayerNorm, rotary on interleaved pairs of the first rotary_dim dims, lm_head bias.</summary>
public sealed class GptJArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "gptj" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        int d = c.PositiveInt("n_embd"), heads = c.PositiveInt("n_head"), dh = d / heads;
        return new TransformerConfig
        {
            Architecture = "gptj", DModel = d, NLayers = c.PositiveInt("n_layer"), NHeads = heads, NKvHeads = heads, DHead = dh,
            DMlp = c.IntOrNull("n_inner") ?? 4 * d, VocabSize = c.PositiveInt("vocab_size"), NCtx = c.PositiveInt("n_positions"),
            Norm = NormKind.LayerNorm, NormEps = c.Double("layer_norm_epsilon", 1e-5), Activation = c.String("activation_function") ?? "gelu_new",
            RotaryDim = c.IntOrNull("rotary_dim") ?? dh, RotaryInterleaved = true, ParallelResidual = true, AttnScale = 1.0 / Math.Sqrt(dh),
            TiedEmbeddings = c.Bool("tie_word_embeddings", false), MlpBias = true,
            BosTokenId = c.IntOrNull("bos_token_id"), EosTokenIds = ConfigConventions.EosIds(c), PadTokenId = c.IntOrNull("pad_token_id"),
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg)
    {
        long d = cfg.DModel, m = cfg.DMlp;
        r.Ignore(n => n.EndsWith(".attn.bias") || n.EndsWith(".attn.masked_bias") || n.EndsWith("embed_positions"));
        var w = new TransformerWeights
        {
            WE = r.Take("transformer.wte.weight", cfg.VocabSize, d),
            LnFinalW = r.Take("transformer.ln_f.weight", d), LnFinalB = r.Take("transformer.ln_f.bias", d),
            Blocks = new BlockWeights[cfg.NLayers],
        };
        for (int i = 0; i < cfg.NLayers; i++)
        {
            string b = $"transformer.h.{i}.";
            var lnW = r.Take(b + "ln_1.weight", d); var lnB = r.Take(b + "ln_1.bias", d);
            w.Blocks[i] = new BlockWeights
            {
                Ln1W = lnW, Ln1B = lnB, Ln2W = lnW.clone(), Ln2B = lnB.clone(),
                Wq = r.Take(b + "attn.q_proj.weight", d, d), Wk = r.Take(b + "attn.k_proj.weight", d, d),
                Wv = r.Take(b + "attn.v_proj.weight", d, d), Wo = r.Take(b + "attn.out_proj.weight", d, d),
                WIn = r.Take(b + "mlp.fc_in.weight", m, d), BIn = r.Take(b + "mlp.fc_in.bias", m),
                WOut = r.Take(b + "mlp.fc_out.weight", d, m), BOut = r.Take(b + "mlp.fc_out.bias", d),
            };
        }
        w.WU = cfg.TiedEmbeddings ? r.TakeOrNull("lm_head.weight", cfg.VocabSize, d) ?? w.WE : r.Take("lm_head.weight", cfg.VocabSize, d);
        w.BU = r.TakeOrNull("lm_head.bias", cfg.VocabSize);
        return w;
    }
}
