using System.Text.Json;
using System.Text.Json.Nodes;

namespace Mechanist.Tokenization;

/// <summary>
/// Builds a <see cref="TextTokenizer"/> from the files a model ships: tokenizer.json, vocab.json +
/// merges.txt, tokenizer.model (SentencePiece), or a llama2.c tokenizer.bin.
/// </summary>
public static class TokenizerLoader
{
    /// <summary>
    /// Loads the tokenizer of a model folder, trying tokenizer.json, then vocab.json + merges.txt,
    /// then tokenizer.model, spiece.model (T5) and vocab.txt (BERT's WordPiece). Returns null when the folder has none of them.
    /// </summary>
    public static TextTokenizer? FromModelFolder(string dir)
    {
        string json = Path.Combine(dir, "tokenizer.json");
        TextTokenizer? tok = null;
        if (File.Exists(json)) tok = FromTokenizerJson(json);
        else if (File.Exists(Path.Combine(dir, "vocab.json")) && File.Exists(Path.Combine(dir, "merges.txt")))
            tok = FromVocabAndMerges(Path.Combine(dir, "vocab.json"), Path.Combine(dir, "merges.txt"));
        else if (File.Exists(Path.Combine(dir, "tokenizer.model")))
            tok = SentencePieceModelTokenizer.Load(Path.Combine(dir, "tokenizer.model"));
        else if (File.Exists(Path.Combine(dir, "spiece.model")))
            tok = SentencePieceModelTokenizer.Load(Path.Combine(dir, "spiece.model"));
        else if (File.Exists(Path.Combine(dir, "vocab.txt")))
            tok = FromVocabTxt(Path.Combine(dir, "vocab.txt"));
        if (tok == null) return null;
        ApplyFolderSpecialTokens(tok, dir);
        return tok;
    }

