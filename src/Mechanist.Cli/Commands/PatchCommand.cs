using System.CommandLine;
using System.Text.Json;
using Mechanist.Analysis;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist patch --model M --clean T --corrupt T --answer A --wrong B --what resid|attn|mlp|heads|head-qkv [--method exact|attribution|both]</c>.</summary>
public sealed class PatchCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var clean = new Option<string>("--clean") { Description = "Clean prompt.", Required = true };
        var corrupt = new Option<string>("--corrupt") { Description = "Corrupted prompt (same number of tokens).", Required = true };
        var answer = new Option<string>("--answer") { Description = "Answer token on the clean prompt.", Required = true };
        var wrong = new Option<string>("--wrong") { Description = "Answer token on the corrupted prompt (metric: logit difference)." };
        var metricOpt = new Option<string>("--metric") { Description = "logit-diff (default with --wrong), prob, loss or kl.", DefaultValueFactory = _ => "" };
        var what = new Option<string>("--what") { Description = "resid, attn, mlp, heads, heads-pos or head-qkv.", DefaultValueFactory = _ => "resid" };
        var method = new Option<string>("--method") { Description = "exact, attribution or both.", DefaultValueFactory = _ => "exact" };
        var json = CommonOptions.Json();
        what.AcceptOnlyFromAmong("resid", "attn", "mlp", "heads", "heads-pos", "head-qkv");
        method.AcceptOnlyFromAmong("exact", "attribution", "both");
        metricOpt.AcceptOnlyFromAmong("", "logit-diff", "prob", "loss", "kl");
        var cmd = new Command("patch", "Activation (or attribution) patching from a clean into a corrupted prompt.")
        { input.Model, input.Offline, input.NoBos, clean, corrupt, answer, wrong, metricOpt, what, method, json };
        cmd.SetAction(parse =>
        {
            using var model = input.LoadModel(parse, ctx);
            bool? bos = parse.GetValue(input.NoBos) ? false : null;
            using var cleanTokens = model.ToTokens(parse.GetValue(clean)!, bos);
            using var corruptTokens = model.ToTokens(parse.GetValue(corrupt)!, bos);
            long a = TokenText.AnswerId(model, parse.GetValue(answer)!);
            long? w = parse.GetValue(wrong) is { } ws ? TokenText.AnswerId(model, ws) : null;
            string m = parse.GetValue(metricOpt)!;
            if (m == "") m = w != null ? "logit-diff" : "prob";
            using var cleanLogits = model.Run(cleanTokens);
            PatchMetric metric = m switch
            {
                "logit-diff" => new PatchMetric.LogitDiff(a, w ?? throw new MechanistException("--metric logit-diff needs --wrong")),
                "prob" => new PatchMetric.Probability(a),
                "loss" => new PatchMetric.Loss(a),
                _ => new PatchMetric.KlDivergence(cleanLogits[0, -1].to(TorchSharp.torch.ScalarType.Float32).log_softmax(-1)),
            };
            var target = parse.GetValue(what) switch
            {
                "attn" => PatchTarget.AttnOut, "mlp" => PatchTarget.MlpOut, "heads" => PatchTarget.Heads,
                "heads-pos" => PatchTarget.HeadsPerPosition, "head-qkv" => PatchTarget.HeadQkv, _ => PatchTarget.Resid,
            };
            string methodName = parse.GetValue(method)!;
            var grids = new List<PatchGrid>();
            if (methodName != "attribution") grids.Add(ActivationPatching.Run(model, cleanTokens, corruptTokens, metric, target, PatchMethod.Exact));
            if (methodName != "exact") grids.Add(ActivationPatching.Run(model, cleanTokens, corruptTokens, metric, target, PatchMethod.Attribution));
            double? correlation = grids.Count == 2 ? grids[0].CorrelationWith(grids[1]) : null;
            if (parse.GetValue(json))
            {
                ctx.Out.WriteLine(JsonSerializer.Serialize(new { grids, correlation }, JsonOutput.Options));
                return 0;
            }
            var console = Render.Console(ctx);
            foreach (var g in grids)
            {
                console.MarkupLine($"[bold]{g.Method} patching of {g.Target}[/], metric {Markup.Escape(g.Metric)}: clean {g.CleanMetric:F3}, corrupted {g.CorruptedMetric:F3} (scores: 1 = clean restored, 0 = corrupted)");
                var table = new Table().AddColumn("");
                foreach (var c in g.ColumnLabels) table.AddColumn(Markup.Escape(c));
                for (int r = 0; r < g.RowLabels.Length; r++)
                    table.AddRow(new[] { Markup.Escape(g.RowLabels[r]) }.Concat(g.Scores[r].Select(Render.Score)).ToArray());
                console.Write(table);
                var (row, col, score) = g.Max();
                console.MarkupLine($"largest effect: {Markup.Escape(row)} at {Markup.Escape(col)} ({score:F2})");
            }
            if (correlation is { } c2) ctx.Out.WriteLine($"correlation of attribution with exact patching: {c2:F3}");
            return 0;
        });
        return cmd;
    }
}
