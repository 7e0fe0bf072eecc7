using Mechanist.Analysis;
using Mechanist.IO;
using Mechanist.Models;
using Mechanist.Tokenization;
using static TorchSharp.torch;

namespace Mechanist.Tests.Tokenization;

/// <summary>
/// BERT's WordPiece and T5's Unigram tokenizer.json files, on small hand-made vocabularies whose segmentations are worked out by hand
/// (the WordPiece example "unaffable" → un ##aff ##able is the one BERT's documentation gives).
/// </summary>
public class WordPieceUnigramTests
{
    const string BertJson = """
    {
      "added_tokens": [
        {"id": 0, "content": "[PAD]", "special": true}, {"id": 1, "content": "[UNK]", "special": true},
        {"id": 2, "content": "[CLS]", "special": true}, {"id": 3, "content": "[SEP]", "special": true}, {"id": 4, "content": "[MASK]", "special": true}
      ],
      "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
      "pre_tokenizer": {"type": "BertPreTokenizer"},
      "post_processor": POST,
      "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
      "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
        "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "un": 5, "##aff": 6, "##able": 7, "hello": 8, ",": 9, "world": 10,
                  "!": 11, "cafe": 12, "##s": 13, "the": 14, "capital": 15, "of": 16, "is": 17, "paris": 18, ".": 19}}
    }
    """;

    const string Template = """{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}]}""";

    const string T5Json = """
    {
      "added_tokens": [{"id": 0, "content": "<pad>", "special": true}, {"id": 1, "content": "</s>", "special": true}, {"id": 2, "content": "<unk>", "special": true}],
      "normalizer": {"type": "Precompiled", "precompiled_charsmap": null},
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": "▁", "add_prefix_space": true}]},
      "post_processor": {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}]},
      "model": {"type": "Unigram", "unk_id": 2, "vocab": [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0], ["▁", -2.0], ["▁a", -1.0], ["b", -2.0],
                ["▁ab", -5.0], ["▁abc", -4.0], ["c", -3.0], ["bc", -1.5]]}
    }
    """;

    static TextTokenizer Load(TempDir dir, string json)
    {
        File.WriteAllText(dir.File("tokenizer.json"), json);
        return TokenizerLoader.FromFile(dir.File("tokenizer.json"));
    }

    [Fact]
    public void WordPieceNormalisesSplitsPunctuationAndTakesTheLongestPiecesWithClsAndSep()
    {
        using var dir = new TempDir();
        var tok = Load(dir, BertJson.Replace("POST", Template));
        Assert.Equal("WordPiece", tok.Kind);
        // Lowercased, accent stripped (é → e), punctuation split off, "worlds" = world ##s.
        Assert.Equal(new[] { 2, 5, 6, 7, 9, 12, 10, 13, 11, 3 }, tok.Encode("Unaffable, Café worlds!"));
        Assert.Equal(new[] { "[CLS]", "un", "##aff", "##able", ",", "cafe", "world", "##s", "!", "[SEP]" }, tok.ToStrTokens(tok.Encode("Unaffable, Café worlds!")));
        // [MASK] is matched whole; a word with an uncovered remainder is one [UNK]; a CJK character is a word of its own.
        Assert.Equal(new[] { 2, 8, 4, 19, 3 }, tok.Encode("hello [MASK]."));
        Assert.Equal(new[] { 2, 1, 3 }, tok.Encode("unx"));
        Assert.Equal(new[] { 2, 8, 1, 10, 3 }, tok.Encode("hello中world"));
        Assert.Equal(new[] { 8, 10 }, tok.Encode("hello\tworld", prependBos: false));
        Assert.Equal("unaffable, cafe worlds!", tok.Decode(new[] { 5, 6, 7, 9, 12, 10, 13, 11 }));
        Assert.Equal("hello world", tok.Decode(new[] { 2, 8, 10, 3 }, skipSpecial: true));
        // An id the tokenizer lacks (a model's padded embedding rows) fails Decode but is written out by DecodeLenient and DisplayTokens.
        Assert.Throws<MechanistException>(() => tok.Decode(new[] { 8, 99 }));
        Assert.Equal("hello⟨#99⟩world", tok.DecodeLenient(new long[] { 8, 99, 10 }));
        Assert.Equal(new[] { "hello", "#99" }, tok.DisplayTokens(new long[] { 8, 99 }));

        // Older BERT files say the same with BertProcessing.
        using var older = new TempDir();
        var tok2 = Load(older, BertJson.Replace("POST", """{"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}"""));
        Assert.Equal(new[] { 2, 8, 10, 3 }, tok2.Encode("Hello WORLD"));
    }

