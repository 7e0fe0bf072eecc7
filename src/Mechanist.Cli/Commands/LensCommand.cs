using Mechanist.Reporting;
using System.CommandLine;
using System.Text.Json;
using Mechanist.Analysis;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist lens --model M --prompt T [--target " Paris"] [--json]</c>.</summary>
public sealed class LensCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var target = new Option<string>("--target") { Description = "Track this token's rank and probability (one token; mind the leading space)." };
        var topK = new Option<int>("--top-k") { Description = "Tokens per cell.", DefaultValueFactory = _ => 5 };
        var mid = new Option<bool>("--mid") { Description = "Also decode the residual between attention and MLP." };
        var json = CommonOptions.Json();
        var cmd = new Command("lens", "Logit lens: decode the residual stream after each layer.");
        input.AddTo(cmd, tokensFile: true);
        foreach (var o in new Option[] { target, topK, mid, json }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            LogitLensResult result;
            if (EncoderDecoderInput.Is(parse.GetValue(input.Model)))
            {
                // T5: the lens over the decoder's residual stream, given the encoder input (and decoder ids from --tokens-file).
                using var t5 = EncoderDecoderInput.Load(parse.GetValue(input.Model), parse, parse.GetValue(input.Offline));
                var (ids, mask, decoder) = EncoderDecoderInput.Read(input, parse, t5);
                long? t5Target = parse.GetValue(target) is { } tt ? t5.AnswerId(tt) : null;
                result = Mechanist.Analysis.EncoderDecoderAnalyses.Lens(t5, ids, decoder, mask, t5Target, Math.Max(1, parse.GetValue(topK)));
            }
            else
            {
                using var model = input.LoadModel(parse, ctx);
                var (tokens, _) = input.ReadInput(parse, model);
                using var _t = tokens;
                long? targetId = parse.GetValue(target) is { } t ? TokenText.AnswerId(model, t) : null;
                result = LogitLens.Run(model, tokens, targetId, Math.Max(1, parse.GetValue(topK)), parse.GetValue(mid));
            }
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(result, JsonFormat.Options)); return 0; }
            var console = Render.Console(ctx);
            // Positions down, layers across: models have far fewer layers than a prompt has tokens.
            var table = new Table().AddColumns("pos", "token");
            foreach (var layer in result.Layers) table.AddColumn(layer.Label);
            for (int p = 0; p < result.Tokens.Length; p++)
                table.AddRow(new[] { p.ToString(), Render.Token(result.Tokens[p]) }.Concat(result.Layers.Select(layer =>
                {
                    var c = layer.Positions[p];
                    string top = $"{Render.Token(c.Top[0].Token)} {c.Top[0].Prob:P0}";
                    return c.TargetRank is { } r ? $"{top} [grey]#{r}[/]" : top;
                })).ToArray());
            table.AddRow(new[] { "", result.LossTarget == "next token" ? "loss" : $"loss ({result.LossTarget})" }.Concat(result.Layers.Select(l => l.Loss.ToString("F2"))).ToArray());
            console.Write(table);
            if (result.Target != null)
            {
                var last = result.Layers.Select(l => (l.Label, Cell: l.Positions[^1])).ToList();
                var first = last.FirstOrDefault(x => x.Cell.TargetRank == 0);
                ctx.Out.WriteLine(first.Cell != null
                    ? $"target {JsonSerializer.Serialize(result.Target, JsonFormat.Options)} becomes the top prediction at the last position from {first.Label} (p = {first.Cell.TargetProb:P1})"
                    : $"target {JsonSerializer.Serialize(result.Target, JsonFormat.Options)} never becomes the top prediction at the last position (final rank {last[^1].Cell.TargetRank})");
            }
            return 0;
        });
        return cmd;
    }
}
