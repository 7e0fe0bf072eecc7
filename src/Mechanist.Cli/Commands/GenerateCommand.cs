using Mechanist.Reporting;
using System.CommandLine;
using System.Text.Json;
using Mechanist.Models;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist generate</c>.</summary>
public sealed class GenerateCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var maxNew = new Option<int>("--max-new-tokens", "-n") { Description = "Tokens to generate.", DefaultValueFactory = _ => 50 };
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy.", DefaultValueFactory = _ => 0.0 };
        var topK = new Option<int>("--top-k") { Description = "Sample from the k most likely tokens (0: all)." };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling threshold (1: off).", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<long?>("--seed") { Description = "Random seed for sampling." };
        var json = CommonOptions.Json();
        var cmd = new Command("generate", "Generate a continuation (greedy or sampled), with the KV cache.");
        input.AddTo(cmd, tokensFile: false);
        foreach (var o in new Option[] { maxNew, temperature, topK, topP, seed, json }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            if (EncoderDecoderInput.Is(parse.GetValue(input.Model)))
            {
                // T5: greedy decoding from the decoder start token, given the encoder input.
                if (parse.GetValue(temperature) != 0) throw new MechanistException("encoder-decoder models generate greedily here (--temperature 0)");
                using var t5 = EncoderDecoderInput.Load(parse.GetValue(input.Model), parse, parse.GetValue(input.Offline));
                var (encoderIds, _, _) = EncoderDecoderInput.Read(input, parse, t5);
                using var _e = encoderIds;
                var (ids, _) = t5.Generate(encoderIds, parse.GetValue(maxNew));
                string decoded = t5.Tokenizer?.DecodeLenient(ids.Skip(1), skipSpecial: true) ?? string.Join(" ", ids);
                if (parse.GetValue(json)) ctx.Out.WriteLine(JsonSerializer.Serialize(new { ids, text = decoded }, JsonFormat.Options));
                else ctx.Out.WriteLine(decoded);
                return 0;
            }
            using var model = input.LoadModel(parse, ctx);
            var (tokens, _) = input.ReadInput(parse, model);
            using var _t = tokens;
            var result = model.Generate(tokens[0].data<long>().ToArray(), new GenerateOptions
            {
                MaxNewTokens = parse.GetValue(maxNew), Temperature = parse.GetValue(temperature), TopK = parse.GetValue(topK),
                TopP = parse.GetValue(topP), Seed = parse.GetValue(seed),
            });
            string text = model.Tokenizer?.DecodeLenient(result.Ids, skipSpecial: true) ?? string.Join(" ", result.Ids);
            if (parse.GetValue(json)) ctx.Out.WriteLine(JsonSerializer.Serialize(new { ids = result.Ids, text }, JsonFormat.Options));
            else ctx.Out.WriteLine(text);
            return 0;
        });
        return cmd;
    }
}
