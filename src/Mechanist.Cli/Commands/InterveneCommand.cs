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
    /// <summary>Before and after an intervention, at the last position.</summary>
    /// <param name="Mode">How the network responded.</param>
    /// <param name="Interventions">What was set.</param>
    /// <param name="Before">Top tokens of the clean run.</param>
    /// <param name="After">Top tokens with the intervention.</param>
    public sealed record InterventionReport(InterventionMode Mode, FeatureIntervention[] Interventions, TokenPrediction[] Before, TokenPrediction[] After);

    /// <summary>
    /// Parses "LAYER:POS:FEATURES=VALUE" against a traced prompt: POS a position (negative: from the end) or * (every position
    /// but BOS); FEATURES one index or a comma list (a supernode, all set together); VALUE a number, or xK for K times each
    /// feature's activation at that position (x0 zeroes, x2 doubles).
    /// </summary>
    public static List<FeatureIntervention> Parse(string spec, ReplacementModel rm)
    {
        int positions = (int)rm.Tokens.shape[1];
        var parts = spec.Split('=');
        var where = parts.Length == 2 ? parts[0].Split(':') : Array.Empty<string>();
        string bad = $"--set '{spec}': write LAYER:POSITION:FEATURE=VALUE, e.g. 1:7:123=0 (POSITION may be *, FEATURE a comma list, VALUE xK to scale)";
        if (where.Length != 3 || !int.TryParse(where[0], out int l)) throw new MechanistException(bad);
        var features = where[2].Split(',').Select(x => long.TryParse(x, out long f) ? f : throw new MechanistException(bad)).ToArray();
        bool scale = parts[1].StartsWith('x');
        if (!double.TryParse(scale ? parts[1][1..] : parts[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double v)) throw new MechanistException(bad);
        int[] at = where[1] == "*" ? Enumerable.Range(1, positions - 1).ToArray()
            : int.TryParse(where[1], out int p) ? new[] { p < 0 ? positions + p : p } : throw new MechanistException(bad);
        var list = new List<FeatureIntervention>();
        foreach (int pos in at)
            foreach (long f in features)
            {
                var iv = new FeatureIntervention(l, pos, f, v);
                if (scale)
                {
                    if (l < 0 || l >= rm.Activations.shape[0] || pos < 0 || pos >= positions || f < 0 || f >= rm.Activations.shape[2])
                        throw new MechanistException($"--set '{spec}': layer, position or feature out of range (layers 0..{rm.Activations.shape[0] - 1}, positions 0..{positions - 1}, features 0..{rm.Activations.shape[2] - 1})");
                    iv = iv with { Value = v * rm.Activations[l, pos, f].item<float>() };
                }
                list.Add(iv);
            }
        return list;
    }

    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var transcoders = new Option<string>("--transcoders") { Description = "Transcoder or CLT folder (default: the built-in model's shipped CLT)." };
        var set = new Option<string[]>("--set") { Description = "LAYER:POSITION:FEATURE=VALUE (repeatable; POSITION negative from the end or * for every position; FEATURE a comma list for a supernode; VALUE xK scales the activation).", Required = true, AllowMultipleArgumentsPerToken = true };
        var mode = new Option<string>("--mode") { Description = "free (attention frozen, the rest recomputed; circuit-tracer's default), constrained (direct effects only) or replacement.", DefaultValueFactory = _ => "free" };
        var topK = new Option<int>("--top-k") { Description = "Tokens shown.", DefaultValueFactory = _ => 10 };
        var json = CommonOptions.Json();
        mode.AcceptOnlyFromAmong("free", "constrained", "replacement");
        var cmd = new Command("intervene", "Set transcoder features at positions and compare the model's next-token predictions before and after.");
        input.AddTo(cmd, tokensFile: false);
        foreach (var o in new Option[] { transcoders, set, mode, topK, json }) cmd.Options.Add(o);
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
            var interventions = parse.GetValue(set)!.SelectMany(s => Parse(s, rm)).ToArray();
            using var result = Interventions.Run(rm, interventions, m2);
            int k = Math.Max(1, parse.GetValue(topK));
            var report = new InterventionReport(m2, interventions, NextTokens.Top(model, rm.Logits[-1], k), NextTokens.Top(model, result.Logits[-1], k));
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(report, JsonFormat.Options)); return 0; }
            var table = new Table().AddColumns("rank", "before", "p", "after", "p");
            for (int i = 0; i < k; i++)
                table.AddRow((i + 1).ToString(), Render.Token(report.Before[i].Token), report.Before[i].Prob.ToString("P1"), Render.Token(report.After[i].Token), report.After[i].Prob.ToString("P1"));
            Render.Console(ctx).Write(table);
            return 0;
        });
        return cmd;
    }
}
