using System.Text;

namespace Mechanist.Features;

/// <summary>How an explanation is scored (Delphi's names).</summary>
public enum ScoreMethod
{
    /// <summary>The model reads the explanation and a context, and says whether the feature fires anywhere in it.</summary>
    Detection,
    /// <summary>The model reads the explanation and a context with tokens marked, and says whether the marks are where the feature fires.</summary>
    Fuzzing,
}

/// <summary>Where and how to score.</summary>
/// <param name="Endpoint">An OpenAI-compatible server's base URL (or its .../chat/completions URL).</param>
/// <param name="Model">The model name the server expects.</param>
/// <param name="ApiKey">Bearer token, if the server wants one.</param>
/// <param name="Positives">Contexts on which the feature fires (detection) or correctly marked ones (fuzzing), drawn across its activation intervals.</param>
/// <param name="Negatives">Contexts on which it does not fire (detection) or wrongly marked ones (fuzzing).</param>
/// <param name="TimeoutSeconds">Per request.</param>
/// <param name="RequestsPerSecond">At most this many requests a second (0: no limit).</param>
/// <param name="Seed">Seed of the negatives' marks and of the order the contexts are asked in.</param>
public sealed record ScoringOptions(string Endpoint, string Model, string? ApiKey = null, int Positives = 10, int Negatives = 10, double TimeoutSeconds = 60,
    double RequestsPerSecond = 0, int Seed = 0);

/// <summary>One context put to the model, and the right answer.</summary>
/// <param name="Text">The context as shown (fuzzing: with ⟦marks⟧).</param>
/// <param name="Fires">Detection: whether the feature fires in it; fuzzing: whether the marks are right.</param>
public sealed record ScoringTrial(string Text, bool Fires);

/// <summary>An explanation's score.</summary>
/// <param name="Method">detection or fuzzing.</param>
/// <param name="BalancedAccuracy">½ (TP / P + TN / N).</param>
/// <param name="Positives">P.</param>
/// <param name="Negatives">N.</param>
/// <param name="TruePositives">TP.</param>
/// <param name="TrueNegatives">TN.</param>
/// <param name="Explanation">The text that was scored.</param>
/// <param name="Model">The scoring model's name.</param>
public sealed record FeatureScore(string Method, double BalancedAccuracy, int Positives, int Negatives, int TruePositives, int TrueNegatives, string Explanation, string Model);

/// <summary>
/// Automated interpretability scores of feature explanations (as Delphi scores them): a language model predicts, from the explanation alone,
/// where the feature fires, and its balanced accuracy is the score. Contexts come from the feature's store: firing windows drawn across its
/// activation intervals (highest first, round robin); as non-firing contexts, other features' windows on which this feature was checked to stay
/// at zero (<see cref="WindowMaxima"/>: the model run on each window's text), then the parts of its own windows before it first fires.
/// A score exists only when every question got a clear answer.
/// </summary>
public static class FeatureScorer
{
    /// <summary>The method's name as the CLI and the store spell it.</summary>
    public static string Name(ScoreMethod m) => m == ScoreMethod.Detection ? "detection" : "fuzzing";

    /// <summary>Parses detection or fuzzing.</summary>
    public static ScoreMethod Parse(string name) => name switch
    {
        "detection" => ScoreMethod.Detection,
        "fuzzing" => ScoreMethod.Fuzzing,
        _ => throw new MechanistException($"unknown scoring method '{name}' (detection, fuzzing)"),
    };

    /// <summary>The contexts to ask about, positives and negatives shuffled together (seeded).</summary>
    public static List<ScoringTrial> Trials(FeatureDashboard d, ScoreMethod method, ScoringOptions o, IReadOnlyList<string>? silent = null)
    {
        // Firing windows: one from each interval in turn (highest first), then the top examples; each window once.
        var windows = new List<ShownExample>();
        var seen = new HashSet<(long, int)>();
        void Add(ShownExample e) { if (e.Acts.Any(a => a > 0) && seen.Add((e.Text, e.Position))) windows.Add(e); }
        var queues = d.Intervals.Select(i => new Queue<ShownExample>(i.Examples)).Where(q => q.Count > 0).ToList();
        while (queues.Any(q => q.Count > 0)) foreach (var q in queues) if (q.Count > 0) Add(q.Dequeue());
        foreach (var e in d.Top) Add(e);
        var rng = new Random(o.Seed);
        var trials = new List<ScoringTrial>();
        if (method == ScoreMethod.Detection)
        {
            trials.AddRange(windows.Take(o.Positives).Select(e => new ScoringTrial(string.Concat(e.Tokens), true)));
            var quiet = new HashSet<string>(StringComparer.Ordinal);
            foreach (var text in silent ?? Array.Empty<string>()) if (quiet.Count < o.Negatives && text.Trim().Length > 0) quiet.Add(text);
            foreach (var e in windows)
            {
                if (quiet.Count == o.Negatives) break;
                int first = Array.FindIndex(e.Acts, a => a > 0);
                if (first >= 4 && string.Concat(e.Tokens.Take(first)) is var text && text.Trim().Length > 0) quiet.Add(text);
            }
            trials.AddRange(quiet.Select(t => new ScoringTrial(t, false)));
        }
        else
        {
            // Right marks on the first windows; on the next ones, as many marks as the window fires on, put where it does not.
            trials.AddRange(windows.Take(o.Positives).Select(e => new ScoringTrial(Marked(e, Enumerable.Range(0, e.Tokens.Length).Where(i => e.Acts[i] > 0).ToHashSet()), true)));
            var rest = windows.Skip(o.Positives).Concat(windows.Take(o.Positives)).ToList();
            foreach (var e in rest)
            {
                if (trials.Count(t => !t.Fires) == o.Negatives) break;
                int marks = e.Acts.Count(a => a > 0);
                var off = Enumerable.Range(0, e.Tokens.Length).Where(i => e.Acts[i] <= 0 && e.Tokens[i].Trim().Length > 0).ToList();
                if (marks == 0 || off.Count < marks) continue;
                var chosen = off.OrderBy(_ => rng.Next()).Take(marks).ToHashSet();
                trials.Add(new ScoringTrial(Marked(e, chosen), false));
            }
        }
        return trials.OrderBy(_ => rng.Next()).ToList();
    }