    [Fact]
    public void UnigramPicksTheMostProbableSegmentationAndAppendsEos()
    {
        using var dir = new TempDir();
        var tok = Load(dir, T5Json);
        Assert.Equal("SentencePiece Unigram", tok.Kind);
        // "▁abc": ▁a + bc (−2.5) beats ▁abc (−4), ▁ab + c (−8) and ▁a + b + c (−6).
        Assert.Equal(new[] { 4, 9, 1 }, tok.Encode("abc"));
        Assert.Equal(new[] { 4, 9 }, tok.Encode("abc", prependBos: false));
        // "▁ab": ▁a + b (−3) beats ▁ab (−5); "▁z": ▁ then the unknown token (−2 − 15); unknown runs fuse.
        Assert.Equal(new[] { 4, 5, 3, 2, 1 }, tok.Encode("ab  z"));
        Assert.Equal(new[] { 3, 2, 1 }, tok.Encode("zz"));
        // Full-width letters are NFKC-normalised first.
        Assert.Equal(new[] { 4, 9, 1 }, tok.Encode("ａｂｃ"));
        Assert.Equal("abc ab", tok.Decode(new[] { 4, 9, 4, 5 }));
        Assert.Equal(new[] { " a", "bc" }, tok.ToStrTokens(new[] { 4, 9 }));

        File.WriteAllText(dir.File("bad.json"), T5Json.Replace("[\"b\", -2.0]", "[\"b\"]"));
        Assert.Contains("Unigram vocab entry 5", Assert.Throws<InvalidCheckpointException>(() => TokenizerLoader.FromTokenizerJson(dir.File("bad.json"))).Message);
    }

    /// <summary>A SentencePiece ModelProto in protobuf's wire format: the same Unigram pieces as <see cref="T5Json"/>, T5's special ids.</summary>
    static byte[] SpieceModel()
    {
        static void Varint(List<byte> o, ulong v) { do { byte b = (byte)(v & 0x7F); v >>= 7; o.Add(v != 0 ? (byte)(b | 0x80) : b); } while (v != 0); }
        static void Key(List<byte> o, int field, int wire) => Varint(o, (ulong)(field << 3 | wire));
        static void Int(List<byte> o, int field, long v) { Key(o, field, 0); Varint(o, unchecked((ulong)v)); }
        static void Bytes(List<byte> o, int field, byte[] b) { Key(o, field, 2); Varint(o, (ulong)b.Length); o.AddRange(b); }
        var model = new List<byte>();
        var pieces = new (string Piece, float Score, int Type)[] { ("<pad>", 0, 3), ("</s>", 0, 3), ("<unk>", 0, 2), ("▁", -2, 1), ("▁a", -1, 1), ("b", -2, 1),
            ("▁ab", -5, 1), ("▁abc", -4, 1), ("c", -3, 1), ("bc", -1.5f, 1) };
        foreach (var (piece, score, type) in pieces)
        {
            var p = new List<byte>();
            Bytes(p, 1, System.Text.Encoding.UTF8.GetBytes(piece));
            Key(p, 2, 5); p.AddRange(BitConverter.GetBytes(score));
            Int(p, 3, type);
            Bytes(model, 1, p.ToArray());
        }
        var trainer = new List<byte>();
        Int(trainer, 3, 1); // model_type UNIGRAM
        Int(trainer, 40, 2); Int(trainer, 41, -1); Int(trainer, 42, 1); Int(trainer, 43, 0); // unk, bos (none), eos, pad
        Bytes(model, 2, trainer.ToArray());
        var normalizer = new List<byte>();
        Bytes(normalizer, 1, System.Text.Encoding.UTF8.GetBytes("identity"));
        Int(normalizer, 3, 1); Int(normalizer, 4, 1); Int(normalizer, 5, 1); // add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces
        Bytes(model, 3, normalizer.ToArray());
        return model.ToArray();
    }

