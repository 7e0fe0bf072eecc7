using System.Reflection;
using System.Text.Json;
using Mechanist.Analysis;
using Mechanist.Models;
using Mechanist.Reporting;
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
    readonly ListenAddress _listen;
    readonly SemaphoreSlim _slots;
    readonly List<Features.FeatureStore> _stores;

    /// <summary>JSON settings of every answer: the library's one setting.</summary>
    public static JsonSerializerOptions Json => JsonFormat.Options;

    WorkbenchServer(WebApplication app, ModelRegistry models, WorkbenchOptions options, ListenAddress listen)
    {
        _app = app; _models = models; _options = options; _listen = listen;
        _stores = options.FeatureStores.Select(Features.FeatureStore.Open).ToList();
        GraphDir = options.GraphDir ?? GraphFolders.PrivateDefault();
        Directory.CreateDirectory(GraphDir);
        _slots = new SemaphoreSlim(options.MaxConcurrentAnalyses);
        Loopback = listen.Loopback;
        AccessToken = Loopback ? null : options.AccessToken ?? Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(24)).ToLowerInvariant();
    }

    /// <summary>Where traced graphs and their saved states live.</summary>
    public string GraphDir { get; }

    /// <summary>Whether the server is bound to loopback only (then no token is needed).</summary>
    public bool Loopback { get; }

    /// <summary>The token every request must carry when bound beyond loopback (header "Authorization: Bearer …", query "token", or the cookie the page sets); null on loopback.</summary>
    public string? AccessToken { get; }

    /// <summary>The address to open in a browser (with the token when one is needed).</summary>
    public string BrowserUrl => AccessToken is null ? Url : $"{Url}/?token={AccessToken}";

    const string TokenCookie = "mechanist_token";

    /// <summary>
    /// Host names the Host header may carry: loopback names on loopback (a page elsewhere that rebinds its DNS name to
    /// 127.0.0.1 still sends its own name, and is refused), plus the bound address and the configured names otherwise.
    /// </summary>
    bool HostAllowed(HostString host)
    {
        string name = host.Host.Trim('[', ']');
        if (name.Length == 0) return false;
        if (name.Equals("localhost", StringComparison.OrdinalIgnoreCase) || (System.Net.IPAddress.TryParse(name, out var ip) && System.Net.IPAddress.IsLoopback(ip))) return true;
        if (Loopback) return false;
        if (_listen.Address is { } bound && System.Net.IPAddress.TryParse(name, out var asked) && (asked.IsIPv4MappedToIPv6 ? asked.MapToIPv4() : asked).Equals(bound)) return true;
        if (_options.AllowedHosts.Any(h => h.Equals(name, StringComparison.OrdinalIgnoreCase))) return true;
        // Bound to every interface: the machine's own addresses and name.
        if (_listen.AllInterfaces)
        {
            if (name.Equals(System.Net.Dns.GetHostName(), StringComparison.OrdinalIgnoreCase)) return true;
            if (System.Net.IPAddress.TryParse(name, out var addr))
                return System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces()
                    .SelectMany(i => i.GetIPProperties().UnicastAddresses).Any(u => u.Address.Equals(addr));
        }
        return false;
    }

    bool TokenValid(HttpContext ctx)
    {
        if (AccessToken is null) return true;
        string? given = ctx.Request.Headers.Authorization.ToString() is { } auth && auth.StartsWith("Bearer ", StringComparison.Ordinal) ? auth[7..]
            : ctx.Request.Query.TryGetValue("token", out var q) ? q.ToString()
            : ctx.Request.Cookies.TryGetValue(TokenCookie, out var c) ? c : null;
        return given is not null && System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(
            System.Text.Encoding.UTF8.GetBytes(given), System.Text.Encoding.UTF8.GetBytes(AccessToken));
    }

    /// <summary>The address the server listens on, once started.</summary>
    public string Url => _app.Urls.First();

    /// <summary>Builds the server over already loaded decoder-only or encoder models (the server owns them).</summary>
    public static WorkbenchServer Create(IEnumerable<HookedTransformer> models, WorkbenchOptions options) =>
        Create(models.Select(m => (ServedModel)m), options);

    /// <summary>Builds the server over already loaded models of any kind, the first being the default (the server owns them).</summary>
    public static WorkbenchServer Create(IEnumerable<ServedModel> models, WorkbenchOptions options)
    {
        var listen = ListenAddress.Parse(options.Host);
        var registry = new ModelRegistry(models) { TranscoderDirs = options.Transcoders };
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxRequestBytes;
            k.Limits.MaxRequestHeadersTotalSize = 32 * 1024;
            k.AddServerHeader = false;
            // Exactly the address given: Kestrel's URL form binds every interface for a host it cannot parse.
            if (listen.Address is { } ip) k.Listen(ip, options.Port);
            else if (options.Port == 0) k.Listen(System.Net.IPAddress.Loopback, 0);
            else k.ListenLocalhost(options.Port);
        });
        var app = builder.Build();
        var server = new WorkbenchServer(app, registry, options, listen);
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
            if (!HostAllowed(ctx.Request.Host)) { await Error(ctx, 421, $"this server does not answer for host '{Trim(ctx.Request.Host.Host)}'"); return; }
            if (!TokenValid(ctx)) { await Error(ctx, 401, "this workbench needs its access token (printed when it started): open the URL with ?token=…"); return; }
            if (WorkbenchSecurity.CrossOriginWrite(ctx.Request) is { } refused) { await Error(ctx, 403, refused); return; }
            if (AccessToken is not null && ctx.Request.Query.ContainsKey("token"))
                ctx.Response.Cookies.Append(TokenCookie, AccessToken, new CookieOptions { HttpOnly = true, SameSite = SameSiteMode.Strict, Path = "/" });
            ctx.Response.Headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:";
            try { await next(ctx); }
            catch (BadHttpRequestException e) when (!ctx.Response.HasStarted)
            {
                await Error(ctx, e.StatusCode, e.StatusCode == 413 ? $"request body too large (limit {_options.MaxRequestBytes} bytes)" : e.Message);
            }
        });

        _app.MapGet("/api/models", () => Results.Json(_models.Names.Select(_models.Summary), Json));
        _app.MapGet("/api/patch-targets", () => Results.Json(PatchTargets.Names, Json));

        Post<PromptRequest>("/api/run", (r, m) =>
        {
            using var tokens = Tokens(m, r.Prompt);
            return NextTokens.Run(m, tokens, Math.Clamp(r.TopK ?? 10, 1, 50));
        }, (r, t5) =>
        {
            using var input = InputIds(t5, r.Prompt);
            using var decoder = DecoderIds(t5, r.Decoder);
            return EncoderDecoderAnalyses.Predict(t5, input, decoder, Math.Clamp(r.TopK ?? 10, 1, 50));
        });

        Post<AttentionRequest>("/api/attention", (r, m) =>
        {
            using var tokens = Tokens(m, r.Prompt);
            return AttentionPatterns.Compute(m, tokens, r.Layers is { Length: > 0 } l ? l : null, r.Heads is { Length: > 0 } h ? h : null, r.Thumbnail);
        }, (r, t5) =>
        {
            using var input = InputIds(t5, r.Prompt);
            using var decoder = DecoderIds(t5, r.Decoder);
            return EncoderDecoderAnalyses.Attention(t5, input, decoder, r.Layers is { Length: > 0 } l ? l : null, r.Heads is { Length: > 0 } h ? h : null, r.Thumbnail);
        });

        Post<PromptRequest>("/api/lens", (r, m) =>
        {
            using var tokens = Tokens(m, r.Prompt);
            long? target = string.IsNullOrEmpty(r.Target) ? null : TokenText.AnswerId(m, r.Target);
            return LogitLens.Run(m, tokens, target, Math.Clamp(r.TopK ?? 3, 1, 10));
        }, (r, t5) =>
        {
            using var input = InputIds(t5, r.Prompt);
            using var decoder = DecoderIds(t5, r.Decoder);
            long? target = string.IsNullOrEmpty(r.Target) ? null : t5.AnswerId(r.Target);
            return EncoderDecoderAnalyses.Lens(t5, input, decoder, null, target, Math.Clamp(r.TopK ?? 3, 1, 10));
        });

        Post<PromptRequest>("/api/microscope", (r, m) =>
        {
            using (Tokens(m, r.Prompt)) { }
            return _models.Baseline(ModelName(r.Model), m).For(m, r.Prompt!);
        });

        Post<PromptRequest>("/api/experts", (r, m) =>
        {
            using var tokens = Tokens(m, r.Prompt);
            return ExpertRoutingAnalysis.Run(m, tokens);
        });

        Post<ModelRequest>("/api/heads", (r, m) => _models.Heads(ModelName(r.Model), m));

        PostCancellable<PatchRequest>("/api/patch", (r, m, ct) =>
        {
            using var clean = Tokens(m, r.Clean, "clean");
            using var corrupt = Tokens(m, r.Corrupt, "corrupt");
            if (string.IsNullOrEmpty(r.Answer)) throw new MechanistException("'answer' is required");
            var method = (r.Method ?? "exact") switch
            {
                "exact" => PatchMethods.Exact, "attribution" => PatchMethods.Attribution, "both" => PatchMethods.Both,
                var other => throw new MechanistException($"'method' must be exact, attribution or both (got '{Trim(other)}')"),
            };
            return PatchingExperiment.Run(m, clean, corrupt, r.Answer, r.Wrong, r.Metric, PatchTargets.Parse(r.What ?? "resid"), method, r.Position, ct);
        }, (r, t5, ct) =>
        {
            if (r.What is { Length: > 0 } what && what != "resid") throw new MechanistException($"an encoder-decoder patches the residual stream only ('what': resid; got '{Trim(what)}')");
            if (r.Method is { Length: > 0 } how && how != "exact") throw new MechanistException($"an encoder-decoder is patched exactly only ('method': exact; got '{Trim(how)}')");
            if (r.Position is not null) throw new MechanistException("an encoder-decoder's metric reads the decoder's last position: give 'decoder' instead of 'position'");
            if (r.Metric is { Length: > 0 } metric && metric != "logit-diff") throw new MechanistException($"an encoder-decoder's patching metric is the answer's logit, or logit-diff with a wrong answer (got '{Trim(metric)}')");
            if (string.IsNullOrEmpty(r.Answer)) throw new MechanistException("'answer' is required");
            using var clean = InputIds(t5, r.Clean, "clean");
            using var corrupt = InputIds(t5, r.Corrupt, "corrupt");
            using var decoder = DecoderIds(t5, r.Decoder);
            long? wrong = string.IsNullOrEmpty(r.Wrong) ? null : t5.AnswerId(r.Wrong);
            return new PatchingReport(EncoderDecoderAnalyses.Patch(t5, clean, corrupt, decoder, t5.AnswerId(r.Answer), wrong, ct), null);
        });

        MapFeatures();
        MapGraphs();

        _app.MapGet("/", () => Static("index.html"));
        _app.MapGet("/static/{*file}", (string file) => Static(file));
        _app.MapFallback(async ctx => await Error(ctx, 404, $"no such endpoint: {ctx.Request.Method} {Trim(ctx.Request.Path)}"));
    }

    void MapFeatures()
    {
        _app.MapGet("/api/features", () => Results.Json(_stores.Select((st, i) =>
            new FeatureStoreSummary(i, Path.GetFileName(st.Info.Dictionary.TrimEnd('/', '\\')), st.Info)), Json));
        _app.MapGet("/api/features/{id:int}/search", (HttpContext ctx, int id, string? q, int? layer, int? limit) =>
            Query(ctx, id, st => st.Search(q is { Length: > 200 } ? q[..200] : q, Math.Clamp(limit ?? 50, 1, 200), layer)));
        _app.MapGet("/api/features/{id:int}/{layer:int}/{feature:int}", (HttpContext ctx, int id, int layer, int feature) =>
            Query(ctx, id, st => st.Dashboard(layer, feature)));
        _app.MapGet("/api/features/{id:int}/labels", (HttpContext ctx, int id, string? ids) =>
            Query(ctx, id, st => st.LabelsOf((ids ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries).Take(5000)
                .Select(x => x.Split(':')).Where(x => x.Length == 2 && int.TryParse(x[0], out _) && int.TryParse(x[1], out _))
                .Select(x => (int.Parse(x[0]), int.Parse(x[1]))).ToList())));
        _app.MapPost("/api/features/{id:int}/{layer:int}/{feature:int}/label", async (HttpContext ctx, int id, int layer, int feature) =>
        {
            var (request, failure) = await ReadJson<LabelRequest>(ctx);
            if (request is null) return failure!;
            return await Query(ctx, id, st => { st.SetLabel(layer, feature, request.Label); return st.Dashboard(layer, feature).Summary; });
        });
    }

    static readonly System.Text.RegularExpressions.Regex Slug = new("^[A-Za-z0-9_-]{1,80}$");

    void MapGraphs()
    {
        _app.MapGet("/api/graphs", () =>
        {
            string? index = GraphFolders.Existing(GraphDir, "graph-metadata.json");
            return Results.Text(index is null ? "{\"graphs\":[]}" : File.ReadAllText(index), "application/json; charset=utf-8");
        });
        _app.MapGet("/api/graphs/{slug}", (string slug) =>
        {
            if (!Slug.IsMatch(slug)) return Fail(404, "no such graph");
            string? path = GraphFolders.Existing(GraphDir, slug + ".json");
            return path is null ? Fail(404, $"no graph '{slug}'")
                : Results.Stream(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete), "application/json; charset=utf-8");
        });
        _app.MapPost("/api/graphs/{slug}/state", async (HttpContext ctx, string slug) =>
        {
            if (!Slug.IsMatch(slug)) return Fail(404, "no such graph");
            if (GraphFolders.Existing(GraphDir, slug + ".json") is null) return Fail(404, $"no graph '{slug}'");
            var (request, failure) = await ReadJson<GraphStateRequest>(ctx);
            if (request is null) return failure!;
            var pinned = request.PinnedIds ?? Array.Empty<string>();
            var groups = request.Supernodes ?? Array.Empty<string[]>();
            if (pinned.Length > 5000 || groups.Length > 500 || pinned.Concat(groups.SelectMany(g => g ?? Array.Empty<string>())).Any(id => id is null || id.Length > 200))
                return Fail(400, "too many pinned nodes or supernodes, or an id over 200 characters");
            if (groups.Any(g => g is null || g.Length < 2)) return Fail(400, "a supernode is [name, node id, ...] with at least one node");
            // One writer at a time per folder (saves and finished traces); the file is streamed into a temp file and
            // renamed, so a kill leaves the old or the new state and memory stays independent of the graph's size.
            await _graphWrite.WaitAsync(ctx.RequestAborted);
            try
            {
                string path = GraphFolders.Existing(GraphDir, slug + ".json") ?? throw new MechanistException($"no graph '{slug}'");
                await Task.Run(() => GraphState.Save(path, pinned, groups), ctx.RequestAborted);
            }
            catch (MechanistException e) { return Fail(422, e.Message); }
            finally { _graphWrite.Release(); }
            return Results.Json(new { saved = slug, pinned = pinned.Length, supernodes = groups.Length }, Json);
        });

        PostCancellable<GraphRequest>("/api/graph", (r, m, ct) =>
        {
            using var tokens = Tokens(m, r.Prompt);
            string name = ModelName(r.Model);
            var bundle = _models.Transcoders(name, m);
            double node = r.NodeThreshold ?? 0.8, edge = r.EdgeThreshold ?? 0.98;
            if (!(node > 0 && node <= 1) || !(edge > 0 && edge <= 1)) throw new MechanistException("thresholds must be in (0, 1]");
            int maxFeatures = Math.Clamp(r.MaxFeatureNodes ?? 400, 1, 5000);
            string slug = "g-" + Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes($"{name}\n{r.Prompt}\n{maxFeatures}\n{node}\n{edge}")))[..12].ToLowerInvariant();
            string path = Path.Combine(GraphDir, slug + ".json");
            // Traces run concurrently, each into its own temp file; only the commit (carry the saved state over, rename,
            // index) is serialised with saves.
            string tmp = Path.Combine(GraphDir, $".{slug}.{Guid.NewGuid():N}.tracing");
            try
            {
                Attribution.GraphTrace.Write(m, bundle, tokens, tmp, new Attribution.AttributionOptions(MaxFeatureNodes: maxFeatures, Progress: (_, _) => ct.ThrowIfCancellationRequested()),
                    node, edge, slug: slug, scan: name, promptText: r.Prompt);
                _graphWrite.Wait(ct);
                try
                {
                    if (GraphFolders.Existing(GraphDir, slug + ".json") is { } old) GraphState.CarryOver(old, tmp);
                    File.Move(tmp, path, overwrite: true);
                    Attribution.GraphFile.UpdateIndex(path);
                }
                finally { _graphWrite.Release(); }
            }
            finally { if (File.Exists(tmp)) File.Delete(tmp); }
            return new RawJson(File.ReadAllText(path));
        });

        PostCancellable<InterveneRequest>("/api/intervene", (r, m, ct) =>
        {
            // A graph's own token ids when the page has them (a traced prompt's display text need not tokenize back into it).
            using var tokens = r.Tokens is { Length: > 0 } ids ? TokenIds(m, ids) : Tokens(m, r.Prompt);
            var bundle = _models.Transcoders(ModelName(r.Model), m);
            var mode = (r.Mode ?? "free") switch
            {
                "free" => Attribution.InterventionMode.Free, "constrained" => Attribution.InterventionMode.Constrained, "replacement" => Attribution.InterventionMode.Replacement,
                var other => throw new MechanistException($"'mode' must be free, constrained or replacement (got '{Trim(other)}')"),
            };
            int topK = Math.Clamp(r.TopK ?? 10, 1, 50), generate = Math.Clamp(r.Generate ?? 0, 0, 64);
            using var rm = Attribution.ReplacementModel.Build(m, bundle.Dictionary, bundle.Input, tokens);
            ct.ThrowIfCancellationRequested();
            if (!string.IsNullOrEmpty(r.SwapPrompt))
            {
                using var donorTokens = Tokens(m, r.SwapPrompt, "swapPrompt");
                using var donor = Attribution.ReplacementModel.Build(m, bundle.Dictionary, bundle.Input, donorTokens);
                return Attribution.InterventionExperiment.Swap(rm, donor, r.SwapPosition ?? -1, r.SwapLayers is { Length: > 0 } ls ? ls : null, mode, topK, generate);
            }
            if (r.Set is not { Length: > 0 } set || set.Length > 200) throw new MechanistException("'set' needs 1 to 200 interventions (LAYER:POSITION:FEATURE=VALUE), or give 'swapPrompt'");
            return Attribution.InterventionExperiment.Run(rm, set, mode, topK, generate);
        });

        Post<SteerRequest>("/api/steer", (r, m) =>
        {
            if (string.IsNullOrEmpty(r.Prompt)) throw new MechanistException("'prompt' is required");
            using (Tokens(m, r.Prompt)) { }
            if (r.Positive is not { Length: > 0 } pos || r.Negative is not { Length: > 0 } neg || pos.Length + neg.Length > 64)
                throw new MechanistException("'positive' and 'negative' each need at least one text (64 in all at most)");
            foreach (var t in pos.Concat(neg)) using (Tokens(m, t, "positive/negative")) { }
            int layer = r.Layer ?? m.Config.NLayers / 2;
            if (layer < 0 || layer >= m.Config.NLayers) throw new MechanistException($"'layer' must be within 0..{m.Config.NLayers - 1}");
            using var vector = Steering.Vector(m, pos, neg, layer);
            return Steering.Compare(m, vector, layer, r.Coefficient ?? 4, new[] { r.Prompt }, new GenerateOptions { MaxNewTokens = Math.Clamp(r.Generate ?? 20, 1, 64) });
        });
    }

    readonly SemaphoreSlim _graphWrite = new(1);

    /// <summary>Runs a feature-store query under the analysis slots, abandoned when the client goes away.</summary>
    async Task<IResult> Query(HttpContext ctx, int id, Func<Features.FeatureStore, object> query)
    {
        if (id < 0 || id >= _stores.Count) return Fail(404, $"no feature store {id} (this server has {_stores.Count})");
        try
        {
            if (!await _slots.WaitAsync(_options.QueueTimeout, ctx.RequestAborted)) return Fail(503, "the server is busy with other analyses; try again");
        }
        catch (OperationCanceledException) { return Results.Empty; }
        try
        {
            var bytes = await Task.Run(() => JsonSerializer.SerializeToUtf8Bytes(query(_stores[id]), Json), ctx.RequestAborted);
            return Results.Bytes(bytes, "application/json; charset=utf-8");
        }
        catch (MechanistException e) { return Fail(400, e.Message); }
        catch (OperationCanceledException) { return Results.Empty; }
        catch (Exception e) { return Fail(500, $"internal error: {e.GetType().Name}"); }
        finally { _slots.Release(); }
    }

    string ModelName(string? requested) => _models.Resolve(requested);

    /// <summary>Longest encoder or decoder input of an encoder-decoder, in tokens (its relative positions set no limit; its cost is quadratic).</summary>
    const int MaxEncoderDecoderTokens = 1024;

    Tensor InputIds(HookedEncoderDecoder m, string? text, string field = "prompt")
    {
        if (string.IsNullOrEmpty(text)) throw new MechanistException($"'{field}' is required");
        return Limited(m.InputIds(CheckLength(text, field)), field);
    }

    Tensor DecoderIds(HookedEncoderDecoder m, string? prefix) =>
        Limited(m.DecoderIds(string.IsNullOrEmpty(prefix) ? null : CheckLength(prefix, "decoder")), "decoder");

    string CheckLength(string text, string field) =>
        text.Length <= _options.MaxPromptChars ? text : throw new MechanistException($"'{field}' is {text.Length} characters; the limit is {_options.MaxPromptChars}");

    static Tensor Limited(Tensor ids, string field)
    {
        if (ids.shape[1] <= MaxEncoderDecoderTokens) return ids;
        long n = ids.shape[1]; ids.Dispose();
        throw new MechanistException($"'{field}' is {n} tokens; the workbench takes {MaxEncoderDecoderTokens} at most for an encoder-decoder");
    }

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

    /// <summary>Token ids given by the page (a graph file's prompt_token_ids), checked against the model.</summary>
    static Tensor TokenIds(HookedTransformer m, long[] ids)
    {
        if (ids.Length > m.Config.NCtx) throw new MechanistException($"'tokens' has {ids.Length} ids; this model's context is {m.Config.NCtx}");
        foreach (long id in ids)
            if (id < 0 || id >= m.Config.VocabSize) throw new MechanistException($"'tokens' holds id {id}, outside the vocabulary (0..{m.Config.VocabSize - 1})");
        return tensor(ids, new long[] { 1, ids.Length }, ScalarType.Int64, m.Device);
    }

    /// <summary>A model request; <paramref name="encoderDecoder"/> answers it for an encoder-decoder (without one, such a model is refused by kind).</summary>
    void Post<T>(string path, Func<T, HookedTransformer, object> handler, Func<T, HookedEncoderDecoder, object>? encoderDecoder = null) where T : class, IModelRequest =>
        PostCancellable<T>(path, (r, m, _) => handler(r, m), encoderDecoder is null ? null : (r, m, _) => encoderDecoder(r, m));

    /// <summary>A model request whose handlers see the request's cancellation (the client went away) and may stop early.</summary>
    void PostCancellable<T>(string path, Func<T, HookedTransformer, CancellationToken, object> handler, Func<T, HookedEncoderDecoder, CancellationToken, object>? encoderDecoder = null)
        where T : class, IModelRequest
    {
        _app.MapPost(path, async (HttpContext ctx) =>
        {
            var (request, failure) = await ReadJson<T>(ctx);
            if (request is null) return failure!;
            if (!await _slots.WaitAsync(_options.QueueTimeout, ctx.RequestAborted)) return Fail(503, "the server is busy with other analyses; try again");
            try
            {
                var t5 = encoderDecoder is null ? null : _models.EncoderDecoder(request.Model);
                var model = t5 is null ? _models.Get(request.Model) : null;
                // Serialised here, inside the slot and the error handling, while the tensors behind lazy results live.
                var bytes = await Task.Run(() => (t5 is null ? handler(request, model!, ctx.RequestAborted) : encoderDecoder!(request, t5, ctx.RequestAborted)) is var result && result is RawJson raw
                    ? System.Text.Encoding.UTF8.GetBytes(raw.Json) : JsonSerializer.SerializeToUtf8Bytes(result, Json), ctx.RequestAborted);
                return Results.Bytes(bytes, "application/json; charset=utf-8");
            }
            catch (MechanistException e) { return Fail(400, e.Message); }
            catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested) { return Results.Empty; }
            catch (Exception e) when (e is not OperationCanceledException) { return Fail(500, $"internal error: {e.GetType().Name}"); }
            finally { _slots.Release(); }
        });
    }

    /// <summary>A request's JSON body, or the error answer: 415 for another content type, 400 for malformed or empty JSON, 413 for too large.</summary>
    async Task<(T? Request, IResult? Failure)> ReadJson<T>(HttpContext ctx) where T : class
    {
        if (ctx.Request.ContentType?.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) != true)
            return (null, Fail(415, "send JSON (Content-Type: application/json)"));
        try
        {
            var request = await JsonSerializer.DeserializeAsync<T>(ctx.Request.Body, Json, ctx.RequestAborted);
            return request is null ? (null, Fail(400, "empty request")) : (request, null);
        }
        catch (JsonException e) { return (null, Fail(400, $"malformed JSON: {e.Message}")); }
        catch (BadHttpRequestException e) { return (null, Fail(e.StatusCode, e.StatusCode == 413 ? $"request body too large (limit {_options.MaxRequestBytes} bytes)" : e.Message)); }
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
        _graphWrite.Dispose();
    }
}
