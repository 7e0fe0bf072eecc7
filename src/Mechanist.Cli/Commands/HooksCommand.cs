using Mechanist.Reporting;
using System.CommandLine;
using System.Text.Json;
using Mechanist.Analysis;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist hooks --model M</c>: every hook point with its shape.</summary>
public sealed class HooksCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var json = CommonOptions.Json();
        var result = new Option<bool>("--attn-result") { Description = "Include attn.hook_result (per-head outputs)." };
        var cmd = new Command("hooks", "List the model's hook points and their shapes.") { input.Model, input.Offline, json, result };
        cmd.SetAction(parse =>
        {
            if (EncoderDecoderInput.Is(parse.GetValue(input.Model)))
            {
                using var t5 = EncoderDecoderInput.Load(parse.GetValue(input.Model), parse, parse.GetValue(input.Offline));
                var t5Summary = ModelSummary.Of(t5);
                if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(t5Summary, JsonFormat.Options)); return 0; }
                var tc = t5.Config;
                ctx.Out.WriteLine($"{t5.Name}: t5 encoder-decoder, {tc.EncoderLayers} encoder + {tc.DecoderLayers} decoder layers, d_model {tc.DModel}, {tc.NHeads} heads x {tc.DKv}, d_ff {tc.DFf}, vocab {tc.VocabSize}, {t5.ParameterCount:N0} parameters");
                var t5Table = new Table().AddColumns("hook point", "shape");
                foreach (var h in t5Summary.Hooks) t5Table.AddRow(Markup.Escape(h.Name), Markup.Escape(h.Shape));
                AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(ctx.Out) }).Write(t5Table);
                ctx.Out.WriteLine($"{t5.HookNames.Count} hook points");
                return 0;
            }
            using var model = input.LoadModel(parse, ctx);
            var summary = ModelSummary.Of(model, attnResult: parse.GetValue(result));
            var hooks = summary.Hooks;
            if (parse.GetValue(json))
            {
                ctx.Out.WriteLine(JsonSerializer.Serialize(summary, JsonFormat.Options));
                return 0;
            }
            var c = model.Config;
            ctx.Out.WriteLine($"{model.Name}: {c.Architecture}, {c.NLayers} layers, d_model {c.DModel}, {c.NHeads} heads ({c.NKvHeads} kv) x {c.DHead}, d_mlp {c.DMlp}, vocab {c.VocabSize}, {model.Weights.ParameterCount:N0} parameters");
            var table = new Table().AddColumns("hook point", "shape");
            foreach (var h in hooks) table.AddRow(Markup.Escape(h.Name), Markup.Escape(h.Shape));
            AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(ctx.Out) }).Write(table);
            ctx.Out.WriteLine($"{hooks.Length} hook points");
            return 0;
        });
        return cmd;
    }
}
