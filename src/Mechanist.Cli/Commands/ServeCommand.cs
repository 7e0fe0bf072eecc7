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
        var models = new Option<string[]>("--model", "-m") { Description = "Models to serve (repeatable; default: the built-in toy models). Encoder-decoders (T5) get the Prompt, Attention, Logit lens and Patching views." };
        var port = new Option<int>("--port") { Description = "Port.", DefaultValueFactory = _ => 5005 };
        var host = new Option<string>("--host") { Description = "Address to bind (loopback by default).", DefaultValueFactory = _ => "127.0.0.1" };
        var offline = CommonOptions.Offline();
        var features = new Option<string[]>("--features") { Description = "Feature stores to browse and label (features.db or its build folder; repeatable), or folders of published features (index.json.gz + per-layer files: read-only pages)." };
        var transcoders = new Option<string[]>("--transcoders") { Description = "MODEL=DIR or MODEL=org/name[@revision]: circuit-tracer transcoders for a served model's graphs and interventions (repeatable; built-in models bring their CLT)." };
        var graphs = new Option<string>("--graphs") { Description = "Folder where traced graphs and their saved pins and supernodes are kept (default: mechanist-graphs in the temp folder)." };
        var cmd = new Command("serve", "Serve the web workbench locally.") { models, port, host, offline, features, transcoders, graphs };
        cmd.SetAction(async (parse, ct) =>
        {
            var specs = parse.GetValue(models) is { Length: > 0 } given ? given
                : new[] { "toy-4l", "attn-only-2l" }.Where(n => BuiltInModels.Find(n) != null).DefaultIfEmpty("toy-4l").ToArray();
            var served = new List<ServedModel>();
            try
            {
                foreach (var spec in specs)
                    served.Add(EncoderDecoderInput.Is(spec) ? EncoderDecoderInput.Load(spec, parse, parse.GetValue(offline)) : ModelInput.Load(spec, parse, parse.GetValue(offline), ctx));
            }
            catch { foreach (var m in served) m.Dispose(); throw; }
            var loaded = served.Where(m => m.Transformer is not null).Select(m => m.Transformer!).ToList();
            int p = parse.GetValue(port);
            if (p is < 0 or > 65535) throw new MechanistException($"--port {p} is not a port number");
            var stores = (parse.GetValue(features) ?? Array.Empty<string>()).Select(f => Directory.Exists(f) ? Path.Combine(f, Mechanist.Features.FeatureBuild.MergedName) : f).ToList();
            foreach (var f in stores) Mechanist.Features.FeatureStores.Open(f);
            var dirs = new Dictionary<string, string>();
            foreach (var m in loaded)
                if (BuiltInModels.Transcoders(ModelRegistry.DisplayName(m)) is { } shipped) dirs[ModelRegistry.DisplayName(m)] = shipped;
            foreach (var spec in parse.GetValue(transcoders) ?? Array.Empty<string>())
            {
                var kv = spec.Split('=', 2);
                if (kv.Length == 2 && served.Any(m => m.EncoderDecoder is { } ed && ModelRegistry.DisplayName(ed.Name) == kv[0]))
                    throw new MechanistException($"--transcoders '{spec}': {kv[0]} is an encoder-decoder; transcoders trace decoder-only models");
                if (kv.Length != 2 || !loaded.Any(m => ModelRegistry.DisplayName(m) == kv[0])) throw new MechanistException($"--transcoders '{spec}': give MODEL=DIR for a served model ({string.Join(", ", loaded.Select(ModelRegistry.DisplayName))})");
                string folder = DictionaryInput.Resolve(kv[1], offline: false, ctx);
                if (!Mechanist.Dictionaries.Formats.CircuitTracerFormat.IsFolder(folder)) throw new MechanistException($"--transcoders: {kv[1]} is not a circuit-tracer transcoder folder");
                dirs[kv[0]] = folder;
            }
            await using var server = WorkbenchServer.Create(served, new WorkbenchOptions { Host = parse.GetValue(host)!, Port = p, FeatureStores = stores, Transcoders = dirs,
                GraphDir = parse.GetValue(graphs) });
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
