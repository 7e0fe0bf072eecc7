using Mechanist.IO;

namespace Mechanist.Models.Architectures;

/// <summary>
/// How one Hugging Face architecture differs: which config keys mean what, and which checkpoint
/// tensors fill which weights.
/// </summary>
public interface IArchitecture
{
    /// <summary>The config.json model_type values this file handles.</summary>
    IReadOnlyList<string> ModelTypes { get; }

    /// <summary>Maps config.json onto the common configuration.</summary>
    TransformerConfig ReadConfig(ModelConfig config);

    /// <summary>Reads every weight; <paramref name="r"/> checks shapes and unused tensors.</summary>
    TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg);
}

/// <summary>The architectures Mechanist runs, by model_type.</summary>
public static class ArchitectureRegistry
{
    static readonly IArchitecture[] All =
    {
        new Gpt2Architecture(), new GptNeoXArchitecture(), new LlamaArchitecture(), new GemmaArchitecture(),
        new Phi3Architecture(), new OlmoArchitecture(), new StarCoder2Architecture(), new StableLmArchitecture(), new PhiArchitecture(),
        new OptArchitecture(), new GptJArchitecture(), new CohereArchitecture(), new FalconArchitecture(), new Olmo2Architecture(), new BloomArchitecture(), new MixtralArchitecture(), new Qwen2MoeArchitecture(), new BertArchitecture(),
    };

    /// <summary>Every supported model_type.</summary>
    public static IEnumerable<string> SupportedTypes => All.SelectMany(a => a.ModelTypes);

    /// <summary>The architecture for a config, or a clear error listing the supported ones.</summary>
    public static IArchitecture For(ModelConfig config)
    {
        string type = config.ModelType;
        if (HookedEncoderDecoder.Handles(config))
            throw new MechanistException($"{config.Source}: '{type}' is an encoder-decoder model; 'run' (with --tokens-file for decoder_input_ids), 'generate', 'hooks', 'lens', 'patch' and 'serve' take it; this command needs a decoder-only or encoder model");
        return All.FirstOrDefault(a => a.ModelTypes.Contains(type))
            ?? throw new MechanistException($"{config.Source}: model_type '{type}' is not supported (supported: {string.Join(", ", SupportedTypes)})");
    }
}

/// <summary>Config conventions shared by most architectures.</summary>
internal static class ConfigConventions
{
    public static IReadOnlyList<int> EosIds(ModelConfig c) => c.Json["eos_token_id"] switch
    {
        System.Text.Json.Nodes.JsonArray a => a.Select(x => x!.GetValue<int>()).ToArray(),
        null => Array.Empty<int>(),
        _ => new[] { c.Int("eos_token_id") },
    };

    public static RopeScaling? RopeScaling(ModelConfig c)
    {
        if (c.Json["rope_scaling"] is not System.Text.Json.Nodes.JsonObject rs) return null;
        string type = (rs["rope_type"] ?? rs["type"])?.GetValue<string>() ?? "default";
        double F(string k, double d) => rs[k] is System.Text.Json.Nodes.JsonValue v && v.TryGetValue(out double x) ? x : d;
        return type switch
        {
            "default" => null,
            "linear" => new RopeScaling("linear", F("factor", 1)),
            "llama3" => new RopeScaling("llama3", F("factor", 8), F("low_freq_factor", 1), F("high_freq_factor", 4), (int)F("original_max_position_embeddings", 8192)),
            _ => throw c.Bad("rope_scaling", $"type '{type}' is not supported (supported: linear, llama3)"),
        };
    }

    public static void CheckHeads(ModelConfig c, int heads, int kvHeads)
    {
        if (heads % kvHeads != 0) throw c.Bad("num_key_value_heads", $"{kvHeads} does not divide the {heads} attention heads");
    }
}
