using System.CommandLine;
using Mechanist.Models;
using Mechanist.Web;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist serve [--model M ...] [--port 5005] [--host 127.0.0.1]</c>: the web workbench.</summary>
public sealed class ServeCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var models = new Option<string[]>("--model", "-m") { Description = "Models to serve (repeatable; default: the built-in toy models)." };
        var port = new Option<int>("--port") { Description = "Port.", DefaultValueFactory = _ => 5005 };
        var host = new Option<string>("--host") { Description = "Address to bind (loopback by default).", DefaultValueFactory = _ => "127.0.0.1" };
        var offline = CommonOptions.Offline();
        var features = new Option<string[]>("--features") { Description = "Feature stores to browse and label (features.db or its build folder; repeatable)." };
        var cmd = new Command("serve", "Serve the web workbench locally.") { models, port, host, offline, features };
        cmd.SetAction(async (parse, ct) =>
        {
            var specs = parse.GetValue(models) is { Length: > 0 } given ? given
                : new[] { "toy-4l", "attn-only-2l" }.Where(n => BuiltInModels.Find(n) != null).DefaultIfEmpty("toy-4l").ToArray();
            var loaded = new List<HookedTransformer>();
            try
            {
                foreach (var spec in specs) loaded.Add(ModelInput.Load(spec, parse, parse.GetValue(offline), ctx));
            }
            catch { foreach (var m in loaded) m.Dispose(); throw; }
            int p = parse.GetValue(port);
            if (p is < 0 or > 65535) throw new MechanistException($"--port {p} is not a port number");
            var stores = (parse.GetValue(features) ?? Array.Empty<string>()).Select(f => Directory.Exists(f) ? Path.Combine(f, Mechanist.Features.FeatureBuild.MergedName) : f).ToList();
            foreach (var f in stores) Mechanist.Features.FeatureStore.Open(f);
            await using var server = WorkbenchServer.Create(loaded, new WorkbenchOptions { Host = parse.GetValue(host)!, Port = p, FeatureStores = stores });
            try { await server.StartAsync(ct); }
            catch (IOException e) { throw new MechanistException($"cannot listen on {parse.GetValue(host)}:{p}: {e.Message}"); }
            ctx.Out.WriteLine($"Mechanist workbench on {server.BrowserUrl} serving {string.Join(", ", specs)} (Ctrl+C to stop)");
            if (server.AccessToken is not null) ctx.Out.WriteLine($"bound beyond loopback: every request needs the token {server.AccessToken} (the URL above sets it for the browser)");
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; stop.Cancel(); };
            using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Cancel(); });
            try { await Task.Delay(Timeout.Infinite, stop.Token); } catch (OperationCanceledException) { }
            return 0;
        });
        return cmd;
    }
}
