using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Mechanist.Reporting;

/// <summary>
/// The one JSON setting of every record Mechanist writes (CLI <c>--json</c>, the web API, report files):
/// camelCase names, enums as kebab-case words (<c>"heads-pos"</c>), non-ASCII text kept readable, and
/// NaN / ±∞ written as the strings "NaN", "Infinity" and "-Infinity" (read back by the same setting).
/// </summary>
public static class JsonFormat
{
    /// <summary>Serializer options (shared, read-only).</summary>
    public static readonly JsonSerializerOptions Options = Create();

    static JsonSerializerOptions Create()
    {
        var o = new JsonSerializerOptions
        {
            Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
            PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
            DictionaryKeyPolicy = null,
            NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
            Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
        };
        o.MakeReadOnly(populateMissingResolver: true);
        return o;
    }

    /// <summary>A record as JSON text.</summary>
    public static string Serialize<T>(T value) => JsonSerializer.Serialize(value, Options);

    /// <summary>A record as UTF-8 JSON.</summary>
    public static byte[] SerializeToUtf8Bytes<T>(T value) => JsonSerializer.SerializeToUtf8Bytes(value, Options);
}
