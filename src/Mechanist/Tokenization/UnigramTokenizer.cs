using System.Text;

namespace Mechanist.Tokenization;

/// <summary>
/// SentencePiece's Unigram model as Hugging Face's tokenizer.json describes it (T5, ALBERT, XLNet): text is normalised (NFKC's compatibility folds from
/// <see cref="TextNormalization"/>, the common case of SentencePiece's precompiled nmt_nfkc map), split on whitespace with "▁" marking each word's start (Metaspace), and
/// each word is segmented by Viterbi into the pieces of highest total log-probability. A character no piece covers becomes the
/// unknown token, scored 10 below the lowest piece (runs of them fuse into one), or its UTF-8 bytes when the model has byte fallback.
/// </summary>
public sealed class UnigramTokenizer : TextTokenizer
{
    const string Space = "▁";
    readonly string[] _pieces;
    readonly double[] _scores;
    readonly Dictionary<string, int> _ids;
    readonly int _unkId;
    readonly double _unkScore;
    readonly bool _byteFallback, _normalize, _prefixSpace;
    readonly int _longest;

    /// <summary>Creates the tokenizer from (piece, log-probability) pairs by id.</summary>
    public UnigramTokenizer(IReadOnlyList<(string Piece, double Score)> vocab, int unkId, bool byteFallback = false, bool nfkc = true, bool addPrefixSpace = true)
    {
        if (vocab.Count == 0) throw new MechanistException("Unigram: empty vocabulary");
        if (unkId < 0 || unkId >= vocab.Count) throw new MechanistException($"Unigram: unk_id {unkId} is outside the vocabulary");
        _pieces = vocab.Select(v => v.Piece).ToArray();
        _scores = vocab.Select(v => v.Score).ToArray();
        _ids = new Dictionary<string, int>(vocab.Count);
        for (int i = 0; i < _pieces.Length; i++) _ids.TryAdd(_pieces[i], i);
        _unkId = unkId; _byteFallback = byteFallback; _normalize = nfkc; _prefixSpace = addPrefixSpace;
        _unkScore = _scores.Min() - 10;
        _longest = _pieces.Max(p => p.Length);
    }

    /// <inheritdoc/>
    public override int VocabSize => Math.Max(_pieces.Length, AddedTokens.Count == 0 ? 0 : AddedTokens.Keys.Max() + 1);

    /// <inheritdoc/>
    public override string Kind => "SentencePiece Unigram";

    /// <inheritdoc/>
    protected override IEnumerable<int> EncodeOrdinary(string text, bool atTextStart)
    {
        if (_normalize) text = TextNormalization.CompatibilityFold(text);
        var words = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        for (int w = 0; w < words.Length; w++)
            foreach (int id in Segment((_prefixSpace || w > 0 ? Space : "") + words[w])) yield return id;
    }

    /// <summary>Viterbi over character positions: best[i] is the best score of a segmentation of the first i characters.</summary>
    List<int> Segment(string word)
    {
        int n = word.Length;
        var best = new double[n + 1];
        var from = new int[n + 1];
        var piece = new int[n + 1];
        Array.Fill(best, double.NegativeInfinity);
        best[0] = 0;
        for (int i = 0; i < n; i++)
        {
            if (double.IsNegativeInfinity(best[i]) || char.IsLowSurrogate(word[i])) continue;
            int charLen = char.IsHighSurrogate(word[i]) && i + 1 < n ? 2 : 1;
            // As SentencePiece: the unknown token steps over a character only where no one-character piece does.
            bool covered = _ids.ContainsKey(word.Substring(i, charLen));
            for (int len = 1; len <= Math.Min(_longest, n - i); len++)
            {
                if (i + len < n && char.IsLowSurrogate(word[i + len])) continue;
                if (!_ids.TryGetValue(word.Substring(i, len), out int id)) continue;
                double score = best[i] + _scores[id];
                if (score > best[i + len]) { best[i + len] = score; from[i + len] = i; piece[i + len] = id; }
            }
            if (!covered)
            {
                double score = best[i] + _unkScore;
                if (score > best[i + charLen]) { best[i + charLen] = score; from[i + charLen] = i; piece[i + charLen] = -1; }
            }
        }
        var ids = new List<int>();
        var spans = new List<(int Start, int End, int Id)>();
        for (int end = n; end > 0; end = from[end]) spans.Add((from[end], end, piece[end]));
        spans.Reverse();
        bool lastUnk = false;
        foreach (var (start, end, id) in spans)
        {
            if (id >= 0) { ids.Add(id); lastUnk = false; continue; }
            if (_byteFallback && Encoding.UTF8.GetBytes(word[start..end]).Select(b => _ids.TryGetValue($"<0x{b:X2}>", out int bid) ? bid : -1).ToArray() is var bytes && bytes.All(b => b >= 0))
            { ids.AddRange(bytes); lastUnk = false; continue; }
            if (!lastUnk) ids.Add(_unkId); // runs of unknown characters fuse into one unknown token
            lastUnk = true;
        }
        return ids;
    }

    /// <summary>Joins pieces, "▁" becomes a space, and the text's first space is dropped (byte pieces are reassembled as UTF-8).</summary>
    protected override string DecodeOrdinary(IReadOnlyList<int> ids, bool atTextStart)
    {
        var bytes = new List<byte>();
        var sb = new StringBuilder();
        void FlushBytes() { if (bytes.Count > 0) { sb.Append(Encoding.UTF8.GetString(bytes.ToArray())); bytes.Clear(); } }
        foreach (int id in ids)
        {
            string p = _pieces[id];
            if (p.Length == 6 && p.StartsWith("<0x") && p.EndsWith('>') && byte.TryParse(p.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b)) { bytes.Add(b); continue; }
            FlushBytes();
            sb.Append(p.Replace(Space, " "));
        }
        FlushBytes();
        string s = sb.ToString();
        return atTextStart && _prefixSpace && s.StartsWith(' ') ? s[1..] : s;
    }

    /// <inheritdoc/>
    protected override string TokenText(int id) { CheckId(id); return IdToModelToken(id).Replace(Space, " "); }

    /// <inheritdoc/>
    protected override string IdToModelToken(int id) => AddedTokens.TryGetValue(id, out var added) ? added : _pieces[id];

    /// <inheritdoc/>
    public override int? TokenToId(string token) =>
        _ids.TryGetValue(token, out int id) ? id : AddedTokens.Where(kv => kv.Value == token).Select(kv => (int?)kv.Key).FirstOrDefault();
}
