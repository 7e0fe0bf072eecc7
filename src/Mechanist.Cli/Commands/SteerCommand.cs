using Mechanist.Reporting;
using System.CommandLine;
using System.Text.Json;
using Mechanist.Analysis;
using Mechanist.Models;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist steer --model M --positive F --negative F --layer L --coef C --prompt T</c>.</summary>
public sealed class SteerCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var positive = new Option<string>("--positive") { Description = "File of positive prompts, one per line.", Required = true };
        var negative = new Option<string>("--negative") { Description = "File of negative prompts, one per line.", Required = true };
        var layer = new Option<int>("--layer") { Description = "Layer whose input is steered.", Required = true };
        var coef = new Option<double>("--coef") { Description = "Coefficient of the vector.", DefaultValueFactory = _ => 4.0 };
        var prompts = new Option<string[]>("--prompt", "-p") { Description = "Prompt(s) to continue.", Required = true, AllowMultipleArgumentsPerToken = false };
        var maxNew = new Option<int>("--max-new-tokens", "-n") { Description = "Tokens to generate.", DefaultValueFactory = _ => 20 };
        var json = CommonOptions.Json();
        var cmd = new Command("steer", "Activation addition: steer generation with a mean-difference vector.")
        { input.Model, input.Offline, positive, negative, layer, coef, prompts, maxNew, json };
        cmd.SetAction(parse =>
        {
            using var model = input.LoadModel(parse, ctx);
            string[] Lines(Option<string> o)
            {
                string path = parse.GetValue(o)!;
                if (!File.Exists(path)) throw new MechanistException($"{path}: file not found");
                return File.ReadAllLines(path).Where(l => l.Trim().Length > 0).ToArray();
            }
            using var vector = Steering.Vector(model, Lines(positive), Lines(negative), parse.GetValue(layer));
            var result = Steering.Compare(model, vector, parse.GetValue(layer), parse.GetValue(coef), parse.GetValue(prompts)!,
                new GenerateOptions { MaxNewTokens = parse.GetValue(maxNew) });
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(result, JsonFormat.Options)); return 0; }
            var table = new Table().AddColumns("prompt", "unsteered", $"steered (layer {result.Layer}, coef {result.Coefficient})");
            foreach (var s in result.Samples) table.AddRow(Markup.Escape(s.Prompt), Markup.Escape(s.Unsteered), Markup.Escape(s.Steered));
            Render.Console(ctx).Write(table);
            ctx.Out.WriteLine($"steering vector norm {result.VectorNorm:F3}");
            return 0;
        });
        return cmd;
    }
}
