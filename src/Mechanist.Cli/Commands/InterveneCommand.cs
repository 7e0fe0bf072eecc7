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
        var transcoders = new Option<string>("--transcoders") { Description = "Transcoder or CLT folder, or a hub repository org/name[@revision] (default: the built-in model's shipped CLT)." };
        var set = new Option<string[]>("--set") { Description = "LAYER:POSITION:FEATURE=VALUE (repeatable; POSITION negative from the end or * for every position; FEATURE a comma list for a supernode; VALUE xK scales the activation).", AllowMultipleArgumentsPerToken = true };
        var swapFrom = new Option<string>("--swap-from") { Description = "Instead of --set: a donor prompt whose active features at --swap-donor-position replace the prompt's at --swap-position (a concept swap, e.g. \"The capital of Oregon is\")." };
        var swapLayers = new Option<string>("--swap-layers") { Description = "Layers swapped: a range 0-1 or a list 0,2 (default: every layer)." };
        var swapPosition = new Option<int>("--swap-position") { Description = "Where the swap lands in the prompt (negative: from the end).", DefaultValueFactory = _ => -1 };
        var swapDonorPosition = new Option<int>("--swap-donor-position") { Description = "Which donor position's features are taken (negative: from the end).", DefaultValueFactory = _ => -1 };
        var mode = new Option<string>("--mode") { Description = "free (attention frozen, the rest recomputed; circuit-tracer's default), constrained (direct effects only) or replacement.", DefaultValueFactory = _ => "free" };
        var topK = new Option<int>("--top-k") { Description = "Tokens shown.", DefaultValueFactory = _ => 10 };
        var json = CommonOptions.Json();
        var generate = new Option<int>("--generate") { Description = "Also generate this many tokens greedily without and with the interventions (free mode; attention recomputed over new tokens; a * position applies at every new token).", DefaultValueFactory = _ => 0 };
        mode.AcceptOnlyFromAmong(AttributionVocabulary.Modes.Names);
        var cmd = new Command("intervene", "Set transcoder features at positions and compare the model's next-token predictions before and after.");
        input.AddTo(cmd, tokensFile: false);
        foreach (var o in new Option[] { transcoders, set, swapFrom, swapLayers, swapPosition, swapDonorPosition, mode, topK, json, generate }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            string[]? sets = parse.GetValue(set) is { Length: > 0 } given ? given : null;
            string? donorText = parse.GetValue(swapFrom);
            if ((sets is null) == (donorText is null)) throw new MechanistException("give --set LAYER:POSITION:FEATURE=VALUE or --swap-from \"PROMPT\" (one of them)");
            var layers = ParseLayers(parse.GetValue(swapLayers));
            using var model = input.LoadModel(parse, ctx);
            string dir = parse.GetValue(transcoders) is { } transcoderSpec ? DictionaryInput.Resolve(transcoderSpec, parse.GetValue(input.Offline), ctx) : BuiltInModels.RequireTranscoders(parse.GetValue(input.Model));
            using var bundle = CircuitTracerFormat.Load(dir, model.Device);
            var (tokens, _) = input.ReadInput(parse, model);
            using var _t = tokens;
            var m2 = AttributionVocabulary.Modes.Parse(parse.GetValue(mode)!);
            using var rm = ReplacementModel.Build(model, bundle.Dictionary, bundle.Input, tokens);
            InterventionReport report;
            if (sets is not null) report = InterventionExperiment.Run(rm, sets, m2, parse.GetValue(topK), parse.GetValue(generate));
            else
            {
                using var donorTokens = model.ToTokens(donorText!, parse.GetValue(input.NoBos) ? false : null);
                using var donor = ReplacementModel.Build(model, bundle.Dictionary, bundle.Input, donorTokens);
                report = InterventionExperiment.Swap(rm, donor, parse.GetValue(swapPosition), layers, m2, parse.GetValue(topK), parse.GetValue(generate), parse.GetValue(swapDonorPosition));
                ctx.Err.WriteLine($"swapped {report.Interventions.Length} feature setting(s) from \"{donorText}\"");
            }
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

    /// <summary>"0-1" or "0,2" → the layers; null → every layer.</summary>
    static int[]? ParseLayers(string? spec)
    {
        if (string.IsNullOrWhiteSpace(spec)) return null;
        string bad = $"--swap-layers '{spec}': give a range such as 0-1 or a list such as 0,2";
        if (spec.Split('-') is { Length: 2 } range && int.TryParse(range[0], out int a) && int.TryParse(range[1], out int b) && a <= b)
            return Enumerable.Range(a, b - a + 1).ToArray();
        return spec.Split(',').Select(x => int.TryParse(x.Trim(), out int l) ? l : throw new MechanistException(bad)).ToArray();
    }
}