    /// <summary>Loads any supported tokenizer file by its name and content.</summary>
    public static TextTokenizer FromFile(string path)
    {
        if (Directory.Exists(path))
            return FromModelFolder(path) ?? throw new MechanistException($"{path}: no tokenizer.json, vocab.json + merges.txt, tokenizer.model, spiece.model or vocab.txt in this folder");
        if (!File.Exists(path)) throw new MechanistException($"{path}: file not found");
        string name = Path.GetFileName(path);
        if (name.Equals("tokenizer.json", StringComparison.OrdinalIgnoreCase))
            return FromModelFolder(Path.GetDirectoryName(Path.GetFullPath(path))!)!;
        if (name.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return FromTokenizerJson(path);
        if (name.EndsWith(".model", StringComparison.OrdinalIgnoreCase)) return SentencePieceModelTokenizer.Load(path);
        if (name.EndsWith(".bin", StringComparison.OrdinalIgnoreCase)) return Llama2cTokenizer.Load(path);
        if (name.Equals("vocab.txt", StringComparison.OrdinalIgnoreCase)) return FromVocabTxt(path);
        throw new MechanistException($"{path}: unknown tokenizer file (expected tokenizer.json, tokenizer.model, spiece.model, vocab.txt or a llama2.c .bin)");
    }

    /// <summary>
    /// BERT's vocab.txt (one WordPiece token per line, the line number its id) with [CLS] … [SEP] around the text; lowercased unless
    /// tokenizer_config.json beside it says <c>"do_lower_case": false</c>.
    /// </summary>
    public static TextTokenizer FromVocabTxt(string path)
    {
        var lines = File.ReadAllLines(path);
        var vocab = new Dictionary<string, int>(lines.Length);
        for (int i = 0; i < lines.Length; i++) if (lines[i].Length > 0) vocab.TryAdd(lines[i], i);
        if (vocab.Count == 0) throw new InvalidCheckpointException(path, "empty vocabulary");
        if (!vocab.ContainsKey("[UNK]")) throw new InvalidCheckpointException(path, "no [UNK] token: not a WordPiece vocabulary");
        var config = ReadJsonOrNull(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "tokenizer_config.json"));
        bool lower = config?["do_lower_case"] is not JsonValue v || !v.TryGetValue(out bool b) || b;
        var tok = new WordPieceTokenizer(vocab, "[UNK]", lowercase: lower);
        foreach (var special in new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" })
            if (vocab.TryGetValue(special, out int id)) tok.AddSpecialToken(special, id);
        if (vocab.TryGetValue("[CLS]", out int cls)) { tok.BosId = cls; tok.PrependBosByDefault = true; }
        if (vocab.TryGetValue("[SEP]", out int sep)) tok.SuffixId = sep;
        if (vocab.TryGetValue("[PAD]", out int pad)) tok.PadId = pad;
        return tok;
    }

    /// <summary>Loads a Hugging Face tokenizer.json (BPE, byte-level or SentencePiece-style, and WordLevel).</summary>
    public static TextTokenizer FromTokenizerJson(string path)
    {
        JsonNode root;
        try { root = JsonNode.Parse(File.ReadAllText(path)) ?? throw new JsonException("empty document"); }
        catch (JsonException e) { throw new InvalidCheckpointException(path, $"invalid JSON: {e.Message}"); }
        var model = root["model"] as JsonObject ?? throw new InvalidCheckpointException(path, "no \"model\" object");
        string type = model["type"]?.GetValue<string>() ?? (model["merges"] != null ? "BPE" : model["vocab"] is JsonArray ? "Unigram" : "WordLevel");
        if (type == "Unigram") return Finish(ReadUnigram(path, root, model), root);
        var vocab = ReadVocab(path, model["vocab"]);
        TextTokenizer tok = type switch
        {
            "BPE" when IsByteLevel(root) => new ByteLevelBpeTokenizer(vocab, ReadMerges(path, model["merges"]).Select(m => m.Item1 + " " + m.Item2),
                ByteLevelPattern(root), ByteLevelAddPrefixSpace(root)),
            "BPE" => new SentencePieceBpeTokenizer(vocab, ReadMerges(path, model["merges"]),
                model["byte_fallback"]?.GetValue<bool>() ?? false,
                model["unk_token"]?.GetValue<string>() is { } unk && vocab.TryGetValue(unk, out int u) ? u : null,
                MetaspacePrepend(root)),
            "WordLevel" => new WordLevelTokenizer(vocab, model["unk_token"]?.GetValue<string>(), WordLevelPattern(root)),
            "WordPiece" => ReadWordPiece(vocab, root, model),
            _ => throw new MechanistException($"{path}: tokenizer model type '{type}' is not supported (supported: BPE, WordPiece, Unigram, WordLevel)"),
        };
        return Finish(tok, root);
    }

    /// <summary>Added tokens and the post-processor's special tokens.</summary>
    static TextTokenizer Finish(TextTokenizer tok, JsonNode root)
    {
        if (root["added_tokens"] is JsonArray added)
            foreach (var a in added.OfType<JsonObject>())
                tok.AddSpecialToken(a["content"]!.GetValue<string>(), a["id"]!.GetValue<int>(), a["special"]?.GetValue<bool>() ?? true);
        ApplyPostProcessorBos(tok, root);
        return tok;
    }

    /// <summary>Loads a GPT-2 style vocab.json + merges.txt pair (byte-level BPE).</summary>
    public static TextTokenizer FromVocabAndMerges(string vocabPath, string mergesPath)
    {
        Dictionary<string, int> vocab;
        try { vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(vocabPath)) ?? new(); }
        catch (JsonException e) { throw new InvalidCheckpointException(vocabPath, $"invalid JSON: {e.Message}"); }
        var merges = File.ReadLines(mergesPath).Where(l => l.Length > 0 && !l.StartsWith("#version")).ToList();
        if (merges.Any(m => m.Split(' ').Length != 2))
            throw new InvalidCheckpointException(mergesPath, "each merge line must be two tokens separated by one space");
        var tok = new ByteLevelBpeTokenizer(vocab, merges);
        if (vocab.TryGetValue("<|endoftext|>", out int eot))
        {
            tok.AddSpecialToken("<|endoftext|>", eot);
            tok.BosId = eot; tok.EosId = eot;
        }
        return tok;
    }

    /// <summary>BERT's WordPiece with its BertNormalizer settings (lowercasing unless the normalizer says otherwise).</summary>
    static WordPieceTokenizer ReadWordPiece(Dictionary<string, int> vocab, JsonNode root, JsonNode model)
    {
        var norm = Flatten(root["normalizer"]).FirstOrDefault(n => n["type"]?.GetValue<string>() == "BertNormalizer");
        bool Flag(string name, bool fallback) => norm?[name] is JsonValue v && v.TryGetValue(out bool b) ? b : fallback;
        bool? strip = norm?["strip_accents"] is JsonValue sv && sv.TryGetValue(out bool sb) ? sb : null;
        return new WordPieceTokenizer(vocab, model["unk_token"]?.GetValue<string>() ?? "[UNK]", model["continuing_subword_prefix"]?.GetValue<string>() ?? "##",
            model["max_input_chars_per_word"]?.GetValue<int>() ?? 100, lowercase: norm is not null && Flag("lowercase", true), stripAccents: norm is null ? false : strip,
            handleChineseChars: norm is not null && Flag("handle_chinese_chars", true), cleanText: norm is not null && Flag("clean_text", true));
    }

