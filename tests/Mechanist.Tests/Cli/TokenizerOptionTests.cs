using System.Text.Json;

namespace Mechanist.Tests.Cli;

/// <summary>--tokenizer FILE names the tokenizer of a checkpoint that has none beside it, on any command.</summary>
public class TokenizerOptionTests
{
    [Fact]
    public void ALlama2cCheckpointWithoutItsTokenizerRunsWithTokenizerGiven()
    {
        using var dir = new TempDir();
        string model = dir.File("alone.bin");
        File.Copy(SharedData.PathOf("models", "stories260K", "stories260K.bin"), model);
        string tokenizer = SharedData.PathOf("models", "stories260K", "tok512.bin");
        var without = CliRunner.Run("run", "-m", model, "--prompt", "Once upon a time");
        Assert.Equal(2, without.Code);
        Assert.Contains("tokenizer", without.Err);

        var (code, output, err) = CliRunner.Run("run", "-m", model, "--tokenizer", tokenizer, "--prompt", "Once upon a time", "--json");
        Assert.True(code == 0, err);
        // The same ids as with the tokenizer found beside the original checkpoint.
        var (code2, beside, _) = CliRunner.Run("run", "-m", SharedData.PathOf("models", "stories260K", "stories260K.bin"), "--prompt", "Once upon a time", "--json");
        Assert.Equal(0, code2);
        Assert.Equal(JsonDocument.Parse(beside).RootElement.GetRawText(), JsonDocument.Parse(output).RootElement.GetRawText());

        // Other commands take it too.
        (code, output, err) = CliRunner.Run("lens", "-m", model, "--tokenizer", tokenizer, "--prompt", "Once upon a", "--json");
        Assert.True(code == 0, err);
        var bad = CliRunner.Run("run", "-m", model, "--tokenizer", dir.File("missing.json"), "--prompt", "x");
        Assert.Equal(2, bad.Code);
        Assert.Contains("missing.json", bad.Err);
    }
}
