using System.Globalization;
using System.Text;

namespace Mechanist.Tokenization;

/// <summary>
/// SentencePiece-style BPE (Llama-2, Mistral, Gemma): spaces become '▁', a '▁' may be prepended,
/// merges apply by rank over characters, and characters outside the vocabulary fall back to
/// &lt;0xNN&gt; byte tokens (or the unknown token).
/// </summary>
public sealed class SentencePieceBpeTokenizer : TextTokenizer
{
    /// <summary>The SentencePiece space marker.</summary>
    public const char Marker = '\u2581';

    /// <summary>When a '▁' is prepended to the text.</summary>
    public enum PrependScheme
    {
        /// <summary>Before every piece of text between added tokens.</summary>
        Always,
        /// <summary>Only at the very start of the text.</summary>
        First,
        /// <summary>Never.</summary>
        Never,
    }

    readonly string[] _idToToken;
    readonly Dictionary<string, int> _tokenToId;
    readonly Dictionary<(string, string), int> _mergeRanks = new();
    readonly int[] _byteIds = new int[256];
    readonly bool _byteFallback;
    readonly int? _unkId;
    readonly PrependScheme _prepend;
    readonly bool _markerOnlyLeads;

    /// <summary>Creates the tokenizer from a vocabulary and merges (pairs in rank order).</summary>
    public SentencePieceBpeTokenizer(IReadOnlyDictionary<string, int> vocab, IEnumerable<(string, string)> merges,
        bool byteFallback, int? unkId, PrependScheme prepend)
    {
        _tokenToId = new Dictionary<string, int>(vocab);
        _idToToken = new string[vocab.Values.Max() + 1];
        foreach (var (tok, id) in vocab) _idToToken[id] = tok;
        int rank = 0;
        foreach (var pair in merges) _mergeRanks.TryAdd(pair, rank++);
        _byteFallback = byteFallback;
        _unkId = unkId;
        _prepend = prepend;
        for (int b = 0; b < 256; b++) _byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        // When no piece has a marker after its first character, the text can be cut before each marker.
        _markerOnlyLeads = vocab.Keys.All(k => k.IndexOf(Marker, 1) < 0);
    }

    /// <inheritdoc/>
    public override int VocabSize => Math.Max(_idToToken.Length, AddedTokens.Count == 0 ? 0 : AddedTokens.Keys.Max() + 1);

    /// <inheritdoc/>
    public override string Kind => "SentencePiece BPE";

    /// <inheritdoc/>
    protected override IEnumerable<int> EncodeOrdinary(string text, bool atTextStart)
    {
        bool prefix = _prepend == PrependScheme.Always || (_prepend == PrependScheme.First && atTextStart);
        string normalized = (prefix ? Marker.ToString() : "") + text.Replace(' ', Marker);
        var ids = new List<int>();
        if (_markerOnlyLeads)
        {
            int start = 0;
            for (int i = 1; i <= normalized.Length; i++)
                if (i == normalized.Length || normalized[i] == Marker)
                {
                    EncodeWord(normalized[start..i], ids);
                    start = i;
                }
        }
        else EncodeWord(normalized, ids);
        return ids;
    }

    void EncodeWord(string word, List<int> ids)
    {
        if (word.Length == 0) return;
        var symbols = new List<string>();
        for (int i = 0; i < word.Length;)
        {
            int len = char.IsSurrogatePair(word, i) ? 2 : 1;
            symbols.Add(word.Substring(i, len));
            i += len;
        }
        while (symbols.Count > 1)
        {
            int bestRank = int.MaxValue, bestAt = -1;
            for (int i = 0; i + 1 < symbols.Count; i++)
                if (_mergeRanks.TryGetValue((symbols[i], symbols[i + 1]), out int r) && r < bestRank) { bestRank = r; bestAt = i; }
            if (bestAt < 0) break;
            symbols[bestAt] += symbols[bestAt + 1];
            symbols.RemoveAt(bestAt + 1);
        }
        foreach (var s in symbols)
        {
            if (_tokenToId.TryGetValue(s, out int id)) { ids.Add(id); continue; }
            if (_byteFallback && Encoding.UTF8.GetBytes(s).All(b => _byteIds[b] >= 0))
            {
                foreach (byte b in Encoding.UTF8.GetBytes(s)) ids.Add(_byteIds[b]);
                continue;
            }
            ids.Add(_unkId ?? throw new MechanistException($"'{s}' is not in the vocabulary and the tokenizer has no unknown token"));
        }
    }

    /// <inheritdoc/>
    protected override string DecodeOrdinary(IReadOnlyList<int> ids, bool atTextStart)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
        {
            string piece = IdToModelToken(id);
            if (IsByteToken(piece, out byte b)) bytes.Add(b);
            else bytes.AddRange(Encoding.UTF8.GetBytes(piece.Replace(Marker, ' ')));
        }
        string text = Encoding.UTF8.GetString(bytes.ToArray());
        bool prefixed = _prepend == PrependScheme.Always || (_prepend == PrependScheme.First && atTextStart);
        return prefixed && atTextStart && text.StartsWith(' ') ? text[1..] : text;
    }

    /// <inheritdoc/>
    protected override string TokenText(int id)
    {
        CheckId(id);
        string piece = IdToModelToken(id);
        return IsByteToken(piece, out byte b) ? Encoding.UTF8.GetString(new[] { b }) : piece.Replace(Marker, ' ');
    }

    internal static bool IsByteToken(string piece, out byte value)
    {
        value = 0;
        return piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>'
            && byte.TryParse(piece.AsSpan(3, 2), NumberStyles.HexNumber, null, out value);
    }

    /// <inheritdoc/>
    protected override string IdToModelToken(int id) =>
        _idToToken[id] ?? throw new MechanistException($"token id {id} has no vocabulary entry");

    /// <inheritdoc/>
    public override int? TokenToId(string token) =>
        _tokenToId.TryGetValue(token, out int id) ? id
        : AddedTokens.Where(kv => kv.Value == token).Select(kv => (int?)kv.Key).FirstOrDefault();
}
