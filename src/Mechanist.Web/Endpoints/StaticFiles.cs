using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Mechanist.Web;

/// <summary>The front end, served from the assembly's embedded files (nothing in a request reaches the file system), and the 404 of everything else.</summary>
public static class StaticFiles
{
    static readonly Assembly Self = typeof(StaticFiles).Assembly;

    /// <summary>Maps /, /static/… and the fallback.</summary>
    public static void Map(WebApplication app)
    {
        app.MapGet("/", () => Serve("index.html"));
        app.MapGet("/static/{*file}", (string file) => Serve(file));
        app.MapFallback(async ctx => await Answers.Error(ctx, 404, $"no such endpoint: {ctx.Request.Method} {Answers.Trim(ctx.Request.Path)}"));
    }

    static IResult Serve(string file)
    {
        if (file.Contains("..") || file.Contains('\\')) return Answers.Fail(404, "not found");
        var stream = Self.GetManifestResourceStream("wwwroot/" + file);
        if (stream is null) return Answers.Fail(404, $"not found: {Answers.Trim(file)}");
        string type = Path.GetExtension(file) switch
        {
            ".html" => "text/html; charset=utf-8", ".js" => "text/javascript; charset=utf-8", ".css" => "text/css; charset=utf-8",
            ".svg" => "image/svg+xml", _ => "application/octet-stream",
        };
        return Results.Stream(stream, type);
    }
}
