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
        var transcoders = new Option<string>("--transcoders") { Description = "Transcoder or CLT folder (circuit-tracer format), or a hub repository org/name[@revision] resolved in the Hugging Face cache and downloaded when missing. Default: the built-in model's shipped CLT." };
        var maxLogits = new Option<int>("--max-logits") { Description = "At most this many logit targets.", DefaultValueFactory = _ => 10 };
        var logitProb = new Option<double>("--logit-prob") { Description = "Logit targets until their cumulative probability reaches this.", DefaultValueFactory = _ => 0.95 };
        var nodeThreshold = new Option<double>("--node-threshold") { Description = "Keep nodes holding this share of the influence.", DefaultValueFactory = _ => AttributionVocabulary.DefaultNodeThreshold };
        var edgeThreshold = new Option<double>("--edge-threshold") { Description = "Keep edges holding this share of the edge scores.", DefaultValueFactory = _ => AttributionVocabulary.DefaultEdgeThreshold };
        var noPrune = new Option<bool>("--no-prune") { Description = "Write every nonzero edge." };
        var batch = new Option<int>("--batch") { Description = "Target rows per backward pass.", DefaultValueFactory = _ => 32 };
        var maxFeatures = new Option<int?>("--max-feature-nodes") { Description = "Keep at most this many features, visited in order of estimated influence (default: all active features)." };
        var maxEdges = new Option<int?>("--max-edges-per-row") { Description = "Keep at most this many edges into each node (the largest |A|; the rest still count in the row's normalisation). Default: every nonzero edge." };
        var output = new Option<string>("--out") { Description = "Graph JSON file (circuit-tracer's frontend schema); with --prompts, a folder of them." };
        var prompts = new Option<string>("--prompts") { Description = "A file of prompts, one per line: one graph each (prompt-00000.json, ...) in the --out folder." };
        var scanOption = new Option<string>("--scan") { Description = "metadata.scan of the graph: where circuit-tracer's frontend finds features (default: the transcoder folder's absolute path, as circuit-tracer writes for local transcoders; serve a 'features export' folder as its features_dir)." };
        var shard = new Option<string>("--shard") { Description = "With --prompts: i/N, trace prompts i, i+N, ... (merge the shards with 'mechanist trace merge DIR')." };
        var target = new Option<string[]>("--target") { Description = "A token to attribute (repeatable; \" Austin\" or #id) instead of the most likely ones." };
        var targetDiff = new Option<string[]>("--target-diff") { Description = "Attribute a logit difference: two tokens, e.g. --target-diff \" Austin\" \" Dallas\".", Arity = new ArgumentArity(2, 2), AllowMultipleArgumentsPerToken = true };
        var noQk = new Option<bool>("--no-qk") { Description = "Leave out the attention detail: each cross-position link's head loadings and the QK attributions of the scores that carry it (on by default)." };
        var qkTop = new Option<int>("--qk-top") { Description = "QK terms kept per attention score (the rest summed).", DefaultValueFactory = _ => 10 };
        var sizer = new SizerOptions();
        var cmd = new Command("trace", "Attribution graph of a prompt: features, errors and tokens to the top logits, pruned, as circuit-tracer graph JSON.");
        input.AddTo(cmd, tokensFile: false);
        sizer.AddTo(cmd, output);
        foreach (var o in new Option[] { transcoders, maxLogits, logitProb, nodeThreshold, edgeThreshold, noPrune, batch, output, target, targetDiff, maxFeatures, maxEdges, prompts, shard, scanOption, noQk, qkTop }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            AttributionVocabulary.Share("logit probability", parse.GetValue(logitProb));
            AttributionVocabulary.Thresholds(parse.GetValue(nodeThreshold), parse.GetValue(edgeThreshold));
            string? promptFile = parse.GetValue(prompts);
            if (promptFile is null) { if (parse.GetValue(output) is { } single) GraphFile.CheckIndex(single); }
            else if (parse.GetValue(input.Prompt) is not null || parse.GetValue(input.Tokens) is not null) throw new MechanistException("give --prompts FILE or one prompt, not both");
            var promptList = promptFile is null ? null : ReadPrompts(promptFile);
            var (shardIndex, shardCount) = Mechanist.Cluster.ShardPlan.Parse(parse.GetValue(shard));
            if (promptFile is null && parse.GetValue(shard) is not null) throw new MechanistException("--shard goes with --prompts FILE");
            using var model = input.LoadModel(parse, ctx);
            // An attention-only model has no MLPs to replace: its graph is tokens → logits through the frozen attention.
            bool attentionOnly = model.Config.AttnOnly;
            if (attentionOnly && parse.GetValue(transcoders) is not null) throw new MechanistException("this model is attention-only: it has no MLPs for transcoders to replace; trace it without --transcoders");
            string? dir = attentionOnly ? null : parse.GetValue(transcoders) is { } given ? DictionaryInput.Resolve(given, parse.GetValue(input.Offline), ctx) : DefaultTranscoders(parse.GetValue(input.Model));
            using var bundle = dir is null ? null : CircuitTracerFormat.Load(dir, model.Device);
            var targets = (parse.GetValue(target) ?? Array.Empty<string>()).Select(t => new LogitTarget(TokenText.AnswerId(model, t))).ToList();
            if (parse.GetValue(targetDiff) is { Length: 2 } diff) targets.Add(new LogitTarget(TokenText.AnswerId(model, diff[0]), TokenText.AnswerId(model, diff[1])));
            // Counts (--max-logits, --max-feature-nodes, --max-edges-per-row) are checked at parse time (CountOptions).
            int? maxFeatureNodes = parse.GetValue(maxFeatures), maxEdgesPerRow = parse.GetValue(maxEdges);
            // The graph's options (without progress) and its attention detail, as every trace of this command runs them.
            var plain = new AttributionOptions(parse.GetValue(maxLogits), parse.GetValue(logitProb), parse.GetValue(batch), targets.Count > 0 ? targets : null, maxFeatureNodes, maxEdgesPerRow);
            var qkOptions = parse.GetValue(noQk) ? null : new GraphQkOptions(TopPairs: Math.Max(1, parse.GetValue(qkTop)));
            string scan = parse.GetValue(scanOption) ?? (dir is null ? "mechanist" : Path.GetFullPath(dir).TrimEnd('/', '\\'));

            // One prompt → one graph file; prints a summary and the top features when asked.
            void TraceTo(TorchSharp.torch.Tensor tokens, string path, bool print, string? promptText)
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                double lastReport = 0;
                var summary = GraphTrace.Write(model, bundle, tokens, path, plain with
                {
                    Progress = (done, planned) =>
                    {
                        if (!print || (clock.Elapsed.TotalSeconds < lastReport + 2 && done < planned)) return;
                        lastReport = clock.Elapsed.TotalSeconds;
                        ctx.Err.WriteLine($"  rows {done}/{planned}, {done / Math.Max(1e-9, clock.Elapsed.TotalSeconds):F1} rows/s");
                    },
                }, parse.GetValue(nodeThreshold), parse.GetValue(edgeThreshold), !parse.GetValue(noPrune), scan: scan,
                    inspect: print ? PrintTop : null, promptText: promptText, qk: qkOptions);
                ctx.Out.WriteLine($"{summary.Nodes} nodes ({summary.ActiveFeatures} active features, {summary.LogitTargets} logit targets), " +
                    $"kept {summary.KeptNodes} nodes and {summary.KeptEdges} edges; replacement {summary.Replacement:F3}, completeness {summary.Completeness:F3}; " +
                    $"{summary.Seconds:F1} s" + (summary.QkScores > 0 || summary.QkSeconds > 0 ? $" (attention: {summary.QkScores} QK attributions, {summary.QkSeconds:F1} s)" : "") + $" -> {path}");
            }

            // The most influential kept features, before the summary line.
            void PrintTop(AttributionGraph graph, PrunedGraph pruned)
            {
                if (!graph.Nodes.Any(n => n.Kind == NodeKind.Feature))
                {
                    // An attention-only graph: its sources are the prompt's tokens, most influential first.
                    var tokensTable = new Table().AddColumns("node", "position", "token", "cumulative influence");
                    foreach (var (n, i) in graph.Nodes.Select((n, i) => (n, i)).Where(x => x.n.Kind == NodeKind.Token && pruned.NodeMask[x.i]).OrderBy(x => pruned.CumulativeInfluence[x.i]).Take(10))
                        tokensTable.AddRow(n.Id, n.Position.ToString(), Markup.Escape(TokenText.Of(model, n.Index)), $"{pruned.CumulativeInfluence[i]:F3}");
                    Render.Console(ctx).Write(tokensTable);
                    return;
                }
                var top = graph.Nodes.Select((n, i) => (n, i)).Where(x => x.n.Kind == NodeKind.Feature && pruned.NodeMask[x.i]).OrderBy(x => pruned.CumulativeInfluence[x.i]).Take(10);
                var table = new Table().AddColumns("feature", "layer", "position", "token", "activation", "cumulative influence");
                foreach (var (n, i) in top)
                    table.AddRow(n.Index.ToString(), n.Layer.ToString(), n.Position.ToString(), Markup.Escape(TokenText.Of(model, graph.TokenIds[n.Position])), $"{n.Activation:F3}", $"{pruned.CumulativeInfluence[i]:F3}");
                Render.Console(ctx).Write(table);
            }

            if (promptList is not null)
            {
                var shardPlan = new Mechanist.Cluster.ShardPlan(shardIndex, shardCount);
                if (sizer.Handle(parse, ctx, f =>
                {
                    var shardPrompts = Enumerable.Range(0, promptList.Count).Where(k => shardPlan.Takes(k)).Select(k => model.ToTokens(promptList[k], parse.GetValue(input.NoBos) ? false : null)).ToList();
                    try { return Mechanist.Runtime.Sizers.TraceBatch(model, bundle, shardPrompts, plain, qkOptions, f); }
                    finally { foreach (var t in shardPrompts) t.Dispose(); }
                })) return 0;
                string outDir = parse.GetValue(output)!;
                if (File.Exists(outDir)) throw new MechanistException($"{outDir} is a file; with --prompts, --out is a folder");
                var m = TraceBatch.Run(promptList, outDir, shardIndex, shardCount, model.Name, scan, (k, path) =>
                {
                    using var t = model.ToTokens(promptList[k], parse.GetValue(input.NoBos) ? false : null);
                    TraceTo(t, path, print: false, promptList[k]);
                });
                ctx.Out.WriteLine($"shard {shardIndex}/{shardCount}: {m.Done.Length} graph(s) in {outDir}" + (shardCount > 1 ? $"; when every shard is done: mechanist trace merge {outDir}" : ""));
                if (shardCount == 1) TraceBatch.Merge(outDir);
                return 0;
            }
            var (tokens, _) = input.ReadInput(parse, model);
            using (tokens)
            {
                if (sizer.Handle(parse, ctx, f => Mechanist.Runtime.Sizers.Trace(model, bundle, tokens, plain, qkOptions, f))) return 0;
                TraceTo(tokens, parse.GetValue(output)!, print: true, parse.GetValue(input.Prompt));
            }
            GraphFile.UpdateIndex(parse.GetValue(output)!);
            return 0;
        });
        var mergeDir = new Argument<string>("folder") { Description = "The --out folder of a sharded batch trace." };
        var merge = new Command("merge", "Check that a batch trace's shards belong together and are complete, and write graph-metadata.json over every graph.") { mergeDir };
        merge.SetAction(parse =>
        {
            var m = TraceBatch.Merge(parse.GetValue(mergeDir)!);
            ctx.Out.WriteLine($"merged {m.ShardCount} shard(s): {m.Prompts} graph(s) of {m.Model} through {m.Transcoders}");
            return 0;
        });
        cmd.Subcommands.Add(merge);
        return cmd;
    }

    /// <summary>The prompts of a file, one per non-empty line.</summary>
    static List<string> ReadPrompts(string path)
    {
        if (!File.Exists(path)) throw new MechanistException($"{path}: prompt file not found");
        var list = File.ReadAllLines(path).Where(l => l.Trim().Length > 0).ToList();
        return list.Count > 0 ? list : throw new MechanistException($"{path}: no prompts (one per line)");
    }

    /// <summary>The shipped CLT of a built-in model.</summary>
    internal static string DefaultTranscoders(string? modelSpec)
    {
        return BuiltInModels.RequireTranscoders(modelSpec);
    }
}
