using System.Reflection;
using System.Text.Json;
using Mechanist.Analysis;
using Mechanist.Models;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using static TorchSharp.torch;

namespace Mechanist.Web;

/// <summary>
/// The web workbench: a JSON API over the library's analysis records (no analysis logic here) and the
/// static front end, served by Kestrel.
/// </summary>
public sealed class WorkbenchServer : IAsyncDisposable
{
    readonly WebApplication _app;
    readonly ModelRegistry _models;
    readonly WorkbenchOptions _options;
    readonly SemaphoreSlim _slots;

    /// <summary>JSON settings of every answer.</summary>
    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    WorkbenchServer(WebApplication app, ModelRegistry models, WorkbenchOptions options)
    {
        _app = app; _models = models; _options = options;
        _slots = new SemaphoreSlim(options.MaxConcurrentAnalyses);
    }

    /// <summary>The address the server listens on, once started.</summary>
    public string Url => _app.Urls.First();

    /// <summary>Builds the server over already loaded models (the server owns them).</summary>
    public static WorkbenchServer Create(IEnumerable<HookedTransformer> models, WorkbenchOptions options)
    {
        var registry = new ModelRegistry(models);
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxRequestBytes;
            k.Limits.MaxRequestHeadersTotalSize = 32 * 1024;
            k.AddServerHeader = false;
        });
        builder.WebHost.UseUrls($"http://{(options.Host.Contains(':') ? $"[{options.Host}]" : options.Host)}:{options.Port}");
        builder.Services.Configure<Microsoft.AspNetCore.Http.Json.JsonOptions>(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = Json.PropertyNamingPolicy;
            o.SerializerOptions.NumberHandling = Json.NumberHandling;
        });
        var app = builder.Build();
        var server = new WorkbenchServer(app, registry, options);
        server.Map();
        return server;
    }

    /// <summary>Starts listening.</summary>
    public Task StartAsync(CancellationToken ct = default) => _app.StartAsync(ct);

    /// <summary>Runs until the token is cancelled.</summary>
    public async Task RunAsync(CancellationToken ct)
    {
        await _app.StartAsync(ct);
        try { await Task.Delay(Timeout.Infinite, ct); } catch (OperationCanceledException) { }
        await _app.StopAsync(CancellationToken.None);
    }

    void Map()
    {
        _app.Use(async (ctx, next) =>
        {
            ctx.Response.Headers["X-Content-Type-Options"] = "nosniff";
            ctx.Response.Headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:";
            try { await next(ctx); }
            catch (BadHttpRequestException e) when (!ctx.Response.HasStarted)
            {
                await Error(ctx, e.StatusCode, e.StatusCode == 413 ? $"request body too large (limit {_options.MaxRequestBytes} bytes)" : e.Message);
            }
        });

        _app.MapGet("/api/models", () => Results.Json(_models.Names.Select(n =>
        {
            var m = _models.Get(n); var c = m.Config;
            return new
            {
                name = n, architecture = c.Architecture, layers = c.NLayers, dModel = c.DModel, heads = c.NHeads, kvHeads = c.NKvHeads,
                dHead = c.DHead, dMlp = c.AttnOnly ? 0 : c.DMlp, vocab = c.VocabSize, context = c.NCtx, parameters = m.Weights.ParameterCount,
                hooks = m.HookPointShapes().Select(h => new { name = h.Name, shape = h.Shape }),
            };
        }), Json));

        Post<PromptRequest>("/api/run", (r, m) =>
        {
            using var scope = NewDisposeScope();
            var tokens = Tokens(m, r.Prompt);
            var logits = m.Run(tokens)[0, -1].to(ScalarType.Float32);
            var probs = logits.softmax(-1);
            int k = Math.Clamp(r.TopK ?? 10, 1, 50);
            var (top, ids) = probs.topk(k);
            var topIds = ids.data<long>().ToArray();
            var names = TokenText.Of(m, topIds);
            var promptIds = tokens[0].data<long>().ToArray();
            return new
            {
                tokens = TokenText.Of(m, promptIds), ids = promptIds,
                bos = m.Tokenizer?.BosId is { } b && promptIds.Length > 0 && promptIds[0] == b,
                top = topIds.Select((id, i) => new { id, token = names[i], prob = top[i].item<float>(), logit = logits[id].item<float>() }).ToArray(),
            };
        });

        Post<PromptRequest>("/api/attention", (r, m) =>
        {
            using var scope = NewDisposeScope();
            var tokens = Tokens(m, r.Prompt);
            var (_, cache) = m.RunWithCache(tokens, n => n.EndsWith("hook_pattern"));
            using (cache)
            {
                var layers = Enumerable.Range(0, m.Config.NLayers).Select(l =>
                {
                    var p = cache["pattern", l][0].to(ScalarType.Float32); // [head, q, k]
                    int h = (int)p.shape[0], n = (int)p.shape[1];
                    var data = p.data<float>().ToArray();
                    return Enumerable.Range(0, h).Select(hh => Enumerable.Range(0, n).Select(q => data.AsSpan(hh * n * n + q * n, n).ToArray().Select(v => MathF.Round(v, 4)).ToArray()).ToArray()).ToArray();
                }).ToArray();
                return new { tokens = TokenText.Of(m, tokens[0].data<long>().ToArray()), layers };
            }
        });

        Post<PromptRequest>("/api/lens", (r, m) =>
        {
            using var tokens = Tokens(m, r.Prompt);
            long? target = string.IsNullOrEmpty(r.Target) ? null : TokenText.AnswerId(m, r.Target);
            return LogitLens.Run(m, tokens, target, Math.Clamp(r.TopK ?? 3, 1, 10));
        });

        Post<PromptRequest>("/api/microscope", (r, m) =>
        {
            using (Tokens(m, r.Prompt)) { }
            return _models.Baseline(ModelName(r.Model), m).For(m, r.Prompt!);
        });

        Post<ModelRequest>("/api/heads", (r, m) => _models.Heads(ModelName(r.Model), m));

        Post<PatchRequest>("/api/patch", (r, m) =>
        {
            using var clean = Tokens(m, r.Clean, "clean");
            using var corrupt = Tokens(m, r.Corrupt, "corrupt");
            if (string.IsNullOrEmpty(r.Answer)) throw new MechanistException("'answer' is required");
            long a = TokenText.AnswerId(m, r.Answer);
            PatchMetric metric = string.IsNullOrEmpty(r.Wrong) ? new PatchMetric.Probability(a) : new PatchMetric.LogitDiff(a, TokenText.AnswerId(m, r.Wrong));
            var target = (r.What ?? "resid") switch
            {
                "resid" => PatchTarget.Resid, "attn" => PatchTarget.AttnOut, "mlp" => PatchTarget.MlpOut, "heads" => PatchTarget.Heads,
                "head-qkv" => PatchTarget.HeadQkv,
                var other => throw new MechanistException($"'what' must be resid, attn, mlp, heads or head-qkv (got '{Trim(other)}')"),
            };
            if (m.Config.AttnOnly && target == PatchTarget.MlpOut) throw new MechanistException("this model has no MLPs");
            return ActivationPatching.Run(m, clean, corrupt, metric, target);
        });

        _app.MapGet("/", () => Static("index.html"));
        _app.MapGet("/static/{*file}", (string file) => Static(file));
        _app.MapFallback(async ctx => await Error(ctx, 404, $"no such endpoint: {ctx.Request.Method} {Trim(ctx.Request.Path)}"));
    }

    string ModelName(string? requested) => string.IsNullOrEmpty(requested) ? _models.Names.First() : requested;

    Tensor Tokens(HookedTransformer m, string? prompt, string field = "prompt")
    {
        if (string.IsNullOrEmpty(prompt)) throw new MechanistException($"'{field}' is required");
        if (prompt.Length > _options.MaxPromptChars) throw new MechanistException($"'{field}' is {prompt.Length} characters; the limit is {_options.MaxPromptChars}");
        var tokens = m.ToTokens(prompt);
        if (tokens.shape[1] > m.Config.NCtx)
        {
            long n = tokens.shape[1]; tokens.Dispose();
            throw new MechanistException($"'{field}' is {n} tokens; this model's context is {m.Config.NCtx}");
        }
        return tokens;
    }

    void Post<T>(string path, Func<T, HookedTransformer, object> handler) where T : class
    {
        _app.MapPost(path, async (HttpContext ctx) =>
        {
            T? request;
            try
            {
                if (ctx.Request.ContentType?.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) != true)
                    return Fail(415, "send JSON (Content-Type: application/json)");
                request = await JsonSerializer.DeserializeAsync<T>(ctx.Request.Body, Json, ctx.RequestAborted);
            }
            catch (JsonException e) { return Fail(400, $"malformed JSON: {e.Message}"); }
            catch (BadHttpRequestException e) { return Fail(e.StatusCode, e.StatusCode == 413 ? $"request body too large (limit {_options.MaxRequestBytes} bytes)" : e.Message); }
            if (request is null) return Fail(400, "empty request");
            if (!await _slots.WaitAsync(_options.QueueTimeout, ctx.RequestAborted)) return Fail(503, "the server is busy with other analyses; try again");
            try
            {
                var model = _models.Get((string?)typeof(T).GetProperty("Model")!.GetValue(request));
                // Serialised here, inside the slot and the error handling, while the tensors behind lazy results live.
                var bytes = await Task.Run(() => JsonSerializer.SerializeToUtf8Bytes(handler(request, model), Json), ctx.RequestAborted);
                return Results.Bytes(bytes, "application/json; charset=utf-8");
            }
            catch (MechanistException e) { return Fail(400, e.Message); }
            catch (Exception e) when (e is not OperationCanceledException) { return Fail(500, $"internal error: {e.GetType().Name}"); }
            finally { _slots.Release(); }
        });
    }

    static IResult Fail(int status, string message) => Results.Json(new ErrorResponse(message), Json, statusCode: status);

    static Task Error(HttpContext ctx, int status, string message)
    {
        ctx.Response.StatusCode = status;
        return ctx.Response.WriteAsJsonAsync(new ErrorResponse(message), Json);
    }

    static string Trim(string? s) => s is null ? "" : s.Length > 80 ? s[..80] + "…" : s;

    static readonly Assembly Self = typeof(WorkbenchServer).Assembly;

    static IResult Static(string file)
    {
        // Only names of embedded files resolve: nothing in a request reaches the file system.
        if (file.Contains("..") || file.Contains('\\')) return Fail(404, "not found");
        var stream = Self.GetManifestResourceStream("wwwroot/" + file);
        if (stream is null) return Fail(404, $"not found: {Trim(file)}");
        string type = Path.GetExtension(file) switch
        {
            ".html" => "text/html; charset=utf-8", ".js" => "text/javascript; charset=utf-8", ".css" => "text/css; charset=utf-8",
            ".svg" => "image/svg+xml", _ => "application/octet-stream",
        };
        return Results.Stream(stream, type);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await _app.DisposeAsync();
        _models.Dispose();
        _slots.Dispose();
    }
}
