using Mechanist.Reporting;
using System.CommandLine;
using System.Text.Json;
using Mechanist.Tokenization;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist tokenize (--model M | --tokenizer FILE) --text T [--no-bos] [--json]</c>.</summary>
public sealed class TokenizeCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var model = CommonOptions.Model(required: false);
        var text = new Option<string>("--text", "-t") { Description = "Text to tokenize.", Required = true };
        var noBos = CommonOptions.NoBos();
        var json = CommonOptions.Json();
        var offline = CommonOptions.Offline();
        var cmd = new Command("tokenize", "Print token ids and string tokens of a text.") { model, text, noBos, json, offline };
        cmd.SetAction(parse =>
        {
            string? m = parse.GetValue(model), t = parse.GetValue(CommonOptions.Tokenizer);
            TextTokenizer tok;
            if (t != null) tok = TokenizerLoader.FromFile(t); // the given tokenizer wins over the model's
            else
            {
                using var source = CommonOptions.OpenModel(BuiltInModels.Resolve(m), parse.GetValue(offline), ctx);
                tok = source.Tokenizer ?? throw new MechanistException($"{m}: the model has no tokenizer files");
            }
            var ids = tok.Encode(parse.GetValue(text)!, parse.GetValue(noBos) ? false : null);
            var tokens = tok.ToStrTokens(ids);
            if (parse.GetValue(json))
            {
                ctx.Out.WriteLine(JsonSerializer.Serialize(new { ids, tokens }, JsonFormat.Options));
                return 0;
            }
            var table = new Table().AddColumns("#", "id", "token");
            for (int i = 0; i < ids.Length; i++)
                table.AddRow(i.ToString(), ids[i].ToString(), Markup.Escape(JsonSerializer.Serialize(tokens[i], JsonFormat.Options)));
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(ctx.Out) });
            console.Write(table);
            ctx.Out.WriteLine($"{ids.Length} tokens ({tok.Kind}, vocabulary {tok.VocabSize})");
            return 0;
        });
        return cmd;
    }
}
