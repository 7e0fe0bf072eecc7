using Mechanist.Tensors;
using System.Text.Json;
using System.Text.Json.Nodes;
using Mechanist.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Mechanist.IO;

/// <summary>Writes a GPT-2-architecture <see cref="HookedTransformer"/> as a Hugging Face GPT2LMHeadModel folder.</summary>
public static class HfCheckpointWriter
{
    /// <summary>The Hugging Face GPT-2 tensors of a model (Conv1D weights stored [in, out]).</summary>
    public static Dictionary<string, Tensor> Gpt2Tensors(HookedTransformer model)
    {
        var cfg = model.Config;
        if (cfg.Architecture != "gpt2") throw new MechanistException($"only gpt2-architecture models can be written in GPT-2 layout (this is {cfg.Architecture})");
        var w = model.Weights;
        var t = new Dictionary<string, Tensor>
        {
            ["transformer.wte.weight"] = w.WE, ["transformer.wpe.weight"] = w.WPos!,
            ["transformer.ln_f.weight"] = w.LnFinalW!, ["transformer.ln_f.bias"] = w.LnFinalB!,
        };
        for (int i = 0; i < cfg.NLayers; i++)
        {
            var b = w.Blocks[i]; string p = $"transformer.h.{i}.";
            t[p + "ln_1.weight"] = b.Ln1W!; t[p + "ln_1.bias"] = b.Ln1B!;
            t[p + "attn.c_attn.weight"] = cat(new[] { b.Wq, b.Wk, b.Wv }, 0).t().contiguous();
            t[p + "attn.c_attn.bias"] = cat(new[] { b.Bq!, b.Bk!, b.Bv! }, 0);
            t[p + "attn.c_proj.weight"] = b.Wo.t().contiguous(); t[p + "attn.c_proj.bias"] = b.Bo!;
            if (cfg.AttnOnly) continue;
            t[p + "ln_2.weight"] = b.Ln2W!; t[p + "ln_2.bias"] = b.Ln2B!;
            t[p + "mlp.c_fc.weight"] = b.WIn.t().contiguous(); t[p + "mlp.c_fc.bias"] = b.BIn!;
            t[p + "mlp.c_proj.weight"] = b.WOut.t().contiguous(); t[p + "mlp.c_proj.bias"] = b.BOut!;
        }
        if (!ReferenceEquals(w.WU, w.WE)) t["lm_head.weight"] = w.WU;
        return t.ToDictionary(kv => kv.Key, kv => kv.Value.DetachedCpu(ScalarType.Float32));
    }

    /// <summary>config.json for a GPT-2-architecture model.</summary>
    public static JsonObject Gpt2Config(TransformerConfig cfg, int? bos, int? eos) => new()
    {
        ["architectures"] = new JsonArray("GPT2LMHeadModel"), ["model_type"] = "gpt2",
        ["n_embd"] = cfg.DModel, ["n_layer"] = cfg.NLayers, ["n_head"] = cfg.NHeads, ["n_positions"] = cfg.NCtx,
        ["n_inner"] = cfg.DMlp, ["vocab_size"] = cfg.VocabSize, ["activation_function"] = cfg.Activation,
        ["layer_norm_epsilon"] = cfg.NormEps, ["tie_word_embeddings"] = cfg.TiedEmbeddings,
        ["bos_token_id"] = bos, ["eos_token_id"] = eos, ["attn_only"] = cfg.AttnOnly, ["torch_dtype"] = "float32",
    };

    /// <summary>The Hugging Face GPT-NeoX tensors of a model (fused query_key_value interleaved per head).</summary>
    public static Dictionary<string, Tensor> GptNeoXTensors(HookedTransformer model)
    {
        var cfg = model.Config;
        if (cfg.Architecture != "gpt_neox") throw new MechanistException($"only gpt_neox-architecture models can be written in GPT-NeoX layout (this is {cfg.Architecture})");
        var w = model.Weights;
        long d = cfg.DModel, h = cfg.NHeads, dh = cfg.DHead;
        var t = new Dictionary<string, Tensor>
        {
            ["gpt_neox.embed_in.weight"] = w.WE,
            ["gpt_neox.final_layer_norm.weight"] = w.LnFinalW!, ["gpt_neox.final_layer_norm.bias"] = w.LnFinalB!,
        };
        for (int i = 0; i < cfg.NLayers; i++)
        {
            var b = w.Blocks[i]; string p = $"gpt_neox.layers.{i}.";
            t[p + "input_layernorm.weight"] = b.Ln1W!; t[p + "input_layernorm.bias"] = b.Ln1B!;
            t[p + "attention.query_key_value.weight"] = stack(new[] { b.Wq.view(h, dh, d), b.Wk.view(h, dh, d), b.Wv.view(h, dh, d) }, 1).reshape(3 * d, d);
            t[p + "attention.query_key_value.bias"] = stack(new[] { b.Bq!.view(h, dh), b.Bk!.view(h, dh), b.Bv!.view(h, dh) }, 1).reshape(3 * d);
            t[p + "attention.dense.weight"] = b.Wo; t[p + "attention.dense.bias"] = b.Bo!;
            if (cfg.AttnOnly) continue;
            t[p + "post_attention_layernorm.weight"] = b.Ln2W!; t[p + "post_attention_layernorm.bias"] = b.Ln2B!;
            t[p + "mlp.dense_h_to_4h.weight"] = b.WIn; t[p + "mlp.dense_h_to_4h.bias"] = b.BIn!;
            t[p + "mlp.dense_4h_to_h.weight"] = b.WOut; t[p + "mlp.dense_4h_to_h.bias"] = b.BOut!;
        }
        if (!ReferenceEquals(w.WU, w.WE)) t["embed_out.weight"] = w.WU;
        return t.ToDictionary(kv => kv.Key, kv => kv.Value.DetachedCpu(ScalarType.Float32));
    }

