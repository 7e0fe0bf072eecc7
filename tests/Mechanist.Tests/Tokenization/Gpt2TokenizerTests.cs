using System.Text.Json;
using Mechanist.Tokenization;

namespace Mechanist.Tests.Tokenization;

public class Gpt2TokenizerTests
{
    public sealed record Case(string text, int[] ids, string[] tokens, string decoded);

    static readonly Lazy<Case[]> Cases = new(() =>
        JsonSerializer.Deserialize<Case[]>(File.ReadAllText(SharedData.PathOf("golden", "tokenizers", "gpt2_cases.json")))!);

    static readonly Lazy<TextTokenizer> FromJson = new(() => TokenizerLoader.FromTokenizerJson(SharedData.PathOf("tokenizers", "gpt2", "tokenizer.json")));
    static readonly Lazy<TextTokenizer> FromOpenAi = new(() => TokenizerLoader.FromVocabAndMerges(
        SharedData.PathOf("tokenizers", "gpt2", "encoder.json"), SharedData.PathOf("tokenizers", "gpt2", "vocab.bpe")));

    public static IEnumerable<object[]> CaseIndices() => Enumerable.Range(0, 70).Select(i => new object[] { i });

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void TokenizerJsonMatchesHuggingFace(int index) => Check(FromJson.Value, Cases.Value[index]);

    [Theory]
    [MemberData(nameof(CaseIndices))]
    public void OpenAiFilesMatchHuggingFace(int index) => Check(FromOpenAi.Value, Cases.Value[index]);

    static void Check(TextTokenizer tok, Case c)
    {
        var ids = tok.Encode(c.text, prependBos: false);
        Assert.Equal(c.ids, ids);
        Assert.Equal(c.tokens, ids.Select(tok.IdToToken).ToArray());
        Assert.Equal(c.decoded, tok.Decode(ids));
        Assert.Equal(c.text, tok.Decode(ids));
    }

    [Fact]
    public void ClaireWithAndWithoutSpace()
    {
        var tok = FromJson.Value;
        var withSpace = tok.Encode(" Claire", prependBos: false);
        Assert.Single(withSpace);
        Assert.Equal(new[] { " Claire" }, tok.ToStrTokens(withSpace));
        Assert.Equal(new[] { "Cl", "aire" }, tok.ToStrTokens(tok.Encode("Claire", prependBos: false)));
    }

    [Fact]
    public void BosIsEndOfTextAndPrependedOnRequest()
    {
        var tok = TokenizerLoader.FromModelFolder(SharedData.PathOf("tokenizers", "gpt2"))!;
        Assert.Equal(50256, tok.BosId);
        Assert.Equal(new[] { 50256, 15496 }, tok.Encode("Hello"));
        Assert.Equal(new[] { 15496 }, tok.Encode("Hello", prependBos: false));
    }
}
