using Mechanist.Reporting;
using System.CommandLine;
using System.Text.Json;
using Mechanist.Analysis;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist heads --model M [--json]</c>: previous-token, duplicate-token and induction scores.</summary>
public sealed class HeadsCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var defaults = new HeadDetectionSettings();
        var length = new Option<int?>("--seq-len") { Description = "Length of the random sequence (repeated once); default min(20, (context - 1) / 2)." };
        var batch = new Option<int>("--batch") { Description = "Number of random sequences.", DefaultValueFactory = _ => defaults.Batch };
        var seed = new Option<long>("--seed") { Description = "Random seed.", DefaultValueFactory = _ => defaults.Seed };
        var top = new Option<int>("--top") { Description = "Heads shown per score.", DefaultValueFactory = _ => 5 };
        var json = CommonOptions.Json();
        var cmd = new Command("heads", "Detect previous-token, duplicate-token and induction heads on repeated random tokens.")
        { input.Model, input.Offline, length, batch, seed, top, json };
        cmd.SetAction(parse =>
        {
            using var model = input.LoadModel(parse, ctx);
            var result = HeadDetector.Run(model, defaults with { SequenceLength = parse.GetValue(length), Batch = parse.GetValue(batch), Seed = parse.GetValue(seed) });
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(result, JsonFormat.Options)); return 0; }
            var console = Render.Console(ctx);
            var table = new Table().AddColumns("head", "previous-token", "duplicate-token", "induction (detector)", "induction score (stripe)");
            foreach (var h in result.Heads)
                table.AddRow($"L{h.Layer}H{h.Head}", Render.Score(h.PreviousToken), Render.Score(h.DuplicateToken), Render.Score(h.Induction), Render.Score(h.InductionStripe));
            console.Write(table);
            int n = parse.GetValue(top);
            string Best(Func<HeadScores, double> f) => string.Join(", ", result.Heads.OrderByDescending(f).Take(n).Select(h => $"L{h.Layer}H{h.Head} {f(h):F2}"));
            ctx.Out.WriteLine($"previous-token: {Best(h => h.PreviousToken)}");
            ctx.Out.WriteLine($"duplicate-token: {Best(h => h.DuplicateToken)}");
            ctx.Out.WriteLine($"induction (detector): {Best(h => h.Induction)}");
            ctx.Out.WriteLine($"induction score (attention to the token after the earlier copy, repeated half): {Best(h => h.InductionStripe)}");
            ctx.Out.WriteLine($"loss on repeated random tokens: first half {result.FirstHalfLoss:F2}, repeated half {result.SecondHalfLoss:F2} nats/token");
            return 0;
        });
        return cmd;
    }
}
