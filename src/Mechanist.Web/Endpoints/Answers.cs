using System.Text.Json;
using Mechanist.Reporting;
using Microsoft.AspNetCore.Http;

namespace Mechanist.Web;

/// <summary>How the workbench answers: JSON records in the library's one setting, and JSON errors.</summary>
public static class Answers
{
    /// <summary>JSON settings of every answer.</summary>
    public static JsonSerializerOptions Json => JsonFormat.Options;

    /// <summary>An error answer {"error": message}, with the server's absolute paths cut to their last name.</summary>
    public static IResult Fail(int status, string message) => Results.Json(new ErrorResponse(Redact(message)), Json, statusCode: status);

    static readonly System.Text.RegularExpressions.Regex AbsolutePath = new(@"(?<![\w.:/])/(?:[^\s'""/:]+/)+(?=[^\s'""/:]+)", System.Text.RegularExpressions.RegexOptions.Compiled);

    /// <summary>
    /// A library message as a browser may see it: every absolute path reduced to its file or folder name (the library names the
    /// files it read, which on a server are where it is installed or where its data lives).
    /// </summary>
    public static string Redact(string message) => AbsolutePath.Replace(message, "");

    /// <summary>Writes an error answer from middleware.</summary>
    public static Task Error(HttpContext ctx, int status, string message)
    {
        ctx.Response.StatusCode = status;
        return ctx.Response.WriteAsJsonAsync(new ErrorResponse(Redact(message)), Json);
    }

    /// <summary>A value quoted back in an error, cut to 80 characters.</summary>
    public static string Trim(string? s) => s is null ? "" : s.Length > 80 ? s[..80] + "…" : s;

    /// <summary>A request's JSON body, or the error answer: 415 for another content type, 400 for malformed or empty JSON, 413 for too large.</summary>
    public static async Task<(T? Request, IResult? Failure)> ReadJson<T>(HttpContext ctx, long maxRequestBytes) where T : class
    {
        if (ctx.Request.ContentType?.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) != true)
            return (null, Fail(415, "send JSON (Content-Type: application/json)"));
        try
        {
            var request = await JsonSerializer.DeserializeAsync<T>(ctx.Request.Body, Json, ctx.RequestAborted);
            return request is null ? (null, Fail(400, "empty request")) : (request, null);
        }
        catch (JsonException e) { return (null, Fail(400, $"malformed JSON: {e.Message}")); }
        catch (BadHttpRequestException e) { return (null, Fail(e.StatusCode, e.StatusCode == 413 ? $"request body too large (limit {maxRequestBytes} bytes)" : e.Message)); }
    }
}
