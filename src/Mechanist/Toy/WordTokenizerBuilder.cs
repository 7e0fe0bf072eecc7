using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Mechanist.IO;

namespace Mechanist.Toy;

/// <summary>Builds a word-level Hugging Face tokenizer.json from text.</summary>
public static class WordTokenizerBuilder
{
    /// <summary>Special tokens, in id order.</summary>
    public static readonly string[] Specials = { "<unk>", "<bos>", "<pad>" };

    /// <summary>
    /// The tokenizer.json content: WordLevel over every word (runs of word characters, or of other
    /// non-space characters, as HF's "Whitespace" pre-tokenizer splits), most frequent first.
    /// </summary>
    public static JsonObject Build(IEnumerable<string> text)
    {
        var split = new Regex(Tokenization.WordLevelTokenizer.WhitespacePattern);
        var counts = new Dictionary<string, int>();
        foreach (var line in text)
            foreach (Match m in split.Matches(line))
                counts[m.Value] = counts.GetValueOrDefault(m.Value) + 1;
        var vocab = new JsonObject();
        int id = 0;
        foreach (var s in Specials) vocab[s] = id++;
        foreach (var word in counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Key))
            vocab[word] = id++;
        var added = new JsonArray();
        for (int i = 0; i < Specials.Length; i++)
            added.Add(new JsonObject { ["id"] = i, ["content"] = Specials[i], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true });
        return new JsonObject
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null, ["added_tokens"] = added, ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "Whitespace" },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<bos>", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
                ["pair"] = new JsonArray(new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } },
                    new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "B", ["type_id"] = 1 } }),
                ["special_tokens"] = new JsonObject { ["<bos>"] = new JsonObject { ["id"] = "<bos>", ["ids"] = new JsonArray(1), ["tokens"] = new JsonArray("<bos>") } },
            },
            ["decoder"] = null,
            ["model"] = new JsonObject { ["type"] = "WordLevel", ["vocab"] = vocab, ["unk_token"] = "<unk>" },
        };
    }

    /// <summary>Writes tokenizer.json and tokenizer_config.json into a folder.</summary>
    public static void Write(string dir, JsonObject tokenizer)
    {
        var indented = new JsonSerializerOptions { WriteIndented = true };
        AtomicFile.WriteText(Path.Combine(dir, "tokenizer.json"), tokenizer.ToJsonString(indented) + "\n");
        AtomicFile.WriteText(Path.Combine(dir, "tokenizer_config.json"), new JsonObject
        {
            ["tokenizer_class"] = "PreTrainedTokenizerFast", ["bos_token"] = "<bos>", ["eos_token"] = "<bos>",
            ["unk_token"] = "<unk>", ["pad_token"] = "<pad>", ["add_bos_token"] = true,
        }.ToJsonString(indented) + "\n");
    }
}
