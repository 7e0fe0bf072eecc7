using System.Globalization;
using System.Text;

namespace Mechanist.Tokenization;

/// <summary>
/// BERT's WordPiece: Hugging Face's BertNormalizer (control characters dropped, whitespace made spaces, CJK characters spaced,
/// optional lowercasing and accent stripping), BertPreTokenizer (split on whitespace and around every punctuation character),
/// then per word the longest vocabulary prefix, continued by "##" pieces; a word that cannot be covered, or is longer than
/// <c>max_input_chars_per_word</c>, is one unknown token.
/// </summary>
public sealed class WordPieceTokenizer : TextTokenizer
{
    readonly string[] _idToToken;
    readonly Dictionary<string, int> _tokenToId;
    readonly int _unkId;
    readonly string _prefix;
    readonly int _maxChars;
    readonly bool _lowercase, _stripAccents, _chineseChars, _cleanText;

    /// <summary>Creates the tokenizer (the normalizer settings as BertNormalizer's; accents are stripped when lowercasing unless said otherwise).</summary>
    public WordPieceTokenizer(IReadOnlyDictionary<string, int> vocab, string unkToken, string continuingPrefix = "##", int maxInputCharsPerWord = 100,
        bool lowercase = true, bool? stripAccents = null, bool handleChineseChars = true, bool cleanText = true)
    {
        _tokenToId = new Dictionary<string, int>(vocab);
        _idToToken = new string[vocab.Values.Max() + 1];
        foreach (var (tok, id) in vocab) _idToToken[id] = tok;
        _unkId = vocab.TryGetValue(unkToken, out int u) ? u : throw new MechanistException($"WordPiece: the unknown token '{unkToken}' is not in the vocabulary");
        _prefix = continuingPrefix; _maxChars = maxInputCharsPerWord;
        _lowercase = lowercase; _stripAccents = stripAccents ?? lowercase; _chineseChars = handleChineseChars; _cleanText = cleanText;
    }

    /// <inheritdoc/>
    public override int VocabSize => Math.Max(_idToToken.Length, AddedTokens.Count == 0 ? 0 : AddedTokens.Keys.Max() + 1);

    /// <inheritdoc/>
    public override string Kind => "WordPiece";

    string Normalize(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (var rune in text.EnumerateRunes())
        {
            int c = rune.Value;
            if (_cleanText)
            {
                if (c == 0 || c == 0xFFFD || IsControl(rune)) continue;
                if (IsWhitespace(rune)) { sb.Append(' '); continue; }
            }
            if (_chineseChars && IsCjk(c)) { sb.Append(' ').Append(rune.ToString()).Append(' '); continue; }
            sb.Append(rune.ToString());
        }
        string s = sb.ToString();
        if (_stripAccents) s = TextNormalization.StripAccents(s);
        return _lowercase ? s.ToLowerInvariant() : s;
    }

    static bool IsWhitespace(Rune r) => r.Value is ' ' or '\t' or '\n' or '\r' || Rune.GetUnicodeCategory(r) == UnicodeCategory.SpaceSeparator;

    static bool IsControl(Rune r) => r.Value is not ('\t' or '\n' or '\r') && Rune.GetUnicodeCategory(r) is UnicodeCategory.Control or UnicodeCategory.Format
        or UnicodeCategory.PrivateUse or UnicodeCategory.Surrogate or UnicodeCategory.OtherNotAssigned;

    static bool IsCjk(int c) => c is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF or >= 0x2A700 and <= 0x2B73F
        or >= 0x2B740 and <= 0x2B81F or >= 0x2B820 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF or >= 0x2F800 and <= 0x2FA1F;

    /// <summary>BERT's punctuation: every ASCII non-alphanumeric symbol, and Unicode's punctuation categories.</summary>
    static bool IsPunctuation(Rune r) => r.Value is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126
        || Rune.GetUnicodeCategory(r) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation or UnicodeCategory.OpenPunctuation
            or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;

    static IEnumerable<string> PreTokenize(string text)
    {
        var word = new StringBuilder();
        foreach (var rune in text.EnumerateRunes())
        {
            if (Rune.IsWhiteSpace(rune) || IsPunctuation(rune))
            {
                if (word.Length > 0) { yield return word.ToString(); word.Clear(); }
                if (!Rune.IsWhiteSpace(rune)) yield return rune.ToString();
            }
            else word.Append(rune.ToString());
        }
        if (word.Length > 0) yield return word.ToString();
    }

    /// <inheritdoc/>
    protected override IEnumerable<int> EncodeOrdinary(string text, bool atTextStart)
    {
        foreach (var word in PreTokenize(Normalize(text)))
        {
            if (word.EnumerateRunes().Count() > _maxChars) { yield return _unkId; continue; }
            var pieces = new List<int>();
            int start = 0;
            while (start < word.Length)
            {
                int end = word.Length, found = -1;
                for (; end > start; end--)
                {
                    if (end < word.Length && char.IsLowSurrogate(word[end])) continue;
                    string piece = start == 0 ? word[start..end] : _prefix + word[start..end];
                    if (_tokenToId.TryGetValue(piece, out found)) break;
                    found = -1;
                }
                if (found < 0) { pieces = null; break; }
                pieces.Add(found);
                start = end;
            }
            if (pieces is null) yield return _unkId;
            else foreach (int id in pieces) yield return id;
        }
    }

    /// <summary>Joins tokens with spaces, "##" pieces to the token before them, and tidies spaces before punctuation as HF's WordPiece decoder does.</summary>
    protected override string DecodeOrdinary(IReadOnlyList<int> ids, bool atTextStart)
    {
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            string tok = IdToModelToken(id);
            if (tok.StartsWith(_prefix, StringComparison.Ordinal) && sb.Length > 0) sb.Append(tok[_prefix.Length..]);
            else { if (sb.Length > 0) sb.Append(' '); sb.Append(tok); }
        }
        return sb.ToString().Replace(" .", ".").Replace(" ?", "?").Replace(" !", "!").Replace(" ,", ",").Replace(" ' ", "'")
            .Replace(" n't", "n't").Replace(" 'm", "'m").Replace(" 's", "'s").Replace(" 've", "'ve").Replace(" 're", "'re");
    }

    /// <inheritdoc/>
    public override string Decode(IEnumerable<int> ids, bool skipSpecial = false)
    {
        var kept = ids.Where(id => !(skipSpecial && IsSpecial(id))).ToList();
        foreach (int id in kept) if (!AddedTokens.ContainsKey(id)) CheckId(id);
        // Added tokens are words of their own: decode the whole run together so spaces fall between them and the pieces.
        return DecodeOrdinary(kept, true);
    }

    /// <inheritdoc/>
    protected override string TokenText(int id) { CheckId(id); return IdToModelToken(id); }

    /// <inheritdoc/>
    protected override string IdToModelToken(int id) =>
        AddedTokens.TryGetValue(id, out var added) ? added : _idToToken[id] ?? throw new MechanistException($"token id {id} has no vocabulary entry");

    /// <inheritdoc/>
    public override int? TokenToId(string token) =>
        _tokenToId.TryGetValue(token, out int id) ? id
        : AddedTokens.Where(kv => kv.Value == token).Select(kv => (int?)kv.Key).FirstOrDefault();
}
