using Mechanist.Tensors;
using Mechanist.IO;
using static TorchSharp.torch;

namespace Mechanist.Models.Architectures;

/// <summary>
/// The "model.layers.N.self_attn / mlp" layout and config keys that Llama, Mistral, Qwen2/3, Gemma,
/// Phi-3 and OLMo share. Each architecture file states only where it departs from it.
/// </summary>
internal static class LlamaLayout
{
    /// <summary>The common config reading; <paramref name="tiedDefault"/> is the architecture's HF default.</summary>
    public static TransformerConfig ReadConfig(ModelConfig c, string arch, bool tiedDefault, NormKind norm)
    {
        int d = c.PositiveInt("hidden_size"), heads = c.PositiveInt("num_attention_heads");
        int kv = c.IntOrNull("num_key_value_heads") ?? heads;
        ConfigConventions.CheckHeads(c, heads, kv);
        int dh = c.IntOrNull("head_dim") ?? d / heads;
        bool attnBias = c.Bool("attention_bias", false);
        return new TransformerConfig
        {
            Architecture = arch, DModel = d, NLayers = c.PositiveInt("num_hidden_layers"), NHeads = heads, NKvHeads = kv, DHead = dh,
            DMlp = c.PositiveInt("intermediate_size"), VocabSize = c.PositiveInt("vocab_size"),
            NCtx = c.PositiveInt("max_position_embeddings"), Norm = norm,
            NormEps = c.DoubleOrNull("rms_norm_eps") ?? c.Double("layer_norm_eps", 1e-6),
            Activation = c.String("hidden_activation") ?? c.String("hidden_act") ?? "silu", GatedMlp = true,
            RopeTheta = c.Double("rope_theta", 10000), RotaryDim = (int)(dh * c.Double("partial_rotary_factor", 1.0)),
            RopeScaling = ConfigConventions.RopeScaling(c), AttnScale = 1.0 / Math.Sqrt(dh),
            TiedEmbeddings = c.Bool("tie_word_embeddings", tiedDefault), QkvBias = attnBias, OutBias = attnBias,
            MlpBias = c.Bool("mlp_bias", false),
            SlidingWindow = c.IntOrNull("sliding_window"),
            BosTokenId = c.IntOrNull("bos_token_id"), EosTokenIds = ConfigConventions.EosIds(c), PadTokenId = c.IntOrNull("pad_token_id"),
        };
    }

    /// <summary>Reads embeddings, final norm and unembedding, and calls <paramref name="block"/> per layer.</summary>
    public static TransformerWeights Load(WeightReader r, TransformerConfig cfg, Func<string, BlockWeights> block)
    {
        r.Ignore(n => n.EndsWith("rotary_emb.inv_freq"));
        long d = cfg.DModel;
        bool affine = cfg.Norm != NormKind.LayerNormNoAffine;
        var w = new TransformerWeights
        {
            WE = r.Take("model.embed_tokens.weight", cfg.VocabSize, d),
            LnFinalW = affine ? r.Take("model.norm.weight", d) : null,
            Blocks = new BlockWeights[cfg.NLayers],
        };
        for (int i = 0; i < cfg.NLayers; i++) w.Blocks[i] = block($"model.layers.{i}.");
        w.WU = cfg.TiedEmbeddings ? r.TakeOrNull("lm_head.weight", cfg.VocabSize, d) ?? w.WE : r.Take("lm_head.weight", cfg.VocabSize, d);
        return w;
    }

    /// <summary>Fills separate q_proj/k_proj/v_proj/o_proj weights (and the biases the config asks for) under <paramref name="attn"/>.</summary>
    public static BlockWeights WithAttention(this BlockWeights w, WeightReader r, TransformerConfig cfg, string attn, string outName = "o_proj")
    {
        long d = cfg.DModel, q = cfg.NHeads * cfg.DHead, kv = cfg.NKvHeads * cfg.DHead;
        w.Wq = r.Take(attn + "q_proj.weight", q, d); w.Wk = r.Take(attn + "k_proj.weight", kv, d);
        w.Wv = r.Take(attn + "v_proj.weight", kv, d); w.Wo = r.Take(attn + outName + ".weight", d, q);
        w.Bq = cfg.QkvBias ? r.Take(attn + "q_proj.bias", q) : null; w.Bk = cfg.QkvBias ? r.Take(attn + "k_proj.bias", kv) : null;
        w.Bv = cfg.QkvBias ? r.Take(attn + "v_proj.bias", kv) : null; w.Bo = cfg.OutBias ? r.Take(attn + outName + ".bias", d) : null;
        return w;
    }

