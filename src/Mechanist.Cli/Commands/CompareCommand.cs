using Mechanist.Reporting;
using System.CommandLine;
using System.Text.Json;
using Mechanist.Analysis;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist compare --model M --a T --b T [--json]</c>.</summary>
public sealed class CompareCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var a = new Option<string>("--a") { Description = "First prompt.", Required = true };
        var b = new Option<string>("--b") { Description = "Second prompt (same number of tokens).", Required = true };
        var json = CommonOptions.Json();
        var cmd = new Command("compare", "Where two prompts' internal states differ, per layer and token.") { input.Model, input.Offline, a, b, json };
        cmd.SetAction(parse =>
        {
            using var model = input.LoadModel(parse, ctx);
            var result = PromptComparison.Compare(model, parse.GetValue(a)!, parse.GetValue(b)!);
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(result, JsonFormat.Options)); return 0; }
            var console = Render.Console(ctx);
            foreach (var d in result.Distances)
            {
                console.MarkupLine($"[bold]{d.Activation}[/]: cosine distance (1 - cos) per layer and token");
                var table = new Table().AddColumn("layer");
                for (int i = 0; i < result.TokensA.Length; i++)
                    table.AddColumn(Markup.Escape(result.TokensA[i] == result.TokensB[i] ? result.TokensA[i] : $"{result.TokensA[i]}/{result.TokensB[i]}"));
                for (int l = 0; l < d.CosineDistance.Length; l++)
                    table.AddRow(new[] { l.ToString() }.Concat(d.CosineDistance[l].Select(Render.Score)).ToArray());
                console.Write(table);
            }
            return 0;
        });
        return cmd;
    }
}