    /// <summary>A Unigram model: vocab is [[piece, log-probability], ...] by id.</summary>
    static UnigramTokenizer ReadUnigram(string path, JsonNode root, JsonNode model)
    {
        if (model["vocab"] is not JsonArray arr || arr.Count == 0) throw new InvalidCheckpointException(path, "a Unigram model.vocab must be a non-empty array of [piece, score]");
        var vocab = arr.Select((e, i) => e is JsonArray pair && pair.Count == 2 && pair[0] is JsonValue p && p.TryGetValue(out string? piece) && pair[1] is JsonValue sc && sc.TryGetValue(out double score)
            ? (piece, score) : throw new InvalidCheckpointException(path, $"Unigram vocab entry {i} is not [piece, score]")).ToList();
        int unk = model["unk_id"] is JsonValue u && u.TryGetValue(out int uid) ? uid : throw new InvalidCheckpointException(path, "a Unigram model needs unk_id");
        var normalizers = Flatten(root["normalizer"]).Select(n => n["type"]?.GetValue<string>()).ToList();
        // The Metaspace pre-tokenizer marks word starts; "add_prefix_space" false or prepend_scheme "never" leaves the first word unmarked.
        var meta = Flatten(root["pre_tokenizer"]).FirstOrDefault(n => n["type"]?.GetValue<string>() == "Metaspace");
        bool prefix = !(meta?["add_prefix_space"] is JsonValue a && a.TryGetValue(out bool ap) && !ap) && meta?["prepend_scheme"]?.GetValue<string>() != "never";
        return new UnigramTokenizer(vocab, unk, model["byte_fallback"]?.GetValue<bool>() ?? false, nfkc: normalizers.Any(t => t is "Precompiled" or "NFKC"), addPrefixSpace: prefix);
    }

    static Dictionary<string, int> ReadVocab(string path, JsonNode? node)
    {
        if (node is not JsonObject obj) throw new InvalidCheckpointException(path, "model.vocab must be an object of token -> id");
        var vocab = new Dictionary<string, int>(obj.Count);
        foreach (var (k, v) in obj) vocab[k] = v!.GetValue<int>();
        if (vocab.Count == 0) throw new InvalidCheckpointException(path, "model.vocab is empty");
        return vocab;
    }

    static IEnumerable<(string, string)> ReadMerges(string path, JsonNode? node)
    {
        if (node is not JsonArray arr) throw new InvalidCheckpointException(path, "model.merges must be an array");
        foreach (var m in arr)
        {
            if (m is JsonArray pair && pair.Count == 2) yield return (pair[0]!.GetValue<string>(), pair[1]!.GetValue<string>());
            else if (m is JsonValue v && v.GetValue<string>() is { } s && s.IndexOf(' ', 1) is int sp && sp > 0)
                yield return (s[..sp], s[(sp + 1)..]);
            else throw new InvalidCheckpointException(path, $"malformed merge {m?.ToJsonString()}");
        }
    }

    static IEnumerable<JsonObject> Flatten(JsonNode? node)
    {
        if (node is not JsonObject obj) yield break;
        if (obj["type"]?.GetValue<string>() == "Sequence")
        {
            var items = obj["pretokenizers"] ?? obj["normalizers"] ?? obj["decoders"] ?? obj["processors"];
            if (items is JsonArray arr) foreach (var child in arr) foreach (var x in Flatten(child)) yield return x;
        }
        else yield return obj;
    }

    static bool IsByteLevel(JsonNode root) =>
        Flatten(root["pre_tokenizer"]).Any(p => p["type"]?.GetValue<string>() == "ByteLevel")
        || Flatten(root["decoder"]).Any(p => p["type"]?.GetValue<string>() == "ByteLevel");

    static string ByteLevelPattern(JsonNode root)
    {
        var split = Flatten(root["pre_tokenizer"]).FirstOrDefault(p => p["type"]?.GetValue<string>() == "Split");
        return split?["pattern"]?["Regex"]?.GetValue<string>() ?? ByteLevelBpeTokenizer.Gpt2Pattern;
    }

    static bool ByteLevelAddPrefixSpace(JsonNode root) =>
        Flatten(root["pre_tokenizer"]).FirstOrDefault(p => p["type"]?.GetValue<string>() == "ByteLevel")?["add_prefix_space"]?.GetValue<bool>() ?? false;

