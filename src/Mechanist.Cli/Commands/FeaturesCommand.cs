using System.CommandLine;
using Mechanist.Dictionaries;
using Mechanist.Features;
using Mechanist.Reporting;
using Mechanist.Toy;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary>
/// <c>mechanist features build|merge|show|search|label|explain|export</c>: feature dashboards (top and sampled examples, histograms,
/// logit effects, labels) in a SQLite feature store.
/// </summary>
public sealed class FeaturesCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var cmd = new Command("features", "Feature dashboards: build a feature store over a corpus (sharded, resumable), then show, search, label, explain and export features.");
        cmd.Subcommands.Add(BuildCommand(ctx));
        cmd.Subcommands.Add(MergeCommand(ctx));
        cmd.Subcommands.Add(ShowCommand(ctx));
        cmd.Subcommands.Add(SearchCommand(ctx));
        cmd.Subcommands.Add(LabelCommand(ctx));
        cmd.Subcommands.Add(ExplainCommand(ctx));
        cmd.Subcommands.Add(ScoreCommand(ctx));
        cmd.Subcommands.Add(ExportCommand(ctx));
        return cmd;
    }

    /// <summary>A store path: the file, or a build folder holding features.db.</summary>
    internal static FeatureStore OpenStore(string path) =>
        FeatureStore.Open(Directory.Exists(path) ? Path.Combine(path, FeatureBuild.MergedName) : path);

    static Option<string> Db() => new("--db") { Description = "Feature store: features.db, or the build folder holding it.", Required = true };

    static Command BuildCommand(CliContext ctx)
    {
        var model = CommonOptions.Model(required: false);
        var offline = CommonOptions.Offline();
        var dict = new Option<string>("--dict") { Description = "Dictionary folder or hub repository (org/name[@revision]): circuit-tracer transcoders/CLT or an SAELens SAE (default for built-in models: their CLT)." };
        var corpus = new Option<string>("--corpus") { Description = "Text file (one per line), JSONL with \"text\", or a folder of them. Default for built-in models: the toy corpus (--texts lines)." };
        var texts = new Option<int>("--texts") { Description = "Lines of the toy corpus when no --corpus is given.", DefaultValueFactory = _ => 5_000 };
        var maxTexts = new Option<long>("--max-texts") { Description = "Read only the corpus's first N texts." };
        var shard = new Option<string>("--shard") { Description = "i/N: read texts i, i+N, ... of the corpus and write features-i-of-N.db (merge with 'mechanist features merge DIR')." };
        var topK = new Option<int>("--top-k") { Description = "Top-activating examples kept per feature.", DefaultValueFactory = _ => 20 };
        var perInterval = new Option<int>("--per-interval") { Description = "Examples sampled per octave of activation per feature.", DefaultValueFactory = _ => 4 };
        var context = new Option<string>("--context") { Description = "Tokens of context before,after the firing token.", DefaultValueFactory = _ => "12,4" };
        var checkpoint = new Option<long>("--checkpoint-tokens") { Description = "Tokens between saves of the shard's state (a killed build resumes from the last).", DefaultValueFactory = _ => 200_000 };
        var seed = new Option<int>("--seed") { Description = "Seed of the toy corpus.", DefaultValueFactory = _ => 0 };
        var batchTexts = new Option<int>("--batch-texts") { Description = "Texts per forward (1 makes every text's numbers independent of which shard reads it).", DefaultValueFactory = _ => 64 };
        var output = new Option<string>("--out") { Description = "Build folder (shards of one build share it); the merged store is DIR/features.db." };
        var cmd = new Command("build", "Stream a corpus through the model with a dictionary and keep, per feature, top and sampled examples, a histogram and counts, in a SQLite feature store.")
        { model, offline, dict, corpus, texts, maxTexts, shard, topK, perInterval, context, checkpoint, seed, batchTexts, output };
        var sizer = new SizerOptions();
        sizer.AddTo(cmd, output);
        cmd.SetAction(parse =>
        {
            var (index, count) = Mechanist.Cluster.ShardPlan.Parse(parse.GetValue(shard));
            var ctxParts = parse.GetValue(context)!.Split(',', StringSplitOptions.TrimEntries);
            if (ctxParts.Length != 2 || !int.TryParse(ctxParts[0], out int before) || !int.TryParse(ctxParts[1], out int after) || before < 0 || after < 0)
                throw new MechanistException($"--context '{parse.GetValue(context)}': give BEFORE,AFTER token counts, e.g. 12,4");
            if (parse.GetValue(batchTexts) is < 1 or > 4096) throw new MechanistException("--batch-texts must be within 1..4096");
            string modelName = parse.GetValue(model) ?? ToyPresets.DefaultName;
            string dictDir = parse.GetValue(dict) is { } given ? DictionaryInput.Resolve(given, parse.GetValue(offline), ctx) : TraceCommand.DefaultTranscoders(parse.GetValue(model));
            Func<IEnumerable<string>> texts0;
            if (parse.GetValue(corpus) is { } c) { _ = CorpusReader.Read(c); texts0 = () => CorpusReader.Read(c); }
            else if (ToyPresets.All.Any(p => p.Name == modelName)) { int n = parse.GetValue(texts), s = parse.GetValue(seed); texts0 = () => new ToyCorpus(s + 1000).Lines(n); }
            else throw new MechanistException("give --corpus (only built-in models have a default corpus)");
            Func<IEnumerable<string>> all = parse.GetValue(maxTexts) is > 0 and var max ? () => texts0().Take((int)Math.Min(int.MaxValue, max)) : texts0;
            using var m = ModelInput.Load(parse.GetValue(model), parse, parse.GetValue(offline), ctx);
            using var source = FeatureSource.Load(m, dictDir);
            string dir = parse.GetValue(output)!;
            var buildOptions = new FeatureBuildOptions(new FeatureSketchSettings(parse.GetValue(topK), parse.GetValue(perInterval), before, after),
                index, count, parse.GetValue(checkpoint), parse.GetValue(batchTexts));
            if (sizer.Handle(parse, ctx, f => Mechanist.Runtime.Sizers.FeatureBuild(m, source, dictDir, all, buildOptions, f))) return 0;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var info = FeatureBuild.Run(m, source, dictDir, all, buildOptions, dir,
                new Mechanist.Training.SyncProgress<FeatureBuildProgress>(p =>
                    ctx.Err.Write($"\r  {p.Texts:N0} texts, {p.Tokens:N0} tokens, {p.Tokens / Math.Max(1e-9, clock.Elapsed.TotalSeconds):N0} tokens/s   ")));
            ctx.Err.WriteLine();
            ctx.Out.WriteLine($"shard {index}/{count}: {info.TextsDone:N0} texts, {info.Tokens:N0} tokens, {info.Layers.Length} layer(s) × {info.DDict:N0} features -> {Path.Combine(dir, FeatureBuild.ShardName(index, count))}");
            if (count == 1)
            {
                var merged = FeatureBuild.Merge(dir);
                ctx.Out.WriteLine($"feature store: {Path.Combine(dir, FeatureBuild.MergedName)} (open it with: mechanist serve --features {Path.Combine(dir, FeatureBuild.MergedName)})");
            }
            return 0;
        });
        return cmd;
    }

    static Command MergeCommand(CliContext ctx)
    {
        var dir = new Argument<string>("folder") { Description = "Build folder with every shard's store." };
        var cmd = new Command("merge", "Check that a build's shards belong together and are complete, and write DIR/features.db over all of them.") { dir };
        cmd.SetAction(parse =>
        {
            var m = FeatureBuild.Merge(parse.GetValue(dir)!);
            ctx.Out.WriteLine($"merged {m.ShardCount} shard(s): {m.TextsDone:N0} texts, {m.Tokens:N0} tokens -> {Path.Combine(parse.GetValue(dir)!, FeatureBuild.MergedName)}");
            return 0;
        });
        return cmd;
    }

    static Command ShowCommand(CliContext ctx)
    {
        var db = Db();
        var feature = new Argument<string>("feature") { Description = "LAYER:FEATURE, e.g. 0:776." };
        var json = CommonOptions.Json();
        db.Description = "Feature store (features.db or its build folder), or a folder of published features (index.json.gz + per-layer files, as transcoder repositories ship them and features export writes them).";
        var cmd = new Command("show", "A feature's dashboard: label, counts, top logits, top and sampled examples.") { db, feature, json };
        cmd.SetAction(parse =>
        {
            var store = FeatureStores.Open(parse.GetValue(db)!);
            var (li, f) = store.Resolve(parse.GetValue(feature)!);
            var d = store.Dashboard(store.Info.Layers[li], f);
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonFormat.Serialize(d)); return 0; }
            var console = Render.Console(ctx);
            var s = d.Summary;
            console.MarkupLine($"[bold]L{s.Layer}/{s.Feature}[/] {Markup.Escape(s.Label)}");
            console.MarkupLine(s.Tokens > 0 ? $"fires on {s.Count:N0} of {s.Tokens:N0} tokens ({s.Frequency:P3}), max {s.Max:G4}, mean {s.Mean:G4}"
                : $"fires on {s.Frequency:P3} of tokens (published features keep no counts), max {s.Max:G4}, mean of percentiles {s.Mean:G4}");
            if (s.Explanation is { } e) console.MarkupLine($"explanation: {Markup.Escape(e)}");
            foreach (var sc in store.Scores(s.Layer, s.Feature))
                console.MarkupLine($"{sc.Method} score: {sc.BalancedAccuracy:F3} balanced accuracy ({sc.TruePositives}/{sc.Positives} firing, {sc.TrueNegatives}/{sc.Negatives} not; {Markup.Escape(sc.Model)}; scored: {Markup.Escape(sc.Explanation)})");
            string Logit(TokenValue t) => float.IsNaN(t.Value) ? t.Token.Trim() : $"{t.Token.Trim()} {t.Value:+0.00;-0.00}";
            console.MarkupLine($"promotes: {Markup.Escape(string.Join("  ", d.TopLogits.Take(8).Select(Logit)))}");
            console.MarkupLine($"suppresses: {Markup.Escape(string.Join("  ", d.BottomLogits.Take(8).Select(Logit)))}");
            string Context(ShownExample ex) => string.Concat(ex.Tokens.Select((t, i) => i == ex.MaxIndex ? $"[bold yellow]«{Markup.Escape(t)}»[/]" : Markup.Escape(t)));
            if (d.DecoderNorms is { Length: > 0 } norms)
                console.MarkupLine($"decoder norm into layer: {string.Join("  ", norms.Select((n, l) => $"L{l} {n:F2}"))}");
            if (d.Similar is { Length: > 0 } near)
                console.MarkupLine($"similar (output-direction cosine): {string.Join("  ", near.Select(n => $"{n.Layer}:{n.Feature} {n.Cosine:F2}"))}");
            // The activation histogram as bars (our stores: quarter-octave bins with firings; published features: equal-width bins).
            if (d.Histogram.Length > 0)
            {
                console.MarkupLine($"[bold]activations[/] (firings per {d.HistogramScale} bin)");
                var chart = new BarChart().Width(60);
                foreach (var b in d.Histogram)
                    chart.AddItem(double.IsPositiveInfinity(b.High) ? $"≥{b.Low:G3}" : $"{b.Low:G3}–{b.High:G3}", b.Count, Color.SteelBlue);
                console.Write(chart);
            }
            var table = new Table().Title("top examples").AddColumn("act").AddColumn("context");
            foreach (var ex in d.Top.Take(10)) table.AddRow($"{ex.Activation:F3}", Context(ex));
            console.Write(table);
            // Sampled examples from each octave of activation (the whole range, not only the top).
            var sampled = new Table().Title("sampled by activation octave").AddColumn("octave").AddColumn("firings").AddColumn("act").AddColumn("context");
            foreach (var interval in d.Intervals.Where(i => i.Examples.Length > 0))
                foreach (var (ex, k) in interval.Examples.Select((ex, k) => (ex, k)))
                    sampled.AddRow(k > 0 ? "" : interval.Name is { } name ? Markup.Escape(name) : $"{interval.Low:G3}–{(double.IsPositiveInfinity(interval.High) ? "∞" : interval.High.ToString("G3"))}",
                        k == 0 ? interval.Count.ToString("N0") : "", $"{ex.Activation:F3}", Context(ex));
            if (sampled.Rows.Count > 0) console.Write(sampled);
            return 0;
        });
        return cmd;
    }

    static Command SearchCommand(CliContext ctx)
    {
        var db = Db();
        var query = new Argument<string>("query") { Description = "Text to find in labels, explanations and top tokens, or LAYER:FEATURE (empty: the most frequent features).", Arity = ArgumentArity.ZeroOrOne };
        var layer = new Option<int?>("--layer") { Description = "Only this model layer." };
        var limit = new Option<int>("--limit") { Description = "Most features listed.", DefaultValueFactory = _ => 20 };
        var json = CommonOptions.Json();
        var cmd = new Command("search", "Find features by text, token or LAYER:FEATURE.") { db, query, layer, limit, json };
        cmd.SetAction(parse =>
        {
            var store = OpenStore(parse.GetValue(db)!);
            var hits = store.Search(parse.GetValue(query), parse.GetValue(limit), parse.GetValue(layer));
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonFormat.Serialize(hits)); return 0; }
            var table = new Table().AddColumn("feature").AddColumn("label").AddColumn("frequency").AddColumn("max");
            foreach (var h in hits) table.AddRow($"{h.Layer}:{h.Feature}", Markup.Escape(h.Label), $"{h.Frequency:P3}", $"{h.Max:G4}");
            Render.Console(ctx).Write(table);
            if (hits.Count == 0) ctx.Err.WriteLine("no feature matches");
            return 0;
        });
        return cmd;
    }

    static Command LabelCommand(CliContext ctx)
    {
        var db = Db();
        var feature = new Argument<string>("feature") { Description = "LAYER:FEATURE." };
        var text = new Argument<string>("label") { Description = "The label (empty to clear it and show the automatic one again)." };
        var cmd = new Command("label", "Set your own label for a feature (kept in the store, and across rebuilds of the same dictionary).") { db, feature, text };
        cmd.SetAction(parse =>
        {
            var store = OpenStore(parse.GetValue(db)!);
            var (li, f) = store.Resolve(parse.GetValue(feature)!);
            store.SetLabel(store.Info.Layers[li], f, parse.GetValue(text));
            ctx.Out.WriteLine($"L{store.Info.Layers[li]}/{f}: {store.Dashboard(store.Info.Layers[li], f).Summary.Label}");
            return 0;
        });
        return cmd;
    }

    /// <summary>The features named by --features (LAYER:FEATURE, comma-separated), or the <paramref name="top"/> most frequent that fired.</summary>
    static List<(int Layer, int Feature)> FeatureList(FeatureStore store, string? spec, int top) => spec is { } fs
        ? fs.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(s => { var (li, f) = store.Resolve(s); return (store.Info.Layers[li], f); }).ToList()
        : store.Search(null, top).Where(h => h.Count > 0).Select(h => (h.Layer, h.Feature)).ToList();

    /// <summary>The bearer token in the environment variable named by --api-key-env (null without one), or a clear error when it is unset.</summary>
    static string? ApiKey(string? variable) =>
        variable is { } env ? Environment.GetEnvironmentVariable(env) ?? throw new MechanistException($"--api-key-env: {env} is not set") : null;

    static Command ExplainCommand(CliContext ctx)
    {
        var db = Db();
        var features = new Option<string>("--features") { Description = "Comma-separated LAYER:FEATURE list (default: the --top most frequent)." };
        var top = new Option<int>("--top") { Description = "Explain the N most frequent features.", DefaultValueFactory = _ => 10 };
        var endpoint = new Option<string>("--endpoint") { Description = "An OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1 (llama.cpp, Ollama, vLLM).", Required = true };
        var llm = new Option<string>("--llm") { Description = "Model name to ask the server for.", DefaultValueFactory = _ => "default" };
        var keyEnv = new Option<string>("--api-key-env") { Description = "Environment variable holding a bearer token, if the server needs one." };
        var timeout = new Option<double>("--timeout") { Description = "Seconds per request.", DefaultValueFactory = _ => 120 };
        var cmd = new Command("explain", "Ask a local LLM server for a one-sentence explanation of features and store it.") { db, features, top, endpoint, llm, keyEnv, timeout };
        cmd.SetAction(async (parse, ct) =>
        {
            var store = OpenStore(parse.GetValue(db)!);
            var list = FeatureList(store, parse.GetValue(features), parse.GetValue(top));
            string? key = ApiKey(parse.GetValue(keyEnv));
            var options = new ExplainerOptions(parse.GetValue(endpoint)!, parse.GetValue(llm)!, key, TimeoutSeconds: parse.GetValue(timeout));
            using var http = new HttpClient { Timeout = Timeout.InfiniteTimeSpan };
            foreach (var (layer, f) in list)
            {
                var d = store.Dashboard(layer, f);
                string text = await FeatureExplainer.ExplainAsync(http, options, d, ct);
                store.SetExplanation(layer, f, text);
                ctx.Out.WriteLine($"L{layer}/{f}: {text}");
            }
            return 0;
        });
        return cmd;
    }

    static Command ScoreCommand(CliContext ctx)
    {
        var db = Db();
        var features = new Option<string>("--features") { Description = "Comma-separated LAYER:FEATURE list (default: the --top most frequent)." };
        var top = new Option<int>("--top") { Description = "Score the N most frequent features.", DefaultValueFactory = _ => 10 };
        var endpoint = new Option<string>("--endpoint") { Description = "An OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1 (llama.cpp, Ollama, vLLM).", Required = true };
        var llm = new Option<string>("--llm") { Description = "Model name to ask the server for.", DefaultValueFactory = _ => "default" };
        var method = new Option<string>("--method") { Description = "detection (does the feature fire in this text?) or fuzzing (are these marked tokens where it fires?).", DefaultValueFactory = _ => "detection" };
        var positives = new Option<int>("--positives") { Description = "Firing (or correctly marked) contexts per feature, drawn across its activation intervals.", DefaultValueFactory = _ => 10 };
        var negatives = new Option<int>("--negatives") { Description = "Non-firing (or wrongly marked) contexts per feature.", DefaultValueFactory = _ => 10 };
        var rps = new Option<double>("--rps") { Description = "At most this many requests a second (0: no limit).", DefaultValueFactory = _ => 0 };
        var shard = new Option<string>("--shard") { Description = "i/N: score every N-th feature of the list, starting at the i-th (run the N shards anywhere; they write to the same store)." };
        var force = new Option<bool>("--force") { Description = "Score again features that already have a score for this method and explanation (default: skip them, so a stopped run resumes)." };
        var keyEnv = new Option<string>("--api-key-env") { Description = "Environment variable holding a bearer token, if the server needs one." };
        var timeout = new Option<double>("--timeout") { Description = "Seconds per request.", DefaultValueFactory = _ => 60 };
        var seed = new Option<int>("--seed") { Description = "Seed of the wrong marks and of the order of the questions.", DefaultValueFactory = _ => 0 };
        var model = CommonOptions.Model(required: false);
        model.Description = "For detection: the model the store was built on (default: the one it names), run on other features' windows to find contexts where this feature stays silent.";
        var offline = CommonOptions.Offline();
        method.AcceptOnlyFromAmong("detection", "fuzzing");
        var cmd = new Command("score", "Score features' explanations (or labels) with a local LLM server, as Delphi does: balanced accuracy of its predictions of where each feature fires, stored beside the explanation.")
        { db, features, top, endpoint, llm, method, positives, negatives, rps, shard, force, keyEnv, timeout, seed, model, offline };
        cmd.SetAction(async (parse, ct) =>
        {
            var store = OpenStore(parse.GetValue(db)!);
            var how = FeatureScorer.Parse(parse.GetValue(method)!);
            if (parse.GetValue(positives) < 1 || parse.GetValue(negatives) < 1) throw new MechanistException("--positives and --negatives must be at least 1");
            if (parse.GetValue(rps) < 0) throw new MechanistException("--rps must not be negative");
            var (shardIndex, shardCount) = Mechanist.Cluster.ShardPlan.Parse(parse.GetValue(shard));
            var list = FeatureList(store, parse.GetValue(features), parse.GetValue(top));
            list = list.Where((_, i) => i % shardCount == shardIndex).ToList();
            string? key = ApiKey(parse.GetValue(keyEnv));
            var options = new ScoringOptions(parse.GetValue(endpoint)!, parse.GetValue(llm)!, key, parse.GetValue(positives), parse.GetValue(negatives),
                parse.GetValue(timeout), parse.GetValue(rps), parse.GetValue(seed));
            using var http = new HttpClient { Timeout = Timeout.InfiniteTimeSpan };
            var failed = new List<string>();
            // Detection needs contexts where a feature does not fire: other features' windows, each run through the store's model and
            // dictionary (once per layer, every feature at once).
            Mechanist.Models.HookedTransformer? m = null; FeatureSource? source = null;
            var windowCache = new Dictionary<int, (List<(long[] Ids, string[] Tokens)> Windows, float[][] Maxima)>();
            IReadOnlyList<string>? Silent(int layer, int f)
            {
                if (how != ScoreMethod.Detection) return null;
                if (m is null)
                {
                    m = ModelInput.Load(parse.GetValue(model) ?? store.Info.Model, parse, parse.GetValue(offline), ctx);
                    source = FeatureSource.Load(m, store.Info.Dictionary);
                    if (source.Identity != store.Info.DictionaryId && store.Info.DictionaryId.Length > 0)
                        throw new MechanistException($"{store.Info.Dictionary}: the dictionary's files changed since the store was built");
                }
                if (!windowCache.TryGetValue(layer, out var entry))
                {
                    var windows = store.Windows(layer, 4 * options.Negatives + 20, options.Seed);
                    int li = Array.IndexOf(store.Info.Layers, layer);
                    entry = windowCache[layer] = (windows, FeatureScorer.WindowMaxima(m, source!, li, windows.Select(w => w.Ids).ToList()));
                }
                return entry.Windows.Select((w, i) => (w, i)).Where(x => entry.Maxima[x.i][f] <= 0).Select(x => string.Concat(x.w.Tokens)).ToList();
            }
            foreach (var (layer, f) in list)
            {
                var d = store.Dashboard(layer, f);
                // The explanation is what is scored; a feature without one is scored on its label.
                string text = d.Summary.Explanation ?? d.Summary.Label;
                if (!parse.GetValue(force) && store.Scores(layer, f).Any(s => s.Method == FeatureScorer.Name(how) && s.Explanation == text))
                {
                    ctx.Out.WriteLine($"L{layer}/{f}: already scored ({FeatureScorer.Name(how)}); --force scores it again");
                    continue;
                }
                try
                {
                    var score = await FeatureScorer.ScoreAsync(http, options, d, text, how, Silent(layer, f), ct);
                    store.SetScore(layer, f, score);
                    ctx.Out.WriteLine($"L{layer}/{f}: {score.Method} balanced accuracy {score.BalancedAccuracy:F3} ({score.TruePositives}/{score.Positives} firing, {score.TrueNegatives}/{score.Negatives} not); scored: {text}");
                }
                catch (MechanistException e)
                {
                    // No score from part of the answers: the feature keeps whatever it had, and the run goes on.
                    ctx.Err.WriteLine($"L{layer}/{f}: no score: {e.Message}");
                    failed.Add($"{layer}:{f}");
                }
            }
            source?.Dispose(); m?.Dispose();
            if (failed.Count > 0) throw new MechanistException($"{failed.Count} of {list.Count} feature(s) got no score ({string.Join(", ", failed.Take(10))}); run again to retry them");
            return 0;
        });
        return cmd;
    }

    static Command ExportCommand(CliContext ctx)
    {
        var db = Db();
        var output = new Option<string>("--out") { Description = "Folder. bin: index.json.gz and layer_L.bin at its top (serve it as circuit-tracer's features_dir); json: DIR/features/SCAN/INDEX.json.", Required = true };
        var layout = new Option<string>("--layout") { Description = "bin (circuit-tracer's newest layout: an index and one binary file per layer) or json (one file per feature, the older layout and Neuronpedia's).", DefaultValueFactory = _ => "bin" };
        var scan = new Option<string>("--scan") { Description = "transcoder_id written in each feature; with --layout json also the folder name (default: the dictionary folder's name)." };
        var features = new Option<string>("--features") { Description = "With --layout json: comma-separated LAYER:FEATURE list (default: every feature that fired). The bin layout holds every feature." };
        layout.AcceptOnlyFromAmong("bin", "json");
        var cmd = new Command("export", "Export features in circuit-tracer's feature layouts (its frontend and Neuronpedia read them).") { db, output, layout, scan, features };
        cmd.SetAction(parse =>
        {
            var store = OpenStore(parse.GetValue(db)!);
            string scanName = parse.GetValue(scan) ?? Path.GetFileName(store.Info.Dictionary.TrimEnd('/', '\\'));
            string dir = parse.GetValue(output)!;
            if (parse.GetValue(layout) == "bin")
            {
                if (parse.GetValue(features) is not null) throw new MechanistException("--features goes with --layout json: the bin layout holds every feature");
                int records = FeatureExport.WriteBinary(store, dir, scanName);
                ctx.Out.WriteLine($"wrote {records:N0} feature records ({store.Info.Layers.Length} layer file(s)) and index.json.gz to {dir}");
                return 0;
            }
            var list = parse.GetValue(features)?.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(s => { var (li, f) = store.Resolve(s); return (store.Info.Layers[li], f); }).ToList();
            int n = FeatureExport.Write(store, dir, scanName, list);
            ctx.Out.WriteLine($"wrote {n:N0} feature file(s) to {Path.Combine(dir, "features", scanName)}");
            return 0;
        });
        return cmd;
    }
}
