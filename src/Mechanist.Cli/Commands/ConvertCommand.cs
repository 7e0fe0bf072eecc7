using System.CommandLine;
using Mechanist.IO.Llama2c;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist convert llama2c --model X.bin --tokenizer T.bin --out DIR</c>.</summary>
public sealed class ConvertCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var model = new Option<string>("--model", "-m") { Description = "llama2.c checkpoint (.bin).", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "Output folder (Hugging Face Llama layout).", Required = true };
        var llama2c = new Command("llama2c", "Convert a llama2.c checkpoint and tokenizer to a Hugging Face Llama folder.") { model, output };
        llama2c.SetAction(parse =>
        {
            var files = Llama2cConverter.Convert(parse.GetValue(model)!, parse.GetValue(CommonOptions.Tokenizer) ?? throw new MechanistException("convert llama2c needs --tokenizer T.bin (the llama2.c tokenizer)"), parse.GetValue(output)!);
            foreach (var f in files) ctx.Out.WriteLine($"wrote {f} ({new FileInfo(f).Length:N0} bytes)");
            return 0;
        });
        return new Command("convert", "Convert checkpoints from other formats.") { llama2c };
    }
}