    static SentencePieceBpeTokenizer.PrependScheme MetaspacePrepend(JsonNode root)
    {
        var meta = Flatten(root["pre_tokenizer"]).FirstOrDefault(p => p["type"]?.GetValue<string>() == "Metaspace");
        if (meta != null)
        {
            string scheme = meta["prepend_scheme"]?.GetValue<string>()
                ?? (meta["add_prefix_space"]?.GetValue<bool>() == false ? "never" : "always");
            return scheme switch { "first" => SentencePieceBpeTokenizer.PrependScheme.First, "never" => SentencePieceBpeTokenizer.PrependScheme.Never, _ => SentencePieceBpeTokenizer.PrependScheme.Always };
        }
        bool prepends = Flatten(root["normalizer"]).Any(n => n["type"]?.GetValue<string>() == "Prepend");
        return prepends ? SentencePieceBpeTokenizer.PrependScheme.Always : SentencePieceBpeTokenizer.PrependScheme.Never;
    }

    static string WordLevelPattern(JsonNode root)
    {
        var pre = Flatten(root["pre_tokenizer"]).FirstOrDefault();
        return pre?["type"]?.GetValue<string>() switch
        {
            "WhitespaceSplit" => @"\S+",
            "Split" when pre["pattern"]?["Regex"]?.GetValue<string>() is { } rx => rx,
            _ => WordLevelTokenizer.WhitespacePattern,
        };
    }

    static void ApplyPostProcessorBos(TextTokenizer tok, JsonNode root)
    {
        foreach (var p in Flatten(root["post_processor"]))
        {
            string? type = p["type"]?.GetValue<string>();
            if (type == "BertProcessing")
            {
                // [CLS] text [SEP], given as ["[SEP]", 102] and ["[CLS]", 101].
                if (p["cls"] is JsonArray cls && cls.Count == 2) { tok.BosId = cls[1]!.GetValue<int>(); tok.PrependBosByDefault = true; }
                if (p["sep"] is JsonArray sep && sep.Count == 2) tok.SuffixId = sep[1]!.GetValue<int>();
                continue;
            }
            if (type != "TemplateProcessing" || p["single"] is not JsonArray single || single.Count == 0) continue;
            if (single[0]?["SpecialToken"]?["id"]?.GetValue<string>() is { } name && tok.TokenToId(name) is { } id)
            {
                tok.BosId = id;
                tok.PrependBosByDefault = true;
            }
            // A special token after the text (BERT's [SEP], T5's </s>) is appended along with the other special tokens.
            if (single.Count > 1 && single[^1]?["SpecialToken"]?["id"]?.GetValue<string>() is { } last && tok.TokenToId(last) is { } suffix)
                tok.SuffixId = suffix;
        }
    }

    /// <summary>Reads BOS/EOS/PAD from tokenizer_config.json, special_tokens_map.json or config.json, in that order.</summary>
    static void ApplyFolderSpecialTokens(TextTokenizer tok, string dir)
    {
        int? Resolve(JsonNode? node) => node switch
        {
            JsonValue v when v.TryGetValue(out string? s) => tok.TokenToId(s),
            JsonObject o when o["content"]?.GetValue<string>() is { } s => tok.TokenToId(s),
            _ => null,
        };
        foreach (var file in new[] { "tokenizer_config.json", "special_tokens_map.json" })
        {
            var node = ReadJsonOrNull(Path.Combine(dir, file));
            if (node == null) continue;
            tok.BosId ??= Resolve(node["bos_token"]);
            tok.EosId ??= Resolve(node["eos_token"]);
            tok.PadId ??= Resolve(node["pad_token"]);
        }
        var config = ReadJsonOrNull(Path.Combine(dir, "config.json"));
        if (config != null)
        {
            tok.BosId ??= IntOrNull(config["bos_token_id"]);
            tok.EosId ??= IntOrNull(config["eos_token_id"]);
            tok.PadId ??= IntOrNull(config["pad_token_id"]);
        }
        // Without configuration, fall back on the conventional BOS names (GPT-2 ships only tokenizer.json).
        foreach (var name in new[] { "<|begin_of_text|>", "<s>", "<bos>", "<|endoftext|>" })
            tok.BosId ??= tok.AddedTokens.Values.Contains(name) ? tok.TokenToId(name) : null;
        if (tok.EosId == null && tok.AddedTokens.Values.Contains("<|endoftext|>")) tok.EosId = tok.TokenToId("<|endoftext|>");
        // Like TransformerLens, prepend BOS by default whenever the model has one (the attention sink
        // position matters for interpretability); callers turn it off with prependBos: false / --no-bos.
        if (tok.BosId != null) tok.PrependBosByDefault = true;
    }

    static int? IntOrNull(JsonNode? n) => n is JsonValue v && v.TryGetValue(out int i) ? i : null;

    static JsonNode? ReadJsonOrNull(string path)
    {
        if (!File.Exists(path)) return null;
        try { return JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidCheckpointException(path, $"invalid JSON: {e.Message}"); }
    }
}
