using System.CommandLine;
using System.Net;
using System.Text;
using System.Text.Json;
using Mechanist.IO;
using Mechanist.Microscope;
using Mechanist.Models;
using Mechanist.Reporting;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary>
/// <c>mechanist microscope --model M (--text T | --text-file F | --corpus DIR | --generate N) [--json OUT] [--html OUT] [--png DIR]</c>.
/// </summary>
public sealed class MicroscopeCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var text = new Option<string>("--text") { Description = "One text." };
        var textFile = new Option<string>("--text-file") { Description = "A file with one text per line." };
        var corpus = new Option<string>("--corpus") { Description = "A folder of .txt files, one text per line." };
        var generate = new Option<int>("--generate") { Description = "Let the model write N texts (sampled, seeded) as its own corpus." };
        var json = new Option<string>("--json") { Description = "Write the report as JSON to this file ('-' for stdout)." };
        var html = new Option<string>("--html") { Description = "Write a self-contained HTML report." };
        var png = new Option<string>("--png") { Description = "Write heatmaps and curves as PNG files into this folder." };
        var contextuality = new Option<string>("--contextuality") { Description = "copy (a trainable copy of the model, as the paper), small, or none.", DefaultValueFactory = _ => "copy" };
        var ctxSteps = new Option<int>("--ctx-steps") { Description = "Training steps of the contextuality decoder.", DefaultValueFactory = _ => 400 };
        var removal = new Option<string>("--removal-lengths") { Description = "Text lengths (tokens) for the token-removal curve; empty to skip.", DefaultValueFactory = _ => "8,16,24,32" };
        var removeWords = new Option<string>("--remove-words") { Description = "Comma-separated extra words to remove." };
        var includeBos = new Option<bool>("--include-bos") { Description = "Keep BOS rows in the statistics (as the reference LLM-Microscope notebook's linearity fit does)." };
        var output = new Option<string>("--out") { Description = "Corpus scale: keep sums over tokens in DIR/microscope-I-of-N.safetensors (resumable; shards merge exactly with 'mechanist microscope merge DIR'). Contextuality, token removal and per-text views are left out." };
        var shard = new Option<string>("--shard") { Description = "With --out: i/N, read texts i, i+N, ... of the corpus." };
        contextuality.AcceptOnlyFromAmong("copy", "small", "none");
        var cmd = new Command("microscope", "LLM-Microscope: linearity, nonlinearity, contextuality, logit lens, intrinsic dimension, anisotropy, token removal.")
        { input.Model, input.Offline, text, textFile, corpus, generate, json, html, png, contextuality, ctxSteps, removal, removeWords, includeBos, output, shard };
        var sizer = new SizerOptions();
        sizer.AddTo(cmd);
        cmd.SetAction(parse =>
        {
            if (parse.GetValue(shard) is not null && parse.GetValue(output) is null) throw new MechanistException("--shard goes with --out DIR");
            using var model = input.LoadModel(parse, ctx);
            var texts = Texts(parse.GetValue(text), parse.GetValue(textFile), parse.GetValue(corpus), parse.GetValue(generate), model);
            if (parse.GetValue(output) is { } outDir)
            {
                var (index, count) = Mechanist.Cluster.ShardPlan.Parse(parse.GetValue(shard));
                var plan = new Mechanist.Cluster.ShardPlan(index, count);
                if (sizer.Handle(parse, ctx, f => Mechanist.Runtime.Sizers.MicroscopeCorpus(model, plan.Select(texts).Select(x => x.Item).ToList(), parse.GetValue(includeBos), merges: count == 1, fraction: f))) return 0;
                var clock = System.Diagnostics.Stopwatch.StartNew();
                var info = MicroscopeShards.Run(model, () => texts, index, count, outDir, parse.GetValue(includeBos),
                    progress: new Mechanist.Training.SyncProgress<(long Texts, long Tokens)>(p =>
                        ctx.Err.Write($"\r  {p.Texts:N0} texts, {p.Tokens:N0} tokens, {p.Tokens / Math.Max(1e-9, clock.Elapsed.TotalSeconds):N0} tokens/s   ")));
                ctx.Err.WriteLine();
                ctx.Out.WriteLine($"shard {index}/{count}: {info.TextsDone:N0} texts, {info.Tokens:N0} tokens -> {Path.Combine(outDir, MicroscopeShards.ShardName(index, count))}");
                if (count == 1) Emit(MicroscopeShards.Merge(model, outDir), parse, ctx, json, html, png, ModelLabel(model));
                return 0;
            }
            string ctxKind = parse.GetValue(contextuality)!;
            if (texts.Count < 2 && ctxKind != "none")
            {
                ctx.Err.WriteLine("contextuality skipped: it trains on some texts and scores others, so it needs at least two (use --text-file, --corpus or --generate)");
                ctxKind = "none";
            }
            var options = new MicroscopeOptions(
                ctxKind == "none" ? null : new ContextualityOptions(ctxKind == "copy" ? ContextDecoder.ModelCopy : ContextDecoder.Small, Steps: parse.GetValue(ctxSteps)),
                parse.GetValue(removal)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                    .Select(s => int.TryParse(s, out int v) && v > 2 ? v : throw new MechanistException($"--removal-lengths: '{s}' is not a length above 2")).ToArray(),
                parse.GetValue(removeWords)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), IncludeBos: parse.GetValue(includeBos));
            if (sizer.Handle(parse, ctx, f => Mechanist.Runtime.Sizers.Microscope(model, texts, options, f))) return 0;
            var report = MicroscopeRunner.Run(model, texts, options, new StageProgressPrinter(ctx.Err));
            ctx.Err.WriteLine();
            Emit(report, parse, ctx, json, html, png, ModelLabel(model));
            return 0;
        });

        var dir = new Argument<string>("folder") { Description = "Folder with every shard of a corpus-scale run (--out)." };
        var mJson = new Option<string>("--json") { Description = "Write the report as JSON to this file ('-' for stdout)." };
        var mHtml = new Option<string>("--html") { Description = "Write a self-contained HTML report." };
        var mPng = new Option<string>("--png") { Description = "Write curves as PNG files into this folder." };
        var merge = new Command("merge", "Check that a corpus-scale run's shards belong together and are complete, add their sums and report (linear maps refitted from the merged moments).")
        { dir, mJson, mHtml, mPng };
        merge.SetAction(parse =>
        {
            var report = MicroscopeShards.Merge(null, parse.GetValue(dir)!);
            string folder = Path.GetFullPath(parse.GetValue(dir)!);
            Emit(report, parse, ctx, mJson, mHtml, mPng, Path.GetFileNameWithoutExtension(report.Model.TrimEnd('/', '\\')));
            // The merged report also stays beside the shards.
            AtomicFile.WriteText(Path.Combine(folder, "report.json"), JsonSerializer.Serialize(report, JsonFormat.Options));
            return 0;
        });
        cmd.Subcommands.Add(merge);
        return cmd;
    }

    static void Emit(MicroscopeReport report, ParseResult parse, CliContext ctx, Option<string> json, Option<string> html, Option<string> png, string name)
    {
        if (parse.GetValue(json) is { } jsonPath)
        {
            string content = JsonSerializer.Serialize(report, JsonFormat.Options);
            if (jsonPath == "-") ctx.Out.WriteLine(content); else { AtomicFile.WriteText(jsonPath, content); ctx.Err.WriteLine($"wrote {jsonPath}"); }
        }
        var pngs = parse.GetValue(png) is { } dir ? WritePngs(report, dir) : new List<string>();
        if (parse.GetValue(html) is { } htmlPath) { AtomicFile.WriteText(htmlPath, Html(report, name)); ctx.Err.WriteLine($"wrote {htmlPath}"); }
        foreach (var p in pngs) ctx.Err.WriteLine($"wrote {p}");
        if (parse.GetValue(json) != "-") Summary(Render.Console(ctx), report);
    }

    static string ModelLabel(HookedTransformer model) => Path.GetFileNameWithoutExtension(model.Name.TrimEnd('/', '\\'));

    static List<string> Texts(string? text, string? file, string? corpus, int generate, HookedTransformer model)
    {
        int given = new[] { text != null, file != null, corpus != null, generate > 0 }.Count(x => x);
        if (given != 1) throw new MechanistException("give exactly one of --text, --text-file, --corpus or --generate");
        if (text != null) return new List<string> { text };
        if (file != null)
            return File.Exists(file) ? File.ReadAllLines(file).Where(l => l.Trim().Length > 0).ToList() : throw new MechanistException($"{file}: file not found");
        if (corpus != null)
        {
            if (!Directory.Exists(corpus)) throw new MechanistException($"{corpus}: folder not found");
            var lines = Directory.GetFiles(corpus, "*.txt").OrderBy(f => f).SelectMany(File.ReadAllLines).Where(l => l.Trim().Length > 0).ToList();
            return lines.Count > 0 ? lines : throw new MechanistException($"{corpus}: no .txt files with text");
        }
        return ModelCorpus.Generate(model, generate);
    }

    static void Summary(IAnsiConsole console, MicroscopeReport r)
    {
        console.MarkupLine($"[bold]{Markup.Escape(r.Model)}[/]: {r.Texts} texts, {r.Tokens} tokens");
        var table = new Table().AddColumns("depth", "linearity", "centred", "intrinsic dim", "anisotropy", "lens loss", "lens top-1 loss");
        for (int d = 0; d < r.Depths.Length; d++)
            table.AddRow(r.Depths[d], d < r.Linearity.Length ? r.Linearity[d].ToString("F3") : "", d < r.LinearityCentred.Length ? r.LinearityCentred[d].ToString("F3") : "",
                r.IntrinsicDimension[d].ToString("F1"), r.Anisotropy[d].ToString("F3"), r.LensLoss[d].ToString("F2"), r.LensTopTokenLoss[d].ToString("F2"));
        console.Write(table);
        console.MarkupLine("[grey]linearity of depth d: the map from d to d+1[/]");
        if (r.Contextuality is { } c)
        {
            var order = c.ClassMeans.OrderBy(kv => kv.Value).ToList();
            console.MarkupLine($"contextuality ({c.Decoder} decoder, prefix {c.PrefixLength}; lower = more context kept): " +
                string.Join(", ", order.Select(kv => $"{kv.Key} {kv.Value:F2} (n={c.ClassCounts[kv.Key]})")));
            console.MarkupLine($"most contextual class: [bold]{order[0].Key}[/]");
        }
        if (r.Removal is { } rem)
            foreach (var curve in rem)
                console.MarkupLine($"removing {curve.Removed}: " + string.Join(", ", curve.Points.Select(p => $"len {p.Length}: +{p.Increase:F3} ({p.RemovedShare:P0} removed)")));
    }

    static List<string> WritePngs(MicroscopeReport r, string dir)
    {
        Directory.CreateDirectory(dir);
        var files = new List<string>();
        string P(string name) { var p = Path.Combine(dir, name); files.Add(p); return p; }
        Plots.Curves(new Dictionary<string, double[]> { ["linearity"] = r.Linearity, ["centred (update only)"] = r.LinearityCentred }, P("linearity.png"), "Layer linearity", "layer pair (d → d+1)", "score");
        Plots.Curves(new Dictionary<string, double[]> { ["TwoNN"] = r.IntrinsicDimension }, P("intrinsic_dimension.png"), "Intrinsic dimension", "depth", "dimension");
        Plots.Curves(new Dictionary<string, double[]> { ["exact"] = r.Anisotropy, ["power iteration"] = r.AnisotropyPowerIteration }, P("anisotropy.png"), "Anisotropy", "depth", "λ_max / trace");
        Plots.Curves(new Dictionary<string, double[]> { ["next-token loss"] = r.LensLoss, ["top-1 loss"] = r.LensTopTokenLoss }, P("logit_lens.png"), "Logit-lens quality", "depth", "nats");
        foreach (var v in r.PerText)
        {
            Plots.Heatmap(v.Nonlinearity, r.Linearity.Select((_, i) => $"{r.Depths[i]}→{r.Depths[i + 1]}").ToArray(), v.Tokens, P($"nonlinearity_text{v.Index}.png"), "Per-token nonlinearity", "error");
            Plots.Heatmap(v.LensLoss.Select(row => row.Select(x => double.IsNaN(x) ? 0 : x).ToArray()).ToArray(), r.Depths, v.Tokens, P($"lens_loss_text{v.Index}.png"), "Logit-lens loss per token", "nats");
            if (v.Contextuality is { } c)
                Plots.Heatmap(new[] { c.Select(x => x ?? 0).ToArray() }, new[] { "prefix NLL" }, v.Tokens, P($"contextuality_text{v.Index}.png"), "Contextuality (lower = more context)", "nats");
        }
        if (r.Removal is { } rem)
        {
            var series = rem.ToDictionary(c => c.Removed, c => c.Points.Select(p => p.Increase).ToArray());
            Plots.Curves(series, P("token_removal.png"), "Loss increase after removal (x: length index)", "length bucket", "Δ loss (nats)");
        }
        return files;
    }

    static string Html(MicroscopeReport r, string model)
    {
        string Img(Action<string> draw)
        {
            string tmp = Path.Combine(Path.GetTempPath(), "mechanist-" + Guid.NewGuid().ToString("N") + ".png");
            try { draw(tmp); return $"<img src=\"data:image/png;base64,{Convert.ToBase64String(File.ReadAllBytes(tmp))}\">"; }
            finally { File.Delete(tmp); }
        }
        var sb = new StringBuilder();
        sb.Append($"<!doctype html><html><head><meta charset=\"utf-8\"><title>LLM-Microscope: {WebUtility.HtmlEncode(model)}</title>");
        sb.Append("<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}</style></head><body>");
        sb.Append($"<h1>LLM-Microscope: {WebUtility.HtmlEncode(model)}</h1><p>{r.Texts} texts, {r.Tokens} tokens.</p>");
        sb.Append("<table><tr><th>depth</th><th>linearity</th><th>centred</th><th>intrinsic dim</th><th>anisotropy</th><th>lens loss</th><th>lens top-1</th></tr>");
        for (int d = 0; d < r.Depths.Length; d++)
            sb.Append($"<tr><td>{r.Depths[d]}</td><td>{(d < r.Linearity.Length ? r.Linearity[d].ToString("F3") : "")}</td><td>{(d < r.LinearityCentred.Length ? r.LinearityCentred[d].ToString("F3") : "")}</td><td>{r.IntrinsicDimension[d]:F1}</td><td>{r.Anisotropy[d]:F3}</td><td>{r.LensLoss[d]:F2}</td><td>{r.LensTopTokenLoss[d]:F2}</td></tr>");
        sb.Append("</table>");
        sb.Append(Img(p => Plots.Curves(new Dictionary<string, double[]> { ["linearity"] = r.Linearity, ["centred"] = r.LinearityCentred }, p, "Layer linearity", "layer pair", "score")));
        if (r.Contextuality is { } c)
        {
            sb.Append($"<h2>Contextuality ({c.Decoder} decoder)</h2><table><tr><th>class</th><th>mean prefix NLL (lower = more context)</th><th>tokens</th></tr>");
            foreach (var (cls, v) in c.ClassMeans.OrderBy(kv => kv.Value)) sb.Append($"<tr><td>{cls}</td><td>{v:F3}</td><td>{c.ClassCounts[cls]}</td></tr>");
            sb.Append("</table>");
        }
        foreach (var v in r.PerText)
        {
            sb.Append($"<h2>Text {v.Index}</h2>");
            sb.Append(Img(p => Plots.Heatmap(v.Nonlinearity, r.Linearity.Select((_, i) => $"{r.Depths[i]}→{r.Depths[i + 1]}").ToArray(), v.Tokens, p, "Per-token nonlinearity", "error")));
            if (v.Contextuality is { } cv)
                sb.Append(Img(p => Plots.Heatmap(new[] { cv.Select(x => x ?? 0).ToArray() }, new[] { "prefix NLL" }, v.Tokens, p, "Contextuality", "nats")));
        }
        if (r.Removal is { } rem)
        {
            sb.Append("<h2>Token removal</h2><table><tr><th>removed</th><th>length</th><th>texts</th><th>share removed</th><th>loss before</th><th>after</th><th>increase</th></tr>");
            foreach (var curve in rem) foreach (var p in curve.Points)
                sb.Append($"<tr><td>{curve.Removed}</td><td>{p.Length}</td><td>{p.Texts}</td><td>{p.RemovedShare:P0}</td><td>{p.BaseLoss:F3}</td><td>{p.RemovedLoss:F3}</td><td>{p.Increase:F3}</td></tr>");
            sb.Append("</table>");
        }
        sb.Append("</body></html>");
        return sb.ToString();
    }
}

/// <summary>Prints stage progress as one updating line.</summary>
public sealed class StageProgressPrinter(TextWriter err) : IProgress<MicroscopeRunner.Progress>
{
    DateTime _last;
    string? _stage;

    /// <inheritdoc/>
    public void Report(MicroscopeRunner.Progress p)
    {
        if (p.Stage == _stage && p.Done != p.Total && DateTime.UtcNow - _last < TimeSpan.FromMilliseconds(500)) return;
        if (_stage != null && p.Stage != _stage) err.WriteLine();
        _stage = p.Stage; _last = DateTime.UtcNow;
        int width = 30, filled = width * p.Done / Math.Max(1, p.Total);
        err.Write($"\r  {p.Stage,-36} [{new string('#', filled)}{new string('.', width - filled)}] {p.Done}/{p.Total}   ");
    }
}
