using Mechanist.Reporting;
using System.CommandLine;
using System.Text.Json;
using Mechanist.Analysis;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist dla --model M --prompt T --answer A [--wrong B]</c>: direct logit attribution.</summary>
public sealed class DlaCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var answer = new Option<string>("--answer") { Description = "Answer token.", Required = true };
        var wrong = new Option<string>("--wrong") { Description = "Wrong token: attribute the logit difference." };
        var neurons = new Option<int>("--neurons") { Description = "Also list the N largest neuron contributions." };
        var top = new Option<int>("--top") { Description = "Heads listed.", DefaultValueFactory = _ => 10 };
        var position = new Option<int?>("--position") { Description = "Position whose logit is attributed (negative: from the end; default the last, or an encoder's first [MASK])." };
        var json = CommonOptions.Json();
        var cmd = new Command("dla", "Direct logit attribution: which components write the answer.");
        input.AddTo(cmd, tokensFile: false);
        foreach (var o in new Option[] { answer, wrong, neurons, top, position, json }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            using var model = input.LoadModel(parse, ctx);
            var (tokens, _) = input.ReadInput(parse, model);
            using var _t = tokens;
            long a = TokenText.AnswerId(model, parse.GetValue(answer)!);
            long? w = parse.GetValue(wrong) is { } ws ? TokenText.AnswerId(model, ws) : null;
            int at = parse.GetValue(position) ?? TokenText.DefaultPosition(model, tokens[0].cpu().data<long>().ToArray());
            if (at < -tokens.shape[1] || at >= tokens.shape[1]) throw new MechanistException($"--position {at} is outside the prompt's {tokens.shape[1]} tokens");
            var result = DirectLogitAttribution.Compute(model, tokens, a, w, at, parse.GetValue(neurons));
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(result, JsonFormat.Options)); return 0; }
            var console = Render.Console(ctx);
            var table = new Table().AddColumns("component", "contribution");
            foreach (var c in result.Components) table.AddRow(c.Label, c.Value.ToString("F3"));
            table.AddRow("(biases)", result.Constant.ToString("F3"));
            console.Write(table);
            ctx.Out.WriteLine($"sum {result.Components.Sum(c => c.Value) + result.Constant:F4} = model's {(w == null ? "logit" : "logit difference")} {result.Metric:F4}");
            ctx.Out.WriteLine("top heads: " + string.Join(", ", result.Heads.OrderByDescending(h => Math.Abs(h.Value)).Take(parse.GetValue(top)).Select(h => $"{h.Label} {h.Value:F2}")));
            if (result.Neurons is { } ns) ctx.Out.WriteLine("top neurons: " + string.Join(", ", ns.Select(n => $"{n.Label} {n.Value:F2}")));
            return 0;
        });
        return cmd;
    }
}
