using System.Text.Encodings.Web;
using System.Text.Json;

namespace Mechanist.Cli;

/// <summary>JSON settings for CLI output: compact, non-ASCII kept readable.</summary>
public static class JsonOutput
{
    /// <summary>Serializer options used by every <c>--json</c>.</summary>
    public static readonly JsonSerializerOptions Options = new()
    {
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
    };
}