    /// <summary>config.json for a GPT-NeoX-architecture model.</summary>
    public static JsonObject GptNeoXConfig(TransformerConfig cfg, int? bos, int? eos) => new()
    {
        ["architectures"] = new JsonArray("GPTNeoXForCausalLM"), ["model_type"] = "gpt_neox",
        ["hidden_size"] = cfg.DModel, ["num_hidden_layers"] = cfg.NLayers, ["num_attention_heads"] = cfg.NHeads,
        ["intermediate_size"] = cfg.DMlp, ["vocab_size"] = cfg.VocabSize, ["max_position_embeddings"] = cfg.NCtx,
        ["hidden_act"] = cfg.Activation, ["layer_norm_eps"] = cfg.NormEps, ["rotary_pct"] = (double)cfg.RotaryDim / cfg.DHead,
        ["rotary_emb_base"] = cfg.RopeTheta, ["use_parallel_residual"] = cfg.ParallelResidual, ["attention_bias"] = cfg.QkvBias,
        ["tie_word_embeddings"] = cfg.TiedEmbeddings, ["bos_token_id"] = bos, ["eos_token_id"] = eos, ["attn_only"] = cfg.AttnOnly,
        ["torch_dtype"] = "float32",
    };

    /// <summary>The Hugging Face Llama tensors of a model.</summary>
    public static Dictionary<string, Tensor> LlamaTensors(HookedTransformer model)
    {
        var cfg = model.Config; var w = model.Weights;
        var t = new Dictionary<string, Tensor> { ["model.embed_tokens.weight"] = w.WE, ["model.norm.weight"] = w.LnFinalW! };
        for (int i = 0; i < cfg.NLayers; i++)
        {
            var b = w.Blocks[i]; string p = $"model.layers.{i}.";
            t[p + "input_layernorm.weight"] = b.Ln1W!; t[p + "post_attention_layernorm.weight"] = b.Ln2W!;
            t[p + "self_attn.q_proj.weight"] = b.Wq; t[p + "self_attn.k_proj.weight"] = b.Wk;
            t[p + "self_attn.v_proj.weight"] = b.Wv; t[p + "self_attn.o_proj.weight"] = b.Wo;
            t[p + "mlp.gate_proj.weight"] = b.WIn; t[p + "mlp.up_proj.weight"] = b.WUp!; t[p + "mlp.down_proj.weight"] = b.WOut;
        }
        if (!ReferenceEquals(w.WU, w.WE)) t["lm_head.weight"] = w.WU;
        return t.ToDictionary(kv => kv.Key, kv => kv.Value.DetachedCpu(ScalarType.Float32));
    }

    /// <summary>config.json for a Llama-architecture model.</summary>
    public static JsonObject LlamaConfig(TransformerConfig cfg, int? bos, int? eos) => new()
    {
        ["architectures"] = new JsonArray("LlamaForCausalLM"), ["model_type"] = "llama",
        ["hidden_size"] = cfg.DModel, ["intermediate_size"] = cfg.DMlp, ["num_hidden_layers"] = cfg.NLayers,
        ["num_attention_heads"] = cfg.NHeads, ["num_key_value_heads"] = cfg.NKvHeads, ["vocab_size"] = cfg.VocabSize,
        ["max_position_embeddings"] = cfg.NCtx, ["rms_norm_eps"] = cfg.NormEps, ["rope_theta"] = cfg.RopeTheta,
        ["hidden_act"] = cfg.Activation, ["tie_word_embeddings"] = cfg.TiedEmbeddings, ["bos_token_id"] = bos, ["eos_token_id"] = eos,
        ["torch_dtype"] = "float32",
    };

    /// <summary>Writes config.json and model.safetensors of a gpt2 or gpt_neox model (each atomically).</summary>
    public static void Write(HookedTransformer model, string dir, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var cfg = model.Config;
        int? bos = cfg.BosTokenId, eos = cfg.EosTokenIds.FirstOrDefault(cfg.BosTokenId ?? 0);
        Directory.CreateDirectory(dir);
        using var scope = NewDisposeScope();
        var (tensors, config) = cfg.Architecture switch
        {
            "gpt2" => (Gpt2Tensors(model), Gpt2Config(cfg, bos, eos)),
            "gpt_neox" => (GptNeoXTensors(model), GptNeoXConfig(cfg, bos, eos)),
            "llama" when !cfg.QkvBias && !cfg.MlpBias && cfg.Norm == NormKind.RmsNorm && cfg.GatedMlp => (LlamaTensors(model), LlamaConfig(cfg, bos, eos)),
            var other => throw new MechanistException($"writing {other} checkpoints is not supported (gpt2, gpt_neox, plain llama)"),
        };
        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        if (metadata != null) foreach (var (k, v) in metadata) meta[k] = v;
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors, meta);
        AtomicFile.WriteText(Path.Combine(dir, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }
}