    /// <summary>The standard block: separate q/k/v/o projections and a gate/up/down MLP.</summary>
    public static BlockWeights StandardBlock(WeightReader r, TransformerConfig cfg, string b)
    {
        long d = cfg.DModel, m = cfg.DMlp;
        bool affine = cfg.Norm != NormKind.LayerNormNoAffine;
        return new BlockWeights
        {
            Ln1W = affine ? r.Take(b + "input_layernorm.weight", d) : null,
            Ln2W = affine ? r.Take(b + "post_attention_layernorm.weight", d) : null,
            WIn = r.Take(b + "mlp.gate_proj.weight", m, d), WUp = r.Take(b + "mlp.up_proj.weight", m, d),
            WOut = r.Take(b + "mlp.down_proj.weight", d, m),
            BIn = cfg.MlpBias ? r.Take(b + "mlp.gate_proj.bias", m) : null,
            BUp = cfg.MlpBias ? r.Take(b + "mlp.up_proj.bias", m) : null,
            BOut = cfg.MlpBias ? r.Take(b + "mlp.down_proj.bias", d) : null,
        }.WithAttention(r, cfg, b + "self_attn.");
    }
}

/// <summary>Llama (1/2/3), Mistral, Qwen2 and Qwen3: RMSNorm, rotary, SwiGLU, GQA.</summary>
public sealed class LlamaArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "llama", "mistral", "qwen2", "qwen3" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        string type = c.ModelType;
        var cfg = LlamaLayout.ReadConfig(c, type, tiedDefault: false, NormKind.RmsNorm);
        return type switch
        {
            // Qwen2 has q/k/v biases but no o_proj bias, and uses its window only when asked.
            "qwen2" => cfg with
            {
                QkvBias = true, OutBias = false,
                SlidingWindow = c.Bool("use_sliding_window", false) ? cfg.SlidingWindow : null,
                SlidingLayer = l => l >= (c.IntOrNull("max_window_layers") ?? 0),
            },
            "qwen3" => cfg with
            {
                QkNorm = true,
                SlidingWindow = c.Bool("use_sliding_window", false) ? cfg.SlidingWindow : null,
                SlidingLayer = l => l >= (c.IntOrNull("max_window_layers") ?? 0),
            },
            "mistral" => cfg,
            _ => cfg with { SlidingWindow = null },
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg) =>
        LlamaLayout.Load(r, cfg, b =>
        {
            var block = LlamaLayout.StandardBlock(r, cfg, b);
            if (cfg.QkNorm)
            {
                block.QNormW = r.Take(b + "self_attn.q_norm.weight", cfg.DHead);
                block.KNormW = r.Take(b + "self_attn.k_norm.weight", cfg.DHead);
            }
            return block;
        });
}

/// <summary>Gemma, Gemma-2 and Gemma-3 (text): (1 + w) RMSNorm, embeddings scaled by sqrt(d_model), GeGLU; Gemma-2 adds
/// sandwich norms, soft-capping, query_pre_attn_scalar and sliding windows on even layers; Gemma-3 adds per-head (1 + w)
/// q/k norms, a sliding-window pattern and a second rotary base for its local layers.</summary>
public sealed class GemmaArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "gemma", "gemma2", "gemma3_text" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        var cfg = LlamaLayout.ReadConfig(c, c.ModelType, tiedDefault: true, NormKind.RmsNormPlusOne);
        cfg = cfg with
        {
            // HF computes the scale as a tensor in the model's dtype.
            EmbeddingScale = (float)Math.Sqrt(cfg.DModel),
            Activation = c.String("hidden_activation") ?? "gelu_pytorch_tanh",
            SlidingWindow = null,
        };
        if (c.ModelType == "gemma3_text")
        {
            int pattern = c.IntOrNull("sliding_window_pattern") ?? 6;
            if (pattern < 1) throw c.Bad("sliding_window_pattern", "must be at least 1");
            return cfg with
            {
                PostNorms = true, QkNorm = true,
                AttnScale = 1.0 / Math.Sqrt(c.Double("query_pre_attn_scalar", cfg.DHead)),
                AttnSoftcap = c.DoubleOrNull("attn_logit_softcapping"),
                FinalSoftcap = c.DoubleOrNull("final_logit_softcapping"),
                SlidingWindow = c.IntOrNull("sliding_window"),
                // Every pattern-th layer is global; the others slide and use the local rotary base without scaling.
                SlidingLayer = l => (l + 1) % pattern != 0,
                LocalRopeTheta = c.Double("rope_local_base_freq", 10000),
            };
        }
        if (c.ModelType != "gemma2") return cfg;
        return cfg with
        {
            PostNorms = true,
            AttnScale = 1.0 / Math.Sqrt(c.Double("query_pre_attn_scalar", cfg.DHead)),
            AttnSoftcap = c.DoubleOrNull("attn_logit_softcapping"),
            FinalSoftcap = c.DoubleOrNull("final_logit_softcapping"),
            SlidingWindow = c.IntOrNull("sliding_window"),
            SlidingLayer = l => l % 2 == 0,
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg) =>
        LlamaLayout.Load(r, cfg, b =>
        {
            var block = LlamaLayout.StandardBlock(r, cfg, b);
            if (cfg.PostNorms)
            {
                // Gemma-2 names: post_attention_layernorm is the norm *after* attention; the MLP's input
                // norm is pre_feedforward_layernorm.
                block.PostAttnNormW = block.Ln2W;
                block.Ln2W = r.Take(b + "pre_feedforward_layernorm.weight", cfg.DModel);
                block.PostMlpNormW = r.Take(b + "post_feedforward_layernorm.weight", cfg.DModel);
            }
            if (cfg.QkNorm)
            {
                // Stored as offsets: the per-head norms scale by (1 + w), folded in here.
                using var q = r.Take(b + "self_attn.q_norm.weight", cfg.DHead); using var k = r.Take(b + "self_attn.k_norm.weight", cfg.DHead);
                block.QNormW = q.Add(1L); block.KNormW = k.Add(1L);
            }
            return block;
        });
}

