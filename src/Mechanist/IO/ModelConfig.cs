using System.Text.Json;
using System.Text.Json.Nodes;

namespace Mechanist.IO;

/// <summary>
/// A Hugging Face config.json with typed accessors whose errors name the file and the key.
/// </summary>
public sealed class ModelConfig
{
    /// <summary>Wraps a parsed config; <paramref name="source"/> names it in errors.</summary>
    public ModelConfig(JsonObject json, string source) { Json = json; Source = source; }

    /// <summary>The raw JSON.</summary>
    public JsonObject Json { get; }

    /// <summary>Where the config came from (a path, or a description).</summary>
    public string Source { get; }

    /// <summary>Reads and parses a config.json.</summary>
    public static ModelConfig Load(string path)
    {
        if (!File.Exists(path)) throw new MechanistException($"{path}: file not found");
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) is JsonObject obj ? new ModelConfig(obj, path)
                : throw new InvalidCheckpointException(path, "malformed config: the top level must be a JSON object");
        }
        catch (JsonException e) { throw new InvalidCheckpointException(path, $"malformed config: invalid JSON ({e.Message})"); }
    }

    /// <summary>model_type (e.g. "llama").</summary>
    public string ModelType => String("model_type") ?? throw Missing("model_type");

    /// <summary>Whether the key is present and not null.</summary>
    public bool Has(string key) => Json[key] is not null;

    /// <summary>A string value, or null.</summary>
    public string? String(string key) => Json[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        var other => throw Bad(key, $"expected a string, found {other.ToJsonString()}"),
    };

    /// <summary>A required positive integer.</summary>
    public int Int(string key) => IntOrNull(key) ?? throw Missing(key);

    /// <summary>An integer, or null when absent.</summary>
    public int? IntOrNull(string key) => Json[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out int i) => i,
        JsonValue v when v.TryGetValue(out double d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue => (int)d,
        var other => throw Bad(key, $"expected an integer, found {other.ToJsonString()}"),
    };

    /// <summary>A required positive integer (validated > 0).</summary>
    public int PositiveInt(string key)
    {
        int v = Int(key);
        return v > 0 ? v : throw Bad(key, $"must be positive, found {v}");
    }

    /// <summary>A number, or the default when absent.</summary>
    public double Double(string key, double fallback) => DoubleOrNull(key) ?? fallback;

    /// <summary>A number, or null.</summary>
    public double? DoubleOrNull(string key) => Json[key] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out double d) => d,
        var other => throw Bad(key, $"expected a number, found {other.ToJsonString()}"),
    };

    /// <summary>A boolean, or the default when absent.</summary>
    public bool Bool(string key, bool fallback) => Json[key] switch
    {
        null => fallback,
        JsonValue v when v.TryGetValue(out bool b) => b,
        var other => throw Bad(key, $"expected true or false, found {other.ToJsonString()}"),
    };

    /// <summary>An error about a key.</summary>
    public InvalidCheckpointException Bad(string key, string problem) => new(Source, $"malformed config: '{key}' {problem}");

    InvalidCheckpointException Missing(string key) => new(Source, $"malformed config: required key '{key}' is missing");
}
