using System.Text.Json;
using Mechanist.Tests.Cli;
using Mechanist.Tokenization;

namespace Mechanist.Tests.Tokenization;

public class TokenizerTests
{
    [Fact]
    public void Llama2cTokenizerEncodesAsLlama2cDoes()
    {
        var tok = Llama2cTokenizer.Load(SharedData.PathOf("models", "stories260K", "tok512.bin"));
        // Hand-checked against llama2.c's encode(): dummy prefix " ", best-score merges.
        var ids = tok.Encode("Once upon a time");
        Assert.Equal(new[] { 1, 403, 407, 261, 378 }, ids);
        Assert.Equal(new[] { "<s>", " Once", " upon", " a", " time" }, tok.ToStrTokens(ids));
        // Characters outside the vocabulary fall back to bytes, id = byte + 3.
        var emoji = tok.Encode("😀", prependBos: false);
        Assert.Equal(new[] { 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3 }, emoji[1..]);
        Assert.Equal("😀", tok.Decode(emoji));
    }

    [Fact]
    public void WordLevelTokenizerJson()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), JsonSerializer.Serialize(new
        {
            added_tokens = new[] { new { id = 0, content = "<unk>", special = true }, new { id = 1, content = "<bos>", special = true } },
            pre_tokenizer = new { type = "Whitespace" },
            model = new { type = "WordLevel", unk_token = "<unk>", vocab = new Dictionary<string, int> { ["<unk>"] = 0, ["<bos>"] = 1, ["John"] = 2, ["gave"] = 3, ["Mary"] = 4, ["."] = 5, ["a"] = 6 } },
        }));
        var tok = TokenizerLoader.FromTokenizerJson(dir.File("tokenizer.json"));
        Assert.Equal(new[] { 2, 3, 6, 0, 5 }, tok.Encode("John gave a ball.", prependBos: false));
        Assert.Equal(new[] { 1, 2, 3, 4 }, tok.Encode("<bos>John gave Mary", prependBos: false));
        Assert.Equal("John gave a <unk>.", tok.Decode(new[] { 2, 3, 6, 0, 5 }));
    }

    [Fact]
    public void TokenizeCommandPrintsExactJson()
    {
        var (code, output, _) = CliRunner.Run("tokenize", "--tokenizer", SharedData.PathOf("tokenizers", "gpt2", "tokenizer.json"),
            "--text", " Claire", "--no-bos", "--json");
        Assert.Equal(0, code);
        Assert.Equal("{\"ids\":[20758],\"tokens\":[\" Claire\"]}", output.Trim());
        (code, output, _) = CliRunner.Run("tokenize", "--tokenizer", SharedData.PathOf("tokenizers", "gpt2", "tokenizer.json"), "--text", "Claire", "--json");
        Assert.Equal("{\"ids\":[50256,2601,7626],\"tokens\":[\"<|endoftext|>\",\"Cl\",\"aire\"]}", output.Trim());
    }

    [Fact]
    public void UnknownTokenizerFileIsAClearError()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokens.dat"), "x");
        var (code, _, err) = CliRunner.Run("tokenize", "--tokenizer", dir.File("tokens.dat"), "--text", "x");
        Assert.Equal(2, code);
        Assert.Contains("unknown tokenizer file", err);
        // A vocab.txt is read as BERT's WordPiece vocabulary, and one without [UNK] is refused as such.
        File.WriteAllText(dir.File("vocab.txt"), "x");
        (code, _, err) = CliRunner.Run("tokenize", "--tokenizer", dir.File("vocab.txt"), "--text", "x");
        Assert.Equal(2, code);
        Assert.Contains("not a WordPiece vocabulary", err);
        File.WriteAllBytes(dir.File("spiece.model"), new byte[] { 0x0A, 0x05, 0x01 });
        (code, _, err) = CliRunner.Run("tokenize", "--tokenizer", dir.File("spiece.model"), "--text", "x");
        Assert.Equal(2, code);
        Assert.Contains("not a readable SentencePiece model", err);
    }
}