/// <summary>OLMo (1): LayerNorm without parameters, SwiGLU, optional qkv clipping (unsupported).</summary>
public sealed class OlmoArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "olmo" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        if (c.DoubleOrNull("clip_qkv") != null) throw c.Bad("clip_qkv", "is set; clipping q/k/v is not supported yet");
        var cfg = LlamaLayout.ReadConfig(c, "olmo", tiedDefault: false, NormKind.LayerNormNoAffine);
        return cfg with { NormEps = 1e-5, SlidingWindow = null };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg) =>
        LlamaLayout.Load(r, cfg, b => LlamaLayout.StandardBlock(r, cfg, b));
}

/// <summary>
/// OLMo-2: no input norms (attention and MLP read the raw residual), RMSNorms on their outputs (post_attention_layernorm,
/// post_feedforward_layernorm), and RMSNorm q/k norms over the whole projections before the head split and RoPE.
/// </summary>
public sealed class Olmo2Architecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "olmo2" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        var cfg = LlamaLayout.ReadConfig(c, "olmo2", tiedDefault: false, NormKind.RmsNorm);
        return cfg with { PreNorms = false, PostNorms = true, QkNorm = true, QkNormAcrossHeads = true, SlidingWindow = null };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg) =>
        LlamaLayout.Load(r, cfg, b =>
        {
            long d = cfg.DModel, q = cfg.NHeads * cfg.DHead, kv = cfg.NKvHeads * cfg.DHead, m = cfg.DMlp;
            return new BlockWeights
            {
                PostAttnNormW = r.Take(b + "post_attention_layernorm.weight", d), PostMlpNormW = r.Take(b + "post_feedforward_layernorm.weight", d),
                QNormW = r.Take(b + "self_attn.q_norm.weight", q), KNormW = r.Take(b + "self_attn.k_norm.weight", kv),
                WIn = r.Take(b + "mlp.gate_proj.weight", m, d), WUp = r.Take(b + "mlp.up_proj.weight", m, d), WOut = r.Take(b + "mlp.down_proj.weight", d, m),
            }.WithAttention(r, cfg, b + "self_attn.");
        });
}

/// <summary>Phi-3: Llama semantics with fused qkv_proj ([q; k; v]) and gate_up_proj ([gate; up]).</summary>
public sealed class Phi3Architecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "phi3" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        var cfg = LlamaLayout.ReadConfig(c, "phi3", tiedDefault: false, NormKind.RmsNorm);
        if (c.Json["rope_scaling"] is System.Text.Json.Nodes.JsonObject)
            throw c.Bad("rope_scaling", "Phi-3 LongRoPE scaling is not supported yet");
        return cfg with { NormEps = c.Double("rms_norm_eps", 1e-5) };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg) =>
        LlamaLayout.Load(r, cfg, b =>
        {
            long d = cfg.DModel, q = cfg.NHeads * cfg.DHead, kv = cfg.NKvHeads * cfg.DHead, m = cfg.DMlp;
            using var qkv = r.Take(b + "self_attn.qkv_proj.weight", q + 2 * kv, d);
            using var gateUp = r.Take(b + "mlp.gate_up_proj.weight", 2 * m, d);
            return new BlockWeights
            {
                Ln1W = r.Take(b + "input_layernorm.weight", d), Ln2W = r.Take(b + "post_attention_layernorm.weight", d),
                Wq = qkv[..(int)q].contiguous(), Wk = qkv[(int)q..(int)(q + kv)].contiguous(), Wv = qkv[(int)(q + kv)..].contiguous(),
                Wo = r.Take(b + "self_attn.o_proj.weight", d, q),
                WIn = gateUp[..(int)m].contiguous(), WUp = gateUp[(int)m..].contiguous(),
                WOut = r.Take(b + "mlp.down_proj.weight", d, m),
            };
        });
}
