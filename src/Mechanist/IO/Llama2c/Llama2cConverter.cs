using System.Text.Json;
using System.Text.Json.Nodes;
using Mechanist.Tokenization;
using TorchSharp;

namespace Mechanist.IO.Llama2c;

/// <summary>Writes a llama2.c checkpoint and tokenizer as a Hugging Face Llama model folder.</summary>
public static class Llama2cConverter
{
    /// <summary>
    /// Converts <paramref name="modelPath"/> (+ <paramref name="tokenizerPath"/>) into <paramref name="outDir"/>:
    /// config.json, model.safetensors (wq/wk permuted to rotate-half), tokenizer.json, tokenizer_config.json
    /// and generation_config.json, each written atomically. Returns the files written.
    /// </summary>
    public static IReadOnlyList<string> Convert(string modelPath, string tokenizerPath, string outDir)
    {
        using var checkpoint = Llama2cCheckpoint.Open(modelPath);
        var tokenizer = Llama2cTokenizer.Load(tokenizerPath, checkpoint.Header.VocabSize);
        if (File.Exists(outDir)) throw new MechanistException($"{outDir}: exists and is a file, not a folder");
        Directory.CreateDirectory(outDir);
        var written = new List<string>();
        void Text(string name, JsonNode json)
        {
            string path = Path.Combine(outDir, name);
            AtomicFile.WriteText(path, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            written.Add(path);
        }

        using (var scope = torch.NewDisposeScope())
        {
            var tensors = checkpoint.Names.ToDictionary(n => n, n => checkpoint.Read(n));
            string weights = Path.Combine(outDir, "model.safetensors");
            SafetensorsWriter.Write(weights, tensors, new Dictionary<string, string> { ["format"] = "pt", ["converted_from"] = Path.GetFileName(modelPath) });
            written.Add(weights);
        }
        Text("config.json", checkpoint.ToHfConfig());
        Text("tokenizer.json", ToTokenizerJson(tokenizer));
        Text("tokenizer_config.json", new JsonObject
        {
            ["tokenizer_class"] = "LlamaTokenizerFast", ["bos_token"] = "<s>", ["eos_token"] = "</s>", ["unk_token"] = "<unk>",
            ["add_bos_token"] = true, ["add_eos_token"] = false, ["model_max_length"] = checkpoint.Header.SeqLen,
        });
        Text("generation_config.json", new JsonObject { ["bos_token_id"] = 1, ["eos_token_id"] = 2 });
        return written;
    }

    /// <summary>
    /// The llama2.c tokenizer as a Hugging Face tokenizer.json: SentencePiece-style BPE with byte
    /// fallback, '▁' for spaces, a '▁' prepended at the start of the text, and merges ordered by the
    /// score of the piece they produce (llama2.c merges the best-scoring pair first).
    /// </summary>
    public static JsonObject ToTokenizerJson(Llama2cTokenizer tok)
    {
        const string marker = "\u2581";
        string[] special = { "<unk>", "<s>", "</s>" };
        var pieces = Enumerable.Range(0, tok.VocabSize).Select(i => i < 3 ? special[i] : tok.Pieces[i].Replace(" ", marker)).ToArray();
        var vocab = new JsonObject();
        var index = new Dictionary<string, int>();
        for (int i = 0; i < pieces.Length; i++)
            if (index.TryAdd(pieces[i], i)) vocab[pieces[i]] = i;

        var merges = new List<(string A, string B, float Score, int Id)>();
        for (int id = 3; id < pieces.Length; id++)
        {
            string p = pieces[id];
            if (SentencePieceBpeTokenizer.IsByteToken(p, out _)) continue;
            for (int cut = 1; cut < p.Length; cut++)
            {
                if (char.IsLowSurrogate(p[cut])) continue;
                string a = p[..cut], b = p[cut..];
                if (index.ContainsKey(a) && index.ContainsKey(b)) merges.Add((a, b, tok.Scores[id], id));
            }
        }
        var mergeArray = new JsonArray();
        foreach (var m in merges.OrderByDescending(m => m.Score).ThenBy(m => m.Id).ThenBy(m => index[m.A]))
            mergeArray.Add(new JsonArray(m.A, m.B));

        var added = new JsonArray();
        for (int i = 0; i < 3; i++)
            added.Add(new JsonObject
            {
                ["id"] = i, ["content"] = special[i], ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = false, ["special"] = true,
            });
        JsonObject Special(string id) => new() { ["SpecialToken"] = new JsonObject { ["id"] = id, ["type_id"] = 0 } };
        JsonObject Seq(string id) => new() { ["Sequence"] = new JsonObject { ["id"] = id, ["type_id"] = 0 } };
        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = marker, ["prepend_scheme"] = "first", ["split"] = false },
            ["post_processor"] = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(Special("<s>"), Seq("A")),
                ["pair"] = new JsonArray(Special("<s>"), Seq("A"), Special("<s>"), Seq("B")),
                ["special_tokens"] = new JsonObject { ["<s>"] = new JsonObject { ["id"] = "<s>", ["ids"] = new JsonArray(1), ["tokens"] = new JsonArray("<s>") } },
            },
            ["decoder"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["decoders"] = new JsonArray(
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = marker }, ["content"] = " " },
                    new JsonObject { ["type"] = "ByteFallback" },
                    new JsonObject { ["type"] = "Fuse" },
                    new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = "<unk>", ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = true, ["byte_fallback"] = true, ["ignore_merges"] = false,
                ["vocab"] = vocab, ["merges"] = mergeArray,
            },
        };
    }
}
