using System.Text;
using Mechanist.IO;
using Mechanist.IO.Llama2c;
using Mechanist.Models;
using Mechanist.Tokenization;

namespace Mechanist.Tests.Models;

/// <summary>Real trained llama2.c models reproduce llama2.c's own greedy output, directly and after conversion.</summary>
public class Llama2cModelTests
{
    public static IEnumerable<object[]> Models() => new[]
    {
        new object[] { "stories260K", "stories260K.bin", "greedy_from_bos_200.txt", 200 },
        new object[] { "aidreams260K", "aidreams260K.bin", "greedy_from_bos_120.txt", 120 },
    };

    static string GreedyText(HookedTransformer model, Llama2cTokenizer tok, int steps)
    {
        var result = model.Generate(new long[] { 1 }, new GenerateOptions { MaxNewTokens = steps, StopTokens = new[] { 1 } });
        var bytes = new List<byte>();
        for (int i = 1; i < result.Ids.Length; i++)
        {
            if (result.Ids[i] == 1) break;
            bytes.AddRange(tok.DecodeStep((int)result.Ids[i - 1], (int)result.Ids[i]));
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void GreedyFromBosMatchesLlama2c(string name, string file, string expectedFile, int steps)
    {
        string dir = SharedData.PathOf("models", name);
        using var model = HookedTransformer.Load(Path.Combine(dir, file));
        var tok = Assert.IsType<Llama2cTokenizer>(model.Tokenizer);
        string expected = File.ReadAllText(Path.Combine(dir, expectedFile)).TrimEnd('\n');
        Assert.Equal(expected, GreedyText(model, tok, steps));
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void ConvertedFolderGivesTheSameGreedyOutputAndTokens(string name, string file, string expectedFile, int steps)
    {
        string dir = SharedData.PathOf("models", name);
        using var tmp = new TempDir();
        Llama2cConverter.Convert(Path.Combine(dir, file), Path.Combine(dir, "tok512.bin"), tmp.Path);
        using var model = HookedTransformer.Load(tmp.Path);
        var llamaTok = Llama2cTokenizer.Load(Path.Combine(dir, "tok512.bin"));
        string expected = File.ReadAllText(Path.Combine(dir, expectedFile)).TrimEnd('\n');
        Assert.Equal(expected, GreedyText(model, llamaTok, steps));

        // The converted tokenizer.json gives llama2.c's ids on the model's own text and on hard cases.
        var converted = Assert.IsType<SentencePieceBpeTokenizer>(model.Tokenizer);
        foreach (var text in expected.Split('\n').Append("Hello,  world!\tTabs  and ünïcödé 日本 😀").Append(" leading space"))
        {
            Assert.Equal(llamaTok.Encode(text), converted.Encode(text));
            Assert.Equal(text, converted.Decode(converted.Encode(text), skipSpecial: true));
        }
    }

    [Fact]
    public void DirectAndConvertedLogitsAgree()
    {
        string dir = SharedData.PathOf("models", "stories260K");
        using var tmp = new TempDir();
        Llama2cConverter.Convert(Path.Combine(dir, "stories260K.bin"), Path.Combine(dir, "tok512.bin"), tmp.Path);
        using var direct = HookedTransformer.Load(Path.Combine(dir, "stories260K.bin"));
        using var converted = HookedTransformer.Load(tmp.Path);
        using var tokens = direct.ToTokens("Once upon a time, Lily saw a big dog.");
        using var a = direct.Run(tokens);
        using var b = converted.Run(tokens);
        TensorAssert.Close(a, b, 0.0, "stories260K logits, direct vs converted");
    }
}
