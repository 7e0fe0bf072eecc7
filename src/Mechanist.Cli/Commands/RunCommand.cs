using Mechanist.Reporting;
using System.CommandLine;
using System.Text.Json;
using System.Text.RegularExpressions;
using Mechanist.Analysis;
using Mechanist.Models;
using Spectre.Console;
using static TorchSharp.torch;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist run</c>: top next tokens, optionally dumping the activation cache.</summary>
public sealed class RunCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var topK = new Option<int>("--top-k") { Description = "How many next tokens to show.", DefaultValueFactory = _ => 10 };
        var dump = new Option<string>("--dump-cache") { Description = "Write logits and every cached activation (fp32) to this safetensors file." };
        var names = new Option<string>("--names") { Description = "Regex selecting the hook points to dump (default: all)." };
        var json = CommonOptions.Json();
        var cmd = new Command("run", "Run the model on a prompt and print the most likely next tokens.");
        input.AddTo(cmd);
        cmd.Options.Add(topK); cmd.Options.Add(dump); cmd.Options.Add(names); cmd.Options.Add(json);
        cmd.SetAction(parse =>
        {
            int k = parse.GetValue(topK);
            Regex? filter = null;
            if (parse.GetValue(names) is { } rx)
            {
                try { filter = new Regex(rx, RegexOptions.None, TimeSpan.FromSeconds(1)); }
                catch (ArgumentException e) { throw new MechanistException($"--names: invalid regex: {e.Message}"); }
            }
            if (EncoderDecoderInput.Is(parse.GetValue(input.Model))) return RunEncoderDecoder(parse, input, k, parse.GetValue(dump), filter, parse.GetValue(json));
            using var model = input.LoadModel(parse, ctx);
            using var scope = NewDisposeScope();
            var (tokens, mask) = input.ReadInput(parse, model);
            var options = new RunOptions { AttentionMask = mask };
            Tensor logits;
            if (parse.GetValue(dump) is { } path)
            {
                var (l, cache) = model.RunWithCache(tokens, filter == null ? null : n => filter.IsMatch(n), options);
                using (cache)
                {
                    cache.Save(path, new Dictionary<string, Tensor> { ["logits"] = l });
                    ctx.Err.WriteLine($"wrote {path}: logits and {cache.Names.Count} activations");
                }
                logits = l;
            }
            else logits = model.Run(tokens, options);

            var rows = NextTokens.Predict(model, tokens, mask, logits, k);
            if (parse.GetValue(json))
            {
                ctx.Out.WriteLine(JsonSerializer.Serialize(rows.Length == 1 ? rows[0] : (object)rows, JsonFormat.Options));
                return 0;
            }
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(ctx.Out) });
            for (int r = 0; r < rows.Length; r++)
            {
                if (rows[r].Tokens is { } strs) console.MarkupLine($"[grey]prompt:[/] {Markup.Escape(string.Join("|", strs))}");
                if (rows[r].Position != rows[r].Ids.Length - 1) console.MarkupLine($"[grey]predicted at position {rows[r].Position} (the mask token)[/]");
                var table = new Table().AddColumns("rank", "id", "token", "logit", "prob");
                for (int i = 0; i < rows[r].Top.Length; i++)
                {
                    var p = rows[r].Top[i];
                    table.AddRow((i + 1).ToString(), p.Id.ToString(), Markup.Escape(JsonSerializer.Serialize(p.Token, JsonFormat.Options)), p.Logit.ToString("F3"), p.Prob.ToString("P2"));
                }
                console.Write(table);
            }
            return 0;
        });
        return cmd;

        // T5: a teacher-forced run; the top tokens are the decoder's next ones at its last position.
        int RunEncoderDecoder(ParseResult parse, ModelInput input, int k, string? dumpPath, Regex? filter, bool asJson)
        {
            using var model = EncoderDecoderInput.Load(parse.GetValue(input.Model), parse, parse.GetValue(input.Offline));
            using var scope = NewDisposeScope();
            var (ids, mask, decoder) = EncoderDecoderInput.Read(input, parse, model);
            Tensor logits;
            if (dumpPath is not null)
            {
                var (l, cache) = model.RunWithCache(ids, decoder, mask, filter == null ? null : n => filter.IsMatch(n));
                using (cache)
                {
                    cache.Save(dumpPath, new Dictionary<string, Tensor> { ["logits"] = l });
                    ctx.Err.WriteLine($"wrote {dumpPath}: logits and {cache.Names.Count} activations");
                }
                logits = l;
            }
            else logits = model.Forward(ids, decoder, mask);
            var rows = Enumerable.Range(0, (int)logits.shape[0]).Select(b =>
            {
                var last = logits[b, -1].to(ScalarType.Float32);
                var probs = last.softmax(-1);
                var (v, i) = last.topk(k);
                var top = i.data<long>().ToArray().Select((id, j) => new TokenPrediction(id, model.TokenText(id), v[j].item<float>(), probs[id].item<float>())).ToArray();
                return new { decoderTokens = decoder[b].data<long>().ToArray().Select(model.TokenText).ToArray(), top };
            }).ToArray();
            if (asJson) { ctx.Out.WriteLine(JsonSerializer.Serialize(rows.Length == 1 ? rows[0] : (object)rows, JsonFormat.Options)); return 0; }
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(ctx.Out) });
            foreach (var row in rows)
            {
                console.MarkupLine($"[grey]decoder:[/] {Markup.Escape(string.Join("|", row.decoderTokens))}");
                var table = new Table().AddColumns("rank", "id", "token", "logit", "prob");
                for (int i = 0; i < row.top.Length; i++)
                    table.AddRow((i + 1).ToString(), row.top[i].Id.ToString(), Markup.Escape(row.top[i].Token), row.top[i].Logit.ToString("F3"), row.top[i].Prob.ToString("P2"));
                console.Write(table);
            }
            return 0;
        }
    }
}
