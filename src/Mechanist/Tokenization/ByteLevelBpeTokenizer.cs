using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Mechanist.Tokenization;

/// <summary>
/// Byte-level BPE (GPT-2, Llama-3, Qwen2): text is split by a pre-tokenizer regex, each piece is
/// mapped to bytes shown as printable characters (space = 'Ġ'), and merges are applied by rank.
/// The merge engine is Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/>.
/// </summary>
public sealed class ByteLevelBpeTokenizer : TextTokenizer
{
    /// <summary>GPT-2's pre-tokenizer pattern.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    readonly BpeTokenizer _bpe;
    readonly string[] _idToToken;
    readonly Dictionary<string, int> _tokenToId;
    readonly bool _addPrefixSpace;

    /// <summary>Builds the tokenizer from a vocabulary, merges ("a b" strings, by rank) and a pre-tokenizer regex.</summary>
    public ByteLevelBpeTokenizer(IReadOnlyDictionary<string, int> vocab, IEnumerable<string> merges,
        string pattern = Gpt2Pattern, bool addPrefixSpace = false)
    {
        _tokenToId = new Dictionary<string, int>(vocab);
        _idToToken = new string[vocab.Count == 0 ? 0 : vocab.Values.Max() + 1];
        foreach (var (tok, id) in vocab) _idToToken[id] = tok;
        _addPrefixSpace = addPrefixSpace;
        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(new Regex(pattern, RegexOptions.Compiled), null),
        };
        _bpe = BpeTokenizer.Create(options);
    }

    /// <inheritdoc/>
    public override int VocabSize => Math.Max(_idToToken.Length, AddedTokens.Count == 0 ? 0 : AddedTokens.Keys.Max() + 1);

    /// <inheritdoc/>
    public override string Kind => "byte-level BPE";

    /// <inheritdoc/>
    protected override IEnumerable<int> EncodeOrdinary(string text, bool atTextStart)
    {
        if (_addPrefixSpace && atTextStart && !text.StartsWith(' ')) text = " " + text;
        return _bpe.EncodeToIds(text, considerPreTokenization: true, considerNormalization: false);
    }

    /// <inheritdoc/>
    protected override string DecodeOrdinary(IReadOnlyList<int> ids, bool atTextStart)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
            foreach (char c in IdToModelToken(id))
                bytes.Add(ByteLevelAlphabet.CharToByte(c));
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <inheritdoc/>
    protected override string IdToModelToken(int id) =>
        _idToToken[id] ?? throw new MechanistException($"token id {id} has no vocabulary entry");

    /// <inheritdoc/>
    public override int? TokenToId(string token) =>
        _tokenToId.TryGetValue(token, out int id) ? id
        : AddedTokens.FirstOrDefault(kv => kv.Value == token) is { Value: not null } kv2 ? kv2.Key : null;
}

/// <summary>GPT-2's reversible map between bytes and printable Unicode characters.</summary>
public static class ByteLevelAlphabet
{
    static readonly char[] ByteToCharTable = new char[256];
    static readonly Dictionary<char, byte> CharToByteTable = new();

    static ByteLevelAlphabet()
    {
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            ByteToCharTable[b] = printable ? (char)b : (char)(256 + n++);
            CharToByteTable[ByteToCharTable[b]] = (byte)b;
        }
    }

    /// <summary>The printable character standing for a byte.</summary>
    public static char ByteToChar(byte b) => ByteToCharTable[b];

    /// <summary>The byte a printable character stands for.</summary>
    public static byte CharToByte(char c) =>
        CharToByteTable.TryGetValue(c, out byte b) ? b : throw new MechanistException($"'{c}' is not a byte-level BPE character");

    /// <summary>Maps UTF-8 bytes of text to the byte-level alphabet.</summary>
    public static string Encode(string text) => new(Encoding.UTF8.GetBytes(text).Select(ByteToChar).ToArray());
}
