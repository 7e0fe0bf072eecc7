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
        return t.ToDictionary(kv => kv.Key, kv => kv.Value.detach().to(ScalarType.Float32).cpu());
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

    /// <summary>Writes config.json and model.safetensors (each atomically).</summary>
    public static void WriteGpt2(HookedTransformer model, string dir, IReadOnlyDictionary<string, string>? metadata = null)
    {
        Directory.CreateDirectory(dir);
        using var scope = NewDisposeScope();
        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        if (metadata != null) foreach (var (k, v) in metadata) meta[k] = v;
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), Gpt2Tensors(model), meta);
        AtomicFile.WriteText(Path.Combine(dir, "config.json"),
            Gpt2Config(model.Config, model.Config.BosTokenId, model.Config.EosTokenIds.FirstOrDefault(model.Config.BosTokenId ?? 0))
                .ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }
}
