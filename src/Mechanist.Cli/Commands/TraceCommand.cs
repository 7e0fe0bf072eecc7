using System.CommandLine;
using Mechanist.Analysis;
using Mechanist.Attribution;
using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Formats;
using Mechanist.IO;
using Mechanist.Toy;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist trace</c>: an attribution graph of a prompt through transcoders, written as circuit-tracer graph JSON.</summary>
public sealed class TraceCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var transcoders = new Option<string>("--transcoders") { Description = "Transcoder or CLT folder (circuit-tracer format). Default: the built-in model's shipped CLT." };
        var maxLogits = new Option<int>("--max-logits") { Description = "At most this many logit targets.", DefaultValueFactory = _ => 10 };
        var logitProb = new Option<double>("--logit-prob") { Description = "Logit targets until their cumulative probability reaches this.", DefaultValueFactory = _ => 0.95 };
        var nodeThreshold = new Option<double>("--node-threshold") { Description = "Keep nodes holding this share of the influence.", DefaultValueFactory = _ => 0.8 };
        var edgeThreshold = new Option<double>("--edge-threshold") { Description = "Keep edges holding this share of the edge scores.", DefaultValueFactory = _ => 0.98 };
        var noPrune = new Option<bool>("--no-prune") { Description = "Write every nonzero edge." };
        var batch = new Option<int>("--batch") { Description = "Target rows per backward pass.", DefaultValueFactory = _ => 32 };
        var maxFeatures = new Option<int?>("--max-feature-nodes") { Description = "Keep at most this many features, visited in order of estimated influence (default: all active features)." };
        var maxEdges = new Option<int?>("--max-edges-per-row") { Description = "Keep at most this many edges into each node (the largest |A|; the rest still count in the row's normalisation). Default: every nonzero edge." };
        var output = new Option<string>("--out") { Description = "Graph JSON file (circuit-tracer's frontend schema).", Required = true };
        var target = new Option<string[]>("--target") { Description = "A token to attribute (repeatable; \" Austin\" or #id) instead of the most likely ones." };
        var targetDiff = new Option<string[]>("--target-diff") { Description = "Attribute a logit difference: two tokens, e.g. --target-diff \" Austin\" \" Dallas\".", Arity = new ArgumentArity(2, 2), AllowMultipleArgumentsPerToken = true };
        var cmd = new Command("trace", "Attribution graph of a prompt: features, errors and tokens to the top logits, pruned, as circuit-tracer graph JSON.");
        input.AddTo(cmd, tokensFile: false);
        foreach (var o in new Option[] { transcoders, maxLogits, logitProb, nodeThreshold, edgeThreshold, noPrune, batch, output, target, targetDiff, maxFeatures, maxEdges }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            if (parse.GetValue(maxLogits) < 1) throw new MechanistException("--max-logits must be at least 1");
            foreach (var (name, v) in new[] { ("--logit-prob", parse.GetValue(logitProb)), ("--node-threshold", parse.GetValue(nodeThreshold)), ("--edge-threshold", parse.GetValue(edgeThreshold)) })
                if (!(v > 0 && v <= 1)) throw new MechanistException($"{name} must be in (0, 1]");
            GraphFile.CheckIndex(parse.GetValue(output)!);
            using var model = input.LoadModel(parse, ctx);
            string dir = parse.GetValue(transcoders) ?? DefaultTranscoders(parse.GetValue(input.Model));
            using var bundle = CircuitTracerFormat.Load(dir, model.Device);
            var (tokens, _) = input.ReadInput(parse, model);
            using var _t = tokens;
            if (tokens.shape[0] != 1) throw new MechanistException("trace takes one prompt");
            if (tokens.shape[1] > model.Config.NCtx) throw new MechanistException($"the prompt is {tokens.shape[1]} tokens; the model's context is {model.Config.NCtx}");
            var targets = (parse.GetValue(target) ?? Array.Empty<string>()).Select(t => new LogitTarget(TokenText.AnswerId(model, t))).ToList();
            if (parse.GetValue(targetDiff) is { Length: 2 } diff) targets.Add(new LogitTarget(TokenText.AnswerId(model, diff[0]), TokenText.AnswerId(model, diff[1])));
            var clock = System.Diagnostics.Stopwatch.StartNew();
            double lastReport = 0;
            using var rm = ReplacementModel.Build(model, bundle.Dictionary, bundle.Input, tokens);
            using var graph = Attributor.Attribute(rm, new AttributionOptions(parse.GetValue(maxLogits), parse.GetValue(logitProb), parse.GetValue(batch), targets.Count > 0 ? targets : null,
                parse.GetValue(maxFeatures) is { } mf ? (mf >= 1 ? mf : throw new MechanistException("--max-feature-nodes must be at least 1")) : null,
                parse.GetValue(maxEdges) is { } me ? (me >= 1 ? me : throw new MechanistException("--max-edges-per-row must be at least 1")) : null,
                Progress: (done, planned) =>
                {
                    if (clock.Elapsed.TotalSeconds < lastReport + 2 && done < planned) return;
                    lastReport = clock.Elapsed.TotalSeconds;
                    ctx.Err.WriteLine($"  rows {done}/{planned}, {done / Math.Max(1e-9, clock.Elapsed.TotalSeconds):F1} rows/s");
                }));
            using var pruned = Pruning.Prune(graph, parse.GetValue(nodeThreshold), parse.GetValue(edgeThreshold));
            var scores = Pruning.Scores(graph, pruned);
            string path = parse.GetValue(output)!;
            GraphFile.Write(path, graph, pruned, !parse.GetValue(noPrune), parse.GetValue(nodeThreshold), slug: Path.GetFileNameWithoutExtension(path), scan: Path.GetFileName(dir.TrimEnd('/')),
                tokenText: model.Tokenizer is null ? null : id => TokenText.Of(model, id));
            GraphFile.UpdateIndex(path);
            int features = graph.Nodes.Count(n => n.Kind == NodeKind.Feature);
            ctx.Out.WriteLine($"{graph.Nodes.Length} nodes ({features} active features, {graph.Nodes.Count(n => n.Kind == NodeKind.Logit)} logit targets), " +
                $"kept {pruned.NodeMask.Count(k => k)} nodes and {pruned.KeptEdges} edges; replacement {scores.Replacement:F3}, completeness {scores.Completeness:F3}; " +
                $"{clock.Elapsed.TotalSeconds:F1} s -> {path}");
            var top = graph.Nodes.Select((n, i) => (n, i)).Where(x => x.n.Kind == NodeKind.Feature && pruned.NodeMask[x.i]).OrderBy(x => pruned.CumulativeInfluence[x.i]).Take(10);
            var table = new Table().AddColumns("feature", "layer", "position", "token", "activation", "cumulative influence");
            foreach (var (n, i) in top)
                table.AddRow(n.Index.ToString(), n.Layer.ToString(), n.Position.ToString(), Markup.Escape(TokenText.Of(model, graph.TokenIds[n.Position])), $"{n.Activation:F3}", $"{pruned.CumulativeInfluence[i]:F3}");
            Render.Console(ctx).Write(table);
            return 0;
        });
        return cmd;
    }

    /// <summary>The shipped CLT of a built-in model.</summary>
    static string DefaultTranscoders(string? modelSpec)
    {
        string name = modelSpec ?? ToyPresets.DefaultName;
        if (BuiltInModels.Find(name) is { } modelDir && Directory.Exists(Path.Combine(modelDir, "clt"))) return Path.Combine(modelDir, "clt");
        throw new MechanistException("give --transcoders DIR (only built-in models ship transcoders)");
    }
}
