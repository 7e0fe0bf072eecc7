namespace Mechanist.Microscope;

/// <summary>The token classes LLM-Microscope compares.</summary>
public static class WordClasses
{
    /// <summary>Punctuation (no letters or digits).</summary>
    public const string Punctuation = "punctuation";
    /// <summary>Articles and other determiners.</summary>
    public const string Determiner = "determiner";
    /// <summary>Other stop words.</summary>
    public const string StopWord = "stop word";
    /// <summary>Everything else (content words and sub-word pieces).</summary>
    public const string Other = "other";

    /// <summary>All classes in report order.</summary>
    public static readonly string[] All = { Punctuation, Determiner, StopWord, Other };

    /// <summary>English determiners (articles, demonstratives, possessives, quantifiers).</summary>
    public static readonly HashSet<string> Determiners = new(StringComparer.OrdinalIgnoreCase)
    {
        "the", "a", "an", "this", "that", "these", "those", "my", "your", "his", "her", "its", "our", "their",
        "some", "any", "no", "every", "each", "all", "both", "either", "neither", "another", "such",
    };

    /// <summary>English stop words other than determiners (a common, short list: pronouns, prepositions, auxiliaries, conjunctions).</summary>
    public static readonly HashSet<string> StopWords = new(StringComparer.OrdinalIgnoreCase)
    {
        "i", "me", "we", "us", "you", "he", "him", "she", "it", "they", "them", "what", "which", "who", "whom",
        "am", "is", "are", "was", "were", "be", "been", "being", "have", "has", "had", "do", "does", "did",
        "and", "but", "if", "or", "because", "as", "until", "while", "of", "at", "by", "for", "with", "about",
        "against", "between", "into", "through", "during", "before", "after", "above", "below", "to", "from",
        "up", "down", "in", "out", "on", "off", "over", "under", "again", "then", "once", "here", "there",
        "when", "where", "why", "how", "so", "than", "too", "very", "can", "will", "just", "not", "nor", "only",
    };

    /// <summary>The class of one token's text (leading/trailing spaces and SentencePiece markers ignored).</summary>
    public static string Of(string token)
    {
        string t = token.Replace('\u2581', ' ').Replace('Ġ', ' ').Trim();
        if (t.Length == 0 || t.All(c => !char.IsLetterOrDigit(c))) return Punctuation;
        // A word-initial piece (with its leading space) is judged as the word; inner pieces are "other".
        if (Determiners.Contains(t)) return Determiner;
        if (StopWords.Contains(t)) return StopWord;
        return Other;
    }
}
