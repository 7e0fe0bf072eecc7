using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Mechanist.Analysis;
using Mechanist.Attribution;
using Mechanist.Dictionaries.Formats;
using Mechanist.Reporting;
using Mechanist.Toy;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist intervene</c>: set transcoder features and compare the next-token predictions before and after.</summary>
public sealed class InterveneCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var transcoders = new Option<string>("--transcoders") { Description = "Transcoder or CLT folder (default: the built-in model's shipped CLT)." };
        var set = new Option<string[]>("--set") { Description = "LAYER:POSITION:FEATURE=VALUE (repeatable; POSITION negative from the end or * for every position; FEATURE a comma list for a supernode; VALUE xK scales the activation).", Required = true, AllowMultipleArgumentsPerToken = true };
        var mode = new Option<string>("--mode") { Description = "free (attention frozen, the rest recomputed; circuit-tracer's default), constrained (direct effects only) or replacement.", DefaultValueFactory = _ => "free" };
        var topK = new Option<int>("--top-k") { Description = "Tokens shown.", DefaultValueFactory = _ => 10 };
        var json = CommonOptions.Json();
        var generate = new Option<int>("--generate") { Description = "Also generate this many tokens greedily without and with the interventions (free mode; attention recomputed over new tokens; a * position applies at every new token).", DefaultValueFactory = _ => 0 };
        mode.AcceptOnlyFromAmong("free", "constrained", "replacement");
        var cmd = new Command("intervene", "Set transcoder features at positions and compare the model's next-token predictions before and after.");
        input.AddTo(cmd, tokensFile: false);
        foreach (var o in new Option[] { transcoders, set, mode, topK, json, generate }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            using var model = input.LoadModel(parse, ctx);
            string dir = parse.GetValue(transcoders) ?? (BuiltInModels.Find(parse.GetValue(input.Model) ?? ToyPresets.DefaultName) is { } m && Directory.Exists(Path.Combine(m, "clt"))
                ? Path.Combine(m, "clt") : throw new MechanistException("give --transcoders DIR (only built-in models ship transcoders)"));
            using var bundle = CircuitTracerFormat.Load(dir, model.Device);
            var (tokens, _) = input.ReadInput(parse, model);
            using var _t = tokens;
            var m2 = parse.GetValue(mode) switch { "constrained" => InterventionMode.Constrained, "replacement" => InterventionMode.Replacement, _ => InterventionMode.Free };
            using var rm = ReplacementModel.Build(model, bundle.Dictionary, bundle.Input, tokens);
            var report = InterventionExperiment.Run(rm, parse.GetValue(set)!, m2, Math.Max(1, parse.GetValue(topK)), parse.GetValue(generate));
            int k = report.Before.Length;
            var generated = report.Generated;
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(report, JsonFormat.Options)); return 0; }
            var table = new Table().AddColumns("rank", "before", "p", "after", "p");
            for (int i = 0; i < k; i++)
                table.AddRow((i + 1).ToString(), Render.Token(report.Before[i].Token), report.Before[i].Prob.ToString("P1"), Render.Token(report.After[i].Token), report.After[i].Prob.ToString("P1"));
            Render.Console(ctx).Write(table);
            if (generated is not null)
            {
                ctx.Out.WriteLine($"generated without: {string.Concat(generated.Clean.Select(t => t.StartsWith(' ') ? t : " " + t))}");
                ctx.Out.WriteLine($"generated with:    {string.Concat(generated.Intervened.Select(t => t.StartsWith(' ') ? t : " " + t))}");
            }
            return 0;
        });
        return cmd;
    }
}
