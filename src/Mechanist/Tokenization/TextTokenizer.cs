using System.Text;

namespace Mechanist.Tokenization;

/// <summary>
/// A tokenizer that gives exactly the ids a model was trained with. Special and added tokens found in
/// the text are matched first (longest first) and never split; the rest goes to the model-specific
/// algorithm. BOS is prepended when asked, or by default when the tokenizer's own configuration does.
/// </summary>
public abstract class TextTokenizer
{
    readonly Dictionary<int, string> _addedById = new();
    readonly List<string> _addedByLength = new();
    readonly HashSet<int> _specialIds = new();

    /// <summary>Beginning-of-sequence token id, if the tokenizer has one.</summary>
    public int? BosId { get; set; }

    /// <summary>End-of-sequence token id, if any.</summary>
    public int? EosId { get; set; }

    /// <summary>Padding token id, if any.</summary>
    public int? PadId { get; set; }

    /// <summary>Whether <see cref="Encode"/> prepends BOS when the caller does not say.</summary>
    public bool PrependBosByDefault { get; set; }

    /// <summary>
    /// A special token the tokenizer's template puts after the text (BERT's [SEP], T5's &lt;/s&gt;): <see cref="Encode"/> appends it
    /// unless the caller turns special tokens off (<c>prependBos: false</c>).
    /// </summary>
    public int? SuffixId { get; set; }

    /// <summary>Number of ids (model vocabulary and added tokens).</summary>
    public abstract int VocabSize { get; }

    /// <summary>A short name of the algorithm ("byte-level BPE", "SentencePiece BPE", ...).</summary>
    public abstract string Kind { get; }

    /// <summary>Registers an added token that is matched verbatim in text.</summary>
    public void AddSpecialToken(string content, int id, bool special = true)
    {
        _addedById[id] = content;
        if (special) _specialIds.Add(id);
        if (!_addedByLength.Contains(content))
        {
            _addedByLength.Add(content);
            _addedByLength.Sort((a, b) => b.Length.CompareTo(a.Length));
        }
    }

    /// <summary>Whether an id is a special added token (skipped by Decode when asked).</summary>
    public bool IsSpecial(int id) => _specialIds.Contains(id);

    /// <summary>The added tokens, by id.</summary>
    public IReadOnlyDictionary<int, string> AddedTokens => _addedById;

    /// <summary>Encodes text; <paramref name="prependBos"/> null means the tokenizer's default.</summary>
    public int[] Encode(string text, bool? prependBos = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        if (prependBos ?? PrependBosByDefault)
        {
            if (BosId is not { } bos) throw new MechanistException("this tokenizer has no BOS token; use --no-bos");
            ids.Add(bos);
        }
        int start = 0, segment = 0;
        while (start <= text.Length)
        {
            var (pos, token) = FindAddedToken(text, start);
            int end = pos < 0 ? text.Length : pos;
            if (end > start) ids.AddRange(EncodeOrdinary(text[start..end], segment++ == 0 && start == 0));
            if (pos < 0) break;
            ids.Add(TokenToId(token!) ?? throw new InvalidOperationException(token));
            start = pos + token!.Length;
            segment++;
        }
        if (SuffixId is { } suffix && prependBos != false) ids.Add(suffix);
        return ids.ToArray();
    }

    (int Pos, string? Token) FindAddedToken(string text, int start)
    {
        if (_addedByLength.Count == 0) return (-1, null);
        int best = -1; string? bestToken = null;
        foreach (var tok in _addedByLength)
        {
            int p = text.IndexOf(tok, start, StringComparison.Ordinal);
            if (p >= 0 && (best < 0 || p < best)) { best = p; bestToken = tok; }
        }
        return (best, bestToken);
    }

    /// <summary>Encodes text that holds no added tokens. <paramref name="atTextStart"/>: this piece begins the text.</summary>
    protected abstract IEnumerable<int> EncodeOrdinary(string text, bool atTextStart);

    /// <summary>Decodes ids back to text.</summary>
    public virtual string Decode(IEnumerable<int> ids, bool skipSpecial = false)
    {
        var sb = new StringBuilder();
        var run = new List<int>();
        bool first = true;
        void Flush()
        {
            if (run.Count == 0) return;
            sb.Append(DecodeOrdinary(run, first));
            first = false;
            run.Clear();
        }
        foreach (int id in ids)
        {
            if (_addedById.TryGetValue(id, out var content))
            {
                Flush();
                if (!(skipSpecial && _specialIds.Contains(id))) sb.Append(content);
                if (!_specialIds.Contains(id) || !skipSpecial) first = false;
                continue;
            }
            CheckId(id);
            run.Add(id);
        }
        Flush();
        return sb.ToString();
    }

    /// <summary>Decodes a run of model (non-added) ids. <paramref name="atTextStart"/>: the run begins the text.</summary>
    protected abstract string DecodeOrdinary(IReadOnlyList<int> ids, bool atTextStart);

    /// <summary>The raw vocabulary string of an id (e.g. "ĠClaire", "▁the", "&lt;0x0A&gt;").</summary>
    public string IdToToken(int id)
    {
        if (_addedById.TryGetValue(id, out var content)) return content;
        CheckId(id);
        return IdToModelToken(id);
    }

    /// <summary>The model's vocabulary string for an id.</summary>
    protected abstract string IdToModelToken(int id);

    /// <summary>The id of a raw vocabulary string, or null.</summary>
    public abstract int? TokenToId(string token);

    /// <summary>
    /// Each id as the text it stands for, spaces shown as spaces (" Claire"); bytes that are only part
    /// of a character show as U+FFFD.
    /// </summary>
    public string[] ToStrTokens(IEnumerable<int> ids) =>
        ids.Select(id => _addedById.TryGetValue(id, out var c) ? c : TokenText(id)).ToArray();

    /// <summary>
    /// Decodes as <see cref="Decode"/> does, but writes an id this tokenizer does not have (a model's padded embedding rows can be
    /// generated) as "⟨#id⟩" instead of failing.
    /// </summary>
    public string DecodeLenient(IEnumerable<long> ids, bool skipSpecial = false)
    {
        var sb = new StringBuilder();
        var run = new List<int>();
        void Flush() { if (run.Count > 0) { sb.Append(Decode(run, skipSpecial)); run.Clear(); } }
        foreach (long id in ids)
        {
            if (id is >= 0 and <= int.MaxValue && (_addedById.ContainsKey((int)id) || id < VocabSize)) run.Add((int)id);
            else { Flush(); sb.Append($"⟨#{id}⟩"); }
        }
        Flush();
        return sb.ToString();
    }

    /// <summary>
    /// Each id's text as <see cref="ToStrTokens"/> gives it, or "#id" for an id this tokenizer does not have (a model's embedding
    /// often has more rows than its tokenizer has tokens, and those rows can still be predicted).
    /// </summary>
    public string[] DisplayTokens(IEnumerable<long> ids) =>
        ids.Select(id => id is >= 0 and <= int.MaxValue && (_addedById.ContainsKey((int)id) || id < VocabSize) ? ToStrTokens(new[] { (int)id })[0] : $"#{id}").ToArray();

    /// <summary>The text of one model token, for display.</summary>
    protected virtual string TokenText(int id) { CheckId(id); return DecodeOrdinary(new[] { id }, false); }

    /// <summary>Throws a clear error for an id outside the vocabulary.</summary>
    protected void CheckId(int id)
    {
        if (id < 0 || id >= VocabSize)
            throw new MechanistException($"token id {id} is outside the vocabulary (0..{VocabSize - 1})");
    }
}