    static string Marked(ShownExample e, HashSet<int> marked)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < e.Tokens.Length; i++) sb.Append(marked.Contains(i) ? $"⟦{e.Tokens[i]}⟧" : e.Tokens[i]);
        return sb.ToString();
    }

    /// <summary>
    /// Encodes each window (its token ids run through <paramref name="model"/> as a text of its own) with dictionary layer
    /// <paramref name="layerIndex"/> of <paramref name="source"/>: per window, every feature's largest activation on it [windows, d_dict].
    /// A feature is silent on a window where its entry is ≤ 0.
    /// </summary>
    public static float[][] WindowMaxima(Models.HookedTransformer model, FeatureSource source, int layerIndex, IReadOnlyList<long[]> windows)
    {
        string hook = source.InputHooks[layerIndex];
        var options = new Models.RunOptions { Splices = source.Splice is null ? Array.Empty<Hooks.ISplice>() : new[] { source.Splice } };
        var result = new float[windows.Count][];
        for (int w = 0; w < windows.Count; w++)
        {
            using var scope = TorchSharp.torch.NewDisposeScope();
            using var noGrad = TorchSharp.torch.no_grad();
            var tokens = TorchSharp.torch.tensor(windows[w], device: model.Device).unsqueeze(0);
            var (logits, cache) = model.RunWithCache(tokens, n => n == hook, options);
            using (cache)
            {
                var acts = source.Encode(layerIndex, cache[hook][0]);                            // [T, d_dict]
                result[w] = acts.max(0).values.to(TorchSharp.torch.ScalarType.Float32).cpu().data<float>().ToArray();
            }
        }
        return result;
    }

    /// <summary>The question for one context.</summary>
    public static string Prompt(string explanation, ScoringTrial trial, ScoreMethod method)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"A feature of a neural language model is explained as: \"{explanation}\"");
        sb.AppendLine();
        if (method == ScoreMethod.Detection)
        {
            sb.AppendLine("Does the feature fire anywhere in the following text? Answer 1 for yes or 0 for no, and nothing else.");
            sb.AppendLine();
            sb.Append("Text: ").AppendLine(trial.Text);
        }
        else
        {
            sb.AppendLine("In the following text some tokens are marked ⟦like this⟧. Are the marked tokens the ones where the feature fires?");
            sb.AppendLine("Answer 1 for yes or 0 for no, and nothing else.");
            sb.AppendLine();
            sb.Append("Text: ").AppendLine(trial.Text);
        }
        return sb.ToString();
    }

    /// <summary>Reads a yes/no answer ("1", "yes", "true" / "0", "no", "false", first word); null when it is neither.</summary>
    public static bool? ParseAnswer(string content)
    {
        var word = new string(content.Trim().TakeWhile(char.IsLetterOrDigit).ToArray()).ToLowerInvariant();
        return word switch { "1" or "yes" or "true" => true, "0" or "no" or "false" => false, _ => null };
    }

    /// <summary>
    /// Asks about every trial and returns the balanced accuracy; any failed request or unclear answer throws (so no score is ever made up from
    /// part of the answers).
    /// </summary>
    public static async Task<FeatureScore> ScoreAsync(HttpClient http, ScoringOptions o, FeatureDashboard d, string explanation, ScoreMethod method,
        IReadOnlyList<string>? silent = null, CancellationToken ct = default)
    {
        var trials = Trials(d, method, o, silent);
        int p = trials.Count(t => t.Fires), n = trials.Count - p;
        if (p == 0 || n == 0) throw new MechanistException($"not enough contexts to score ({p} firing, {n} not): the store holds too few examples of this feature");
        int tp = 0, tn = 0;
        var spacing = o.RequestsPerSecond > 0 ? TimeSpan.FromSeconds(1 / o.RequestsPerSecond) : TimeSpan.Zero;
        var last = DateTime.MinValue;
        foreach (var t in trials)
        {
            if (spacing > TimeSpan.Zero && DateTime.UtcNow - last < spacing) await Task.Delay(spacing - (DateTime.UtcNow - last), ct);
            last = DateTime.UtcNow;
            string answer = await ChatCompletions.AskAsync(http, o.Endpoint, o.Model, o.ApiKey, o.TimeoutSeconds,
                "You predict where features of neural networks fire. You answer with 1 or 0.", Prompt(explanation, t, method), maxTokens: 4, ct);
            bool said = ParseAnswer(answer) ?? throw new MechanistException($"the answer '{(answer.Length > 40 ? answer[..40] + "…" : answer)}' is neither 1 nor 0");
            if (said && t.Fires) tp++;
            else if (!said && !t.Fires) tn++;
        }
        return new FeatureScore(Name(method), 0.5 * ((double)tp / p + (double)tn / n), p, n, tp, tn, explanation, o.Model);
    }
}
