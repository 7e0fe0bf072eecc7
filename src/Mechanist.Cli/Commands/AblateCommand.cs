using System.CommandLine;
using System.Text.Json;
using Mechanist.Analysis;
using Mechanist.Reporting;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist ablate --prompt T --answer A [--wrong B] [--kind zero|mean|resample --reference T]</c>: the metric with each head knocked out.</summary>
public sealed class AblateCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var prompt = new Option<string>("--prompt") { Description = "The prompt.", Required = true };
        var answer = new Option<string>("--answer") { Description = "Answer token.", Required = true };
        var wrong = new Option<string>("--wrong") { Description = "Wrong answer (metric: logit difference; else the answer's probability)." };
        var kind = new Option<string>("--kind") { Description = "zero, mean (over --reference prompts) or resample (from one --reference prompt).", DefaultValueFactory = _ => "zero" };
        var reference = new Option<string[]>("--reference") { Description = "Reference prompt(s) of the prompt's length, for mean or resample ablation.", AllowMultipleArgumentsPerToken = true };
        var json = CommonOptions.Json();
        kind.AcceptOnlyFromAmong("zero", "mean", "resample");
        var cmd = new Command("ablate", "Ablate each attention head in turn (zero, mean or resample) and show the metric.")
        { input.Model, input.Offline, prompt, answer, wrong, kind, reference, json };
        cmd.SetAction(parse =>
        {
            using var model = input.LoadModel(parse, ctx);
            using var tokens = model.ToTokens(parse.GetValue(prompt)!);
            long a = TokenText.AnswerId(model, parse.GetValue(answer)!);
            long? w = parse.GetValue(wrong) is { } ws ? TokenText.AnswerId(model, ws) : null;
            var metric = PatchMetric.Create(null, a, w, () => model.Run(tokens));
            var k = parse.GetValue(kind) switch { "mean" => AblationKind.Mean, "resample" => AblationKind.Resample, _ => AblationKind.Zero };
            var refs = parse.GetValue(reference) ?? Array.Empty<string>();
            if (k != AblationKind.Zero && refs.Length == 0) throw new MechanistException($"--kind {parse.GetValue(kind)} needs --reference prompts");
            if (k == AblationKind.Resample && refs.Length != 1) throw new MechanistException("--kind resample takes one --reference prompt");
            using var refTokens = refs.Length == 0 ? null : TorchSharp.torch.cat(refs.Select(r => model.ToTokens(r)).ToArray(), 0);
            var grid = Ablation.HeadGrid(model, tokens, metric, k, refTokens);
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(grid, JsonFormat.Options)); return 0; }
            var console = Render.Console(ctx);
            console.MarkupLine($"{Markup.Escape(grid.Metric)} without ablation: {grid.Baseline:F3}; with each head {k.ToString().ToLowerInvariant()}-ablated:");
            var table = new Table().AddColumn("");
            for (int h = 0; h < model.Config.NHeads; h++) table.AddColumn($"H{h}");
            for (int l = 0; l < grid.Values.Length; l++) table.AddRow(new[] { $"L{l}" }.Concat(grid.Values[l].Select(v => v.ToString("F3"))).ToArray());
            console.Write(table);
            var (bl, bh) = Enumerable.Range(0, grid.Values.Length).SelectMany(l => Enumerable.Range(0, grid.Values[l].Length).Select(h => (l, h)))
                .MaxBy(p => Math.Abs(grid.Values[p.l][p.h] - grid.Baseline));
            ctx.Out.WriteLine($"largest change: L{bl}H{bh} ({grid.Values[bl][bh] - grid.Baseline:+0.000;-0.000})");
            return 0;
        });
        return cmd;
    }
}
