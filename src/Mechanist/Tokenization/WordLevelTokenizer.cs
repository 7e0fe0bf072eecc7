using System.Text.RegularExpressions;

namespace Mechanist.Tokenization;

/// <summary>
/// Word-level tokenizer: a pre-tokenizer regex splits text into words and punctuation, each of
/// which is one vocabulary entry (or the unknown token). Decoding joins tokens with spaces, except
/// before punctuation.
/// </summary>
public sealed class WordLevelTokenizer : TextTokenizer
{
    /// <summary>Hugging Face's "Whitespace" pre-tokenizer: runs of word characters, or of other non-space characters.</summary>
    public const string WhitespacePattern = @"\w+|[^\w\s]+";

    readonly string[] _idToToken;
    readonly Dictionary<string, int> _tokenToId;
    readonly Regex _split;
    readonly int? _unkId;

    /// <summary>Creates the tokenizer.</summary>
    public WordLevelTokenizer(IReadOnlyDictionary<string, int> vocab, string? unkToken, string pattern = WhitespacePattern)
    {
        _tokenToId = new Dictionary<string, int>(vocab);
        _idToToken = new string[vocab.Values.Max() + 1];
        foreach (var (tok, id) in vocab) _idToToken[id] = tok;
        _split = new Regex(pattern, RegexOptions.Compiled);
        _unkId = unkToken != null && vocab.TryGetValue(unkToken, out int u) ? u : null;
        Pattern = pattern;
    }

    /// <summary>The pre-tokenizer regex.</summary>
    public string Pattern { get; }

    /// <summary>The vocabulary, by id.</summary>
    public IReadOnlyList<string> Vocabulary => _idToToken;

    /// <inheritdoc/>
    public override int VocabSize => Math.Max(_idToToken.Length, AddedTokens.Count == 0 ? 0 : AddedTokens.Keys.Max() + 1);

    /// <inheritdoc/>
    public override string Kind => "word-level";

    /// <inheritdoc/>
    protected override IEnumerable<int> EncodeOrdinary(string text, bool atTextStart)
    {
        foreach (Match m in _split.Matches(text))
        {
            if (_tokenToId.TryGetValue(m.Value, out int id)) yield return id;
            else yield return _unkId ?? throw new MechanistException($"word '{m.Value}' is not in the vocabulary and there is no unknown token");
        }
    }

    /// <summary>Joins words with spaces; punctuation attaches to the word before it.</summary>
    public override string Decode(IEnumerable<int> ids, bool skipSpecial = false)
    {
        var sb = new System.Text.StringBuilder();
        foreach (int id in ids)
        {
            if (skipSpecial && IsSpecial(id)) continue;
            string tok = IdToToken(id);
            bool punctuation = tok.Length > 0 && !char.IsLetterOrDigit(tok[0]) && tok[0] != '"' && tok[0] != '(' && tok[0] != '<';
            if (sb.Length > 0 && !punctuation) sb.Append(' ');
            sb.Append(tok);
        }
        return sb.ToString();
    }

    /// <inheritdoc/>
    protected override string DecodeOrdinary(IReadOnlyList<int> ids, bool atTextStart) => Decode(ids);

    /// <inheritdoc/>
    protected override string TokenText(int id) { CheckId(id); return IdToModelToken(id); }

    /// <inheritdoc/>
    protected override string IdToModelToken(int id) =>
        _idToToken[id] ?? throw new MechanistException($"token id {id} has no vocabulary entry");

    /// <inheritdoc/>
    public override int? TokenToId(string token) =>
        _tokenToId.TryGetValue(token, out int id) ? id
        : AddedTokens.Where(kv => kv.Value == token).Select(kv => (int?)kv.Key).FirstOrDefault();
}
