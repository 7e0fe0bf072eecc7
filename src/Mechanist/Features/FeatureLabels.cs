namespace Mechanist.Features;

/// <summary>Deterministic, offline labels for features, from their top examples and logit effects.</summary>
public static class FeatureLabels
{
    /// <summary>A token as a label shows it: trimmed, and a visible mark for whitespace alone.</summary>
    public static string Show(string token)
    {
        string t = token.Trim();
        return t.Length == 0 ? (token.Contains('\n') ? "⏎" : "␣") : t;
    }

    /// <summary>
    /// A short label: the tokens it fires on (by share of top activation), the token before them when one dominates,
    /// and the token it most promotes, e.g. <c>"is" after "Dallas" → "Austin"</c>. A feature that never fired is "dead".
    /// </summary>
    public static string Auto(IReadOnlyList<FeatureExample> top, IReadOnlyList<TokenValue> topLogits, string[] vocab)
    {
        if (top.Count == 0) return "dead (never fired on the corpus)";
        string Tok(long id) => id >= 0 && id < vocab.Length ? vocab[id] : $"#{id}";
        var fired = Tally(top.Select(e => (Show(Tok(e.Ids[e.Position - e.Start])), (double)e.Activation)));
        var shown = new List<string>(); double covered = 0;
        foreach (var (token, share) in fired)
        {
            if (shown.Count == 3 || (shown.Count > 0 && covered >= 0.8)) break;
            shown.Add($"\"{token}\""); covered += share;
        }
        string label = string.Join(" / ", shown) + (covered < 0.8 ? " …" : "");
        var before = Tally(top.Where(e => e.Position > e.Start).Select(e => (Show(Tok(e.Ids[e.Position - e.Start - 1])), (double)e.Activation)));
        if (before.Count > 0 && before[0].Share >= 0.5 && top.Count(e => e.Position > e.Start) * 2 >= top.Count) label += $" after \"{before[0].Token}\"";
        if (topLogits.Count > 0 && topLogits[0].Value > 0) label += $" → \"{Show(topLogits[0].Token)}\"";
        return label;
    }

    static List<(string Token, double Share)> Tally(IEnumerable<(string Token, double Weight)> items)
    {
        var sums = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var (t, w) in items) sums[t] = sums.GetValueOrDefault(t) + w;
        double total = sums.Values.Sum();
        return sums.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => (kv.Key, total > 0 ? kv.Value / total : 0)).ToList();
    }

    /// <summary>What text search matches for a feature: its automatic label and the tokens of its top examples' windows, lower-case.</summary>
    public static string SearchText(IReadOnlyList<FeatureExample> top, string autoLabel, string[] vocab)
    {
        var words = new HashSet<string>(StringComparer.Ordinal);
        foreach (var e in top) words.Add(Show(e.Ids[e.Position - e.Start] < vocab.Length ? vocab[e.Ids[e.Position - e.Start]] : ""));
        var contexts = top.Take(5).Select(e => string.Concat(e.Ids.Select(id => id < vocab.Length ? vocab[id] : "")));
        return (autoLabel + " | " + string.Join(" ", words) + " | " + string.Join(" | ", contexts)).ToLowerInvariant();
    }
}
