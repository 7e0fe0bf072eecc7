using Mechanist.Reporting;
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
        var metricOpt = new Option<string>("--metric") { Description = $"{string.Join(", ", PatchMetric.Names)} (default: logit-diff with --wrong, else prob).", DefaultValueFactory = _ => "" };
        var what = new Option<string>("--what") { Description = string.Join(", ", PatchTargets.Names) + ".", DefaultValueFactory = _ => "resid" };
        var method = new Option<string>("--method") { Description = "exact, attribution or both.", DefaultValueFactory = _ => "exact" };
        var position = new Option<int?>("--position") { Description = "Position whose logits the metric reads (negative: from the end; default the last, or an encoder's first [MASK])." };
        var decoder = new Option<string>("--decoder") { Description = "Encoder-decoders: the decoder's text after its start token (the answer is the next decoder token)." };
        var json = CommonOptions.Json();
        what.AcceptOnlyFromAmong(PatchTargets.Names);
        method.AcceptOnlyFromAmong(PatchVocabulary.Methods.Names);
        metricOpt.AcceptOnlyFromAmong(PatchMetric.Names.Prepend("").ToArray());
        var cmd = new Command("patch", "Activation (or attribution) patching from a clean into a corrupted prompt.")
        { input.Model, input.Offline, input.NoBos, clean, corrupt, answer, wrong, metricOpt, what, method, position, decoder, json };
        cmd.SetAction(parse =>
        {
            PatchingReport report;
            if (EncoderDecoderInput.Is(parse.GetValue(input.Model)))
            {
                // T5: the encoder input is patched; the decoder reads its start token (and --decoder's tokens), and the answer is its next output token.
                PatchVocabulary.CheckEncoderDecoder(parse.GetValue(what), parse.GetValue(method), parse.GetValue(metricOpt), parse.GetValue(position));
                using var t5 = EncoderDecoderInput.Load(parse.GetValue(input.Model), parse, parse.GetValue(input.Offline));
                using var c = t5.InputIds(parse.GetValue(clean)!); using var x = t5.InputIds(parse.GetValue(corrupt)!);
                using var start = t5.DecoderIds(parse.GetValue(decoder));
                long? wrongId = parse.GetValue(wrong) is { } wr ? t5.AnswerId(wr) : null;
                report = new PatchingReport(Mechanist.Analysis.EncoderDecoderAnalyses.Patch(t5, c, x, start, t5.AnswerId(parse.GetValue(answer)!), wrongId), null);
            }
            else
            {
                if (parse.GetValue(decoder) is not null) throw new MechanistException("--decoder is for encoder-decoder models");
                using var model = input.LoadModel(parse, ctx);
                bool? bos = parse.GetValue(input.NoBos) ? false : null;
                using var cleanTokens = model.ToTokens(parse.GetValue(clean)!, bos);
                using var corruptTokens = model.ToTokens(parse.GetValue(corrupt)!, bos);
                var methods = PatchVocabulary.Methods.Parse(parse.GetValue(method)!);
                report = PatchingExperiment.Run(model, cleanTokens, corruptTokens, parse.GetValue(answer)!, parse.GetValue(wrong), parse.GetValue(metricOpt),
                    PatchTargets.Parse(parse.GetValue(what)), methods, parse.GetValue(position));
            }
            if (parse.GetValue(json))
            {
                ctx.Out.WriteLine(JsonSerializer.Serialize(report, JsonFormat.Options));
                return 0;
            }
            var console = Render.Console(ctx);
            foreach (var g in report.Grids)
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
            if (report.Correlation is { } c2) ctx.Out.WriteLine($"correlation of attribution with exact patching: {c2:F3}");
            return 0;
        });
        return cmd;
    }
}