    [Fact]
    public void AT5SpieceModelAndABertVocabTxtGiveTheSameIdsAsTheirTokenizerJson()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("spiece.model"), SpieceModel());
        var sp = TokenizerLoader.FromModelFolder(dir.Path)!;
        Assert.Contains("Unigram", sp.Kind);
        // The binary model's pieces give the hand-worked segmentations, with T5's </s> after the text and no BOS.
        Assert.Equal(new[] { 4, 9, 1 }, sp.Encode("abc"));
        Assert.Equal(new[] { 4, 5, 3, 2, 1 }, sp.Encode("ab z"));
        Assert.Equal(new[] { 4, 9 }, sp.Encode("abc", prependBos: false));

        using var bert = new TempDir();
        File.WriteAllLines(bert.File("vocab.txt"), new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "hello", ",", "world", "!", "cafe", "##s" });
        var wp = TokenizerLoader.FromModelFolder(bert.Path)!;
        Assert.Equal(new[] { 2, 5, 6, 7, 9, 12, 10, 13, 11, 3 }, wp.Encode("Unaffable, Café worlds!"));
        Assert.Equal(new[] { 2, 8, 4, 3 }, wp.Encode("hello [MASK]"));
        File.WriteAllText(bert.File("tokenizer_config.json"), """{"do_lower_case": false}""");
        Assert.Equal(new[] { 2, 1, 3 }, TokenizerLoader.FromModelFolder(bert.Path)!.Encode("Hello"));
    }

    [Fact]
    public void T5TakesTextThroughItsUnigramTokenizerAndBertsPatchingMetricDefaultsToTheMask()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("tokenizer.json"), T5Json);
        using (var t5 = HookedEncoderDecoder.Load(SharedData.PathOf("golden", "models", "t5"), new ModelOpenOptions { Offline = true, TokenizerPath = dir.File("tokenizer.json") }))
        using (var ids = t5.InputIds("abc ab"))
            Assert.Equal(new long[] { 4, 9, 4, 5, 1 }, ids[0].data<long>().ToArray()); // one </s>, as HF's T5 tokenizer gives

        using var bertDir = new TempDir();
        File.WriteAllText(bertDir.File("tokenizer.json"), BertJson.Replace("POST", Template));
        using var bert = HookedTransformer.Load(SharedData.PathOf("golden", "models", "bert"), new LoadOptions { Open = new ModelOpenOptions { Offline = true, TokenizerPath = bertDir.File("tokenizer.json") } });
        using var scope = NewDisposeScope();
        var clean = bert.ToTokens("hello [MASK] world");
        var corrupt = bert.ToTokens("hello [MASK] cafe");
        Assert.Equal(new long[] { 2, 8, 4, 10, 3 }, clean[0].data<long>().ToArray());
        var report = PatchingExperiment.Run(bert, clean, corrupt, "#18", "#14", null, PatchTarget.Resid);
        var grid = report.Grids[0];
        // The metric reads the [MASK] (position 2), which sees the changed word after it.
        Assert.Contains("at position 2", grid.Metric);
        double want = bert.Run(clean)[0, 2, 18].item<float>() - bert.Run(clean)[0, 2, 14].item<float>();
        Assert.Equal(want, grid.CleanMetric, 4);
        Assert.Equal(1, grid.Scores[0][3], 5);
        Assert.Equal(0, grid.Scores[0][2], 5);
        // The prompt view's prediction is the [MASK]'s too.
        var prediction = NextTokens.Run(bert, clean, 3);
        Assert.Equal(2, prediction.Position);
        Assert.Equal(bert.Run(clean)[0, 2].argmax().item<long>(), prediction.Top[0].Id);
    }
}
