using Mechanist.IO;

namespace Mechanist.Models.Architectures;

/// <summary>GPT-2: learned positions, LayerNorm, GELU (tanh), Conv1D weights stored [in, out], fused c_attn.</summary>
public sealed class Gpt2Architecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "gpt2" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        int d = c.PositiveInt("n_embd"), heads = c.PositiveInt("n_head");
        if (d % heads != 0) throw c.Bad("n_head", $"{heads} does not divide n_embd {d}");
        return new TransformerConfig
        {
            Architecture = "gpt2", DModel = d, NLayers = c.PositiveInt("n_layer"), NHeads = heads, NKvHeads = heads,
            DHead = d / heads, DMlp = c.IntOrNull("n_inner") ?? 4 * d, VocabSize = c.PositiveInt("vocab_size"),
            NCtx = c.PositiveInt("n_positions"), Norm = NormKind.LayerNorm, NormEps = c.Double("layer_norm_epsilon", 1e-5),
            Activation = c.String("activation_function") ?? "gelu_new", Positional = PositionKind.Learned,
            AttnScale = c.Bool("scale_attn_weights", true) ? 1.0 / Math.Sqrt(d / heads) : 1.0,
            TiedEmbeddings = c.Bool("tie_word_embeddings", true), QkvBias = true, OutBias = true, MlpBias = true,
            BosTokenId = c.IntOrNull("bos_token_id"), EosTokenIds = ConfigConventions.EosIds(c),
            // Mechanist's extension for attention-only toy models (Hugging Face has no such GPT-2).
            AttnOnly = c.Bool("attn_only", false),
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg)
    {
        string p = r.Has("transformer.wte.weight") ? "transformer." : "";
        long d = cfg.DModel, m = cfg.DMlp;
        r.Ignore(n => n.EndsWith(".attn.bias") || n.EndsWith(".attn.masked_bias"));
        var w = new TransformerWeights
        {
            WE = r.Take($"{p}wte.weight", cfg.VocabSize, d),
            WPos = r.Take($"{p}wpe.weight", cfg.NCtx, d),
            LnFinalW = r.Take($"{p}ln_f.weight", d),
            LnFinalB = r.Take($"{p}ln_f.bias", d),
            Blocks = new BlockWeights[cfg.NLayers],
        };
        for (int i = 0; i < cfg.NLayers; i++)
        {
            string b = $"{p}h.{i}.";
            using var cAttn = r.Take(b + "attn.c_attn.weight", d, 3 * d);
            using var cAttnB = r.Take(b + "attn.c_attn.bias", 3 * d);
            var qkv = cAttn.t().chunk(3, 0);
            var qkvB = cAttnB.chunk(3, 0);
            using var cProj = r.Take(b + "attn.c_proj.weight", d, d);
            var block = new BlockWeights
            {
                Ln1W = r.Take(b + "ln_1.weight", d), Ln1B = r.Take(b + "ln_1.bias", d),
                Wq = qkv[0].contiguous(), Wk = qkv[1].contiguous(), Wv = qkv[2].contiguous(),
                Bq = qkvB[0].contiguous(), Bk = qkvB[1].contiguous(), Bv = qkvB[2].contiguous(),
                Wo = cProj.t().contiguous(), Bo = r.Take(b + "attn.c_proj.bias", d),
            };
            if (!cfg.AttnOnly)
            {
                using var fc = r.Take(b + "mlp.c_fc.weight", d, m);
                using var proj = r.Take(b + "mlp.c_proj.weight", m, d);
                block.Ln2W = r.Take(b + "ln_2.weight", d); block.Ln2B = r.Take(b + "ln_2.bias", d);
                block.WIn = fc.t().contiguous(); block.BIn = r.Take(b + "mlp.c_fc.bias", m);
                block.WOut = proj.t().contiguous(); block.BOut = r.Take(b + "mlp.c_proj.bias", d);
            }
            w.Blocks[i] = block;
            foreach (var t in qkv.Concat(qkvB)) t.Dispose();
        }
        w.WU = cfg.TiedEmbeddings ? r.TakeOrNull("lm_head.weight", cfg.VocabSize, d) ?? w.WE : r.Take("lm_head.weight", cfg.VocabSize, d);
        return w;
    }
}
