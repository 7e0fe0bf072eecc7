using Mechanist.Features;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Logging;

namespace Mechanist.Web;

/// <summary>
/// The web workbench: a JSON API over the library's analysis records (no analysis logic here) and the static front end,
/// served by Kestrel. This is the composition root: the gate (<see cref="WorkbenchGate"/>) checks every request, the
/// endpoint modules answer them, and <see cref="AnalysisRunner"/> runs their work in slots.
/// </summary>
public sealed class WorkbenchServer : IAsyncDisposable
{
    readonly WebApplication _app;
    readonly ModelRegistry _models;
    readonly AnalysisRunner _runner;
    readonly GraphEndpoints _graphs;
    readonly WorkbenchGate _gate;

    WorkbenchServer(WebApplication app, ModelRegistry models, WorkbenchOptions options, ListenAddress listen)
    {
        _app = app; _models = models;
        GraphDir = options.GraphDir ?? GraphFolders.PrivateDefault();
        Directory.CreateDirectory(GraphDir);
        Loopback = listen.Loopback;
        _gate = new WorkbenchGate(listen, options);
        _runner = new AnalysisRunner(models, options);
        var inputs = new RequestInputs(options);
        _graphs = new GraphEndpoints(_runner, inputs, GraphDir);

        _app.Use(_gate.Invoke);
        ModelEndpoints.Map(_app, _runner, inputs);
        FeatureEndpoints.Map(_app, _runner, options.FeatureStores.Select(FeatureStores.Open).ToList());
        _graphs.Map(_app);
        StaticFiles.Map(_app);
    }

    /// <summary>Where traced graphs and their saved states live.</summary>
    public string GraphDir { get; }

    /// <summary>Whether the server is bound to loopback only (then no token is needed).</summary>
    public bool Loopback { get; }

    /// <summary>The token every request must carry when bound beyond loopback; null on loopback.</summary>
    public string? AccessToken => _gate.AccessToken;

    /// <summary>The address to open in a browser (with the token when one is needed).</summary>
    public string BrowserUrl => AccessToken is null ? Url : $"{Url}/?token={AccessToken}";

    /// <summary>The address the server listens on, once started.</summary>
    public string Url => _app.Urls.First();

    /// <summary>Builds the server over already loaded decoder-only or encoder models (the server owns them).</summary>
    public static WorkbenchServer Create(IEnumerable<Models.HookedTransformer> models, WorkbenchOptions options) =>
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
        return new WorkbenchServer(builder.Build(), registry, options, listen);
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

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await _app.DisposeAsync();
        _models.Dispose();
        _runner.Dispose();
        _graphs.Dispose();
    }
}
