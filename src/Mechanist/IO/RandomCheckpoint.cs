using Mechanist.Tensors;
using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Mechanist.IO;

/// <summary>
/// Hugging Face model folders with random weights in the shapes of real billion-parameter models, written
/// tensor by tensor (never the whole model in memory) into sharded safetensors with an index, as the hub
/// ships them. For benchmarks of loading, memory and speed at real sizes without downloading a checkpoint.
/// </summary>
public static class RandomCheckpoint
{
    /// <summary>A model's config.json and its tensors (name, shape, whether it is a norm weight).</summary>
    public sealed record Spec(string Name, JsonObject Config, IReadOnlyList<(string Name, long[] Shape, bool Norm)> Tensors)
    {
        /// <summary>Number of parameters.</summary>
        public long Parameters => Tensors.Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b));
    }

    /// <summary>Llama-3.2-1B's configuration (16 layers, d_model 2048, 32 query / 8 key-value heads, SwiGLU 8192, vocab 128,256, tied embeddings, llama3 rope scaling): 1.24 B parameters.</summary>
    public static Spec Llama32_1B()
    {
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"), ["model_type"] = "llama",
            ["hidden_size"] = 2048, ["intermediate_size"] = 8192, ["num_hidden_layers"] = 16,
            ["num_attention_heads"] = 32, ["num_key_value_heads"] = 8, ["head_dim"] = 64, ["vocab_size"] = 128256,
            ["max_position_embeddings"] = 131072, ["rms_norm_eps"] = 1e-5, ["rope_theta"] = 500000.0,
            ["rope_scaling"] = new JsonObject
            {
                ["factor"] = 32.0, ["high_freq_factor"] = 4.0, ["low_freq_factor"] = 1.0,
                ["original_max_position_embeddings"] = 8192, ["rope_type"] = "llama3",
            },
            ["hidden_act"] = "silu", ["tie_word_embeddings"] = true, ["bos_token_id"] = 128000, ["eos_token_id"] = 128001,
            ["attention_bias"] = false, ["mlp_bias"] = false, ["torch_dtype"] = "bfloat16",
        };
        return new Spec("Llama-3.2-1B-shaped", config, DecoderTensors(2048, 16, 32 * 64, 8 * 64, 8192, 128256, gemmaNorms: false));
    }

    /// <summary>Gemma-2-2B's configuration (26 layers, d_model 2304, 8 query / 4 key-value heads of 256, GeGLU 9216, vocab 256,000, sandwich norms, soft-capping, sliding window): 2.61 B parameters.</summary>
    public static Spec Gemma2_2B()
    {
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("Gemma2ForCausalLM"), ["model_type"] = "gemma2",
            ["hidden_size"] = 2304, ["intermediate_size"] = 9216, ["num_hidden_layers"] = 26,
            ["num_attention_heads"] = 8, ["num_key_value_heads"] = 4, ["head_dim"] = 256, ["vocab_size"] = 256000,
            ["max_position_embeddings"] = 8192, ["rms_norm_eps"] = 1e-6, ["rope_theta"] = 10000.0,
            ["hidden_activation"] = "gelu_pytorch_tanh", ["query_pre_attn_scalar"] = 256, ["sliding_window"] = 4096,
            ["attn_logit_softcapping"] = 50.0, ["final_logit_softcapping"] = 30.0, ["attention_bias"] = false,
            ["bos_token_id"] = 2, ["eos_token_id"] = 1, ["pad_token_id"] = 0, ["torch_dtype"] = "bfloat16",
        };
        return new Spec("Gemma-2-2B-shaped", config, DecoderTensors(2304, 26, 8 * 256, 4 * 256, 9216, 256000, gemmaNorms: true));
    }

    static List<(string, long[], bool)> DecoderTensors(long d, int layers, long q, long kv, long mlp, long vocab, bool gemmaNorms)
    {
        var t = new List<(string, long[], bool)> { ("model.embed_tokens.weight", new[] { vocab, d }, false), ("model.norm.weight", new[] { d }, true) };
        for (int i = 0; i < layers; i++)
        {
            string p = $"model.layers.{i}.";
            t.Add((p + "input_layernorm.weight", new[] { d }, true));
            t.Add((p + "post_attention_layernorm.weight", new[] { d }, true));
            if (gemmaNorms)
            {
                t.Add((p + "pre_feedforward_layernorm.weight", new[] { d }, true));
                t.Add((p + "post_feedforward_layernorm.weight", new[] { d }, true));
            }
            t.Add((p + "self_attn.q_proj.weight", new[] { q, d }, false));
            t.Add((p + "self_attn.k_proj.weight", new[] { kv, d }, false));
            t.Add((p + "self_attn.v_proj.weight", new[] { kv, d }, false));
            t.Add((p + "self_attn.o_proj.weight", new[] { d, q }, false));
            t.Add((p + "mlp.gate_proj.weight", new[] { mlp, d }, false));
            t.Add((p + "mlp.up_proj.weight", new[] { mlp, d }, false));
            t.Add((p + "mlp.down_proj.weight", new[] { d, mlp }, false));
        }
        return t;
    }

    /// <summary>
    /// Writes config.json, model-0000k-of-0000n.safetensors shards (at most <paramref name="shardBytes"/> each) and
    /// model.safetensors.index.json. Weights ~ N(0, 0.02²) in <paramref name="dtype"/>; norm weights are 1 (Llama) or
    /// 0 (Gemma, whose norms scale by 1 + w), so activations keep a sane scale through every layer.
    /// </summary>
    public static void Write(Spec spec, string dir, TensorDType dtype = TensorDType.BF16, long shardBytes = 2L << 30, long seed = 0)
    {
        Directory.CreateDirectory(dir);
        bool gemma = (string?)spec.Config["model_type"] is "gemma" or "gemma2";
        using var gen = new TorchSharp.torch.Generator((ulong)seed);
        var lazies = spec.Tensors.Select(t => new SafetensorsWriter.LazyTensor(t.Name, dtype, t.Shape, () =>
        {
            if (t.Norm) return gemma ? zeros(t.Shape, dtype.ToTorch()) : ones(t.Shape, dtype.ToTorch());
            using var r = randn(t.Shape, generator: gen);
            return r.MulInPlace(0.02).to(dtype.ToTorch());
        })).ToList();

        var shards = new List<List<SafetensorsWriter.LazyTensor>> { new() };
        long inShard = 0;
        foreach (var l in lazies)
        {
            if (inShard > 0 && inShard + l.Bytes > shardBytes) { shards.Add(new()); inShard = 0; }
            shards[^1].Add(l);
            inShard += l.Bytes;
        }
        var weightMap = new JsonObject();
        for (int s = 0; s < shards.Count; s++)
        {
            string file = $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
            SafetensorsWriter.WriteLazy(Path.Combine(dir, file), shards[s], new Dictionary<string, string> { ["format"] = "pt" });
            foreach (var l in shards[s]) weightMap[l.Name] = file;
        }
        var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = lazies.Sum(l => l.Bytes) }, ["weight_map"] = weightMap };
        var indent = new JsonSerializerOptions { WriteIndented = true };
        AtomicFile.WriteText(Path.Combine(dir, "model.safetensors.index.json"), index.ToJsonString(indent) + "\n");
        var config = (JsonObject)spec.Config.DeepClone();
        config["torch_dtype"] = dtype switch { TensorDType.BF16 => "bfloat16", TensorDType.F16 => "float16", _ => "float32" };
        AtomicFile.WriteText(Path.Combine(dir, "config.json"), config.ToJsonString(indent) + "\n");
    }
}
