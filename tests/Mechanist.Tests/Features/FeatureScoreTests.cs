using System.Text.Json;
using Mechanist.Features;
using Mechanist.Tests.Cli;

namespace Mechanist.Tests.Features;

/// <summary>
/// features score: against a loopback server whose answers follow a rule we choose, so the balanced accuracy is known exactly;
/// and the server's failures (errors, unclear answers, timeouts) leave no score.
/// </summary>
public class FeatureScoreTests
{
    /// <summary>A sparse feature of the store with enough windows, and every token string it fires on in them.</summary>
    static (int Layer, int Feature, HashSet<string> Firing) AFeature(FeatureStore store)
    {
        // A sparse one (at most 2 % of tokens), so that other features' windows where it stays silent are common.
        foreach (var hit in store.Info.Layers.SelectMany(l => store.Search(null, 1000, l)).Where(h => h.Count >= 30 && h.Frequency <= 0.02))
        {
            var d = store.Dashboard(hit.Layer, hit.Feature);
            var windows = d.Top.Concat(d.Intervals.SelectMany(i => i.Examples)).ToList();
            if (windows.Count >= 16) return (hit.Layer, hit.Feature, windows.SelectMany(e => e.Tokens.Where((_, i) => e.Acts[i] > 0)).ToHashSet());
        }
        throw new InvalidOperationException("no sparse feature of the store has 16 example windows");
    }

    static string TextOf(string body) =>
        JsonDocument.Parse(body).RootElement.GetProperty("messages")[1].GetProperty("content").GetString()!.Split("Text: ")[1].TrimEnd('\n', '\r');

    static string Reply(string answer) => JsonSerializer.Serialize(new { choices = new[] { new { message = new { role = "assistant", content = answer } } } });

    [Fact]
    public async Task ScoresFollowTheServersAnswersExactlyAndFailuresLeaveNone()
    {
        using var dir = new TempDir();
        Assert.Equal(0, CliRunner.Run("features", "build", "--texts", "600", "--out", dir.Path).Code);
        var store = FeatureStore.Open(Path.Combine(dir.Path, FeatureBuild.MergedName));
        var (layer, feature, firing) = AFeature(store);
        // The rule: a text "fires" when it holds a token the feature fires on somewhere (it may hold one where the feature stayed silent).
        bool Holds(string text) => firing.Any(t => text.Contains(t, StringComparison.Ordinal));
        bool MarksRight(string text) => System.Text.RegularExpressions.Regex.Matches(text, "⟦(.*?)⟧").All(m => firing.Contains(m.Groups[1].Value));
        string spec = $"{layer}:{feature}";
        // The store's own record of the feature is the reference: its windows fire (detection positives), and a window with exactly
        // its firing tokens marked is right (fuzzing positives); anything else the server is shown is a negative.
        var own = store.Dashboard(layer, feature);
        var ownWindows = own.Top.Concat(own.Intervals.SelectMany(i => i.Examples)).ToList();
        var firingTexts = ownWindows.Select(e => string.Concat(e.Tokens)).ToHashSet();
        var rightMarks = ownWindows.Select(e => string.Concat(e.Tokens.Select((t, i) => e.Acts[i] > 0 ? $"⟦{t}⟧" : t))).ToHashSet();
        var seen = new System.Collections.Concurrent.ConcurrentQueue<(string Text, bool Said)>();
        string rule = "truth";
        using var server = new FeatureStoreTests.FakeChatServer(body =>
        {
            string text = TextOf(body);
            bool answer = rule switch
            {
                "truth" => Holds(text),
                "marks" => MarksRight(text),
                "inverted" => !Holds(text),
                "yes" => true,
                _ => false,
            };
            seen.Enqueue((text, answer));
            return (200, Reply(answer ? "1" : "0"));
        });
        async Task<(int Code, string Out, string Err)> Score(params string[] extra)
        {
            seen.Clear();
            return await Task.Run(() => CliRunner.Run(new[] { "features", "score", "--db", dir.Path, "--endpoint", server.Url + "v1", "--llm", "rule", "--features", spec }.Concat(extra).ToArray()));
        }
        double Stored(string method) => store.Scores(layer, feature).Single(s => s.Method == method).BalancedAccuracy;
        // Balanced accuracy of the answers the server gave in the last run, positives told by the store's record.
        (int P, int N, int TP, int TN, double Accuracy) Expected(Func<string, bool> positive)
        {
            var list = seen.ToList();
            int p = list.Count(x => positive(x.Text)), n = list.Count - p;
            int tp = list.Count(x => positive(x.Text) && x.Said), tn = list.Count(x => !positive(x.Text) && !x.Said);
            return (p, n, tp, tn, 0.5 * (tp / (double)p + tn / (double)n));
        }

        var (code, stdout, err) = await Score();
        Assert.True(code == 0, err);
        var detection = Expected(firingTexts.Contains);
        Assert.Equal((10, 10), (detection.P, detection.N));
        Assert.Equal(detection.Accuracy, Stored("detection"), 12);
        Assert.True(detection.Accuracy > 0.5, $"the rule should beat chance: {detection.Accuracy}");
        var kept = store.Scores(layer, feature).Single();
        Assert.Equal((10, 10, detection.TP, detection.TN, "rule"), (kept.Positives, kept.Negatives, kept.TruePositives, kept.TrueNegatives, kept.Model));
        Assert.Equal(10, detection.TP);                            // every firing window holds a token the feature fires on
        // Every negative is silent: checked by the attribution's spliced run of the model and the store's dictionary on the window's tokens
        // (another path to the same activations than the scorer's), positions after the first (that run zeroes position 0).
        using (var model = Mechanist.Models.HookedTransformer.Load(Path.Combine(SharedData.RepoRoot, "models", "toy-4l")))
        using (var bundle = Mechanist.Dictionaries.Formats.CircuitTracerFormat.Load(store.Info.Dictionary))
        {
            var idsOf = store.Windows(layer, 1000, 0).GroupBy(w => string.Concat(w.Tokens)).ToDictionary(g => g.Key, g => g.First().Ids);
            foreach (var (text, _) in seen.Where(x => !firingTexts.Contains(x.Text)))
            {
                using var tokens = TorchSharp.torch.tensor(idsOf[text]).unsqueeze(0);
                using var rm = Mechanist.Attribution.ReplacementModel.Build(model, bundle.Dictionary, bundle.Input, tokens);
                Assert.True(rm.Activations[layer, 1.., feature].max().item<float>() <= 0, $"the feature fires in the negative '{text}'");
            }
        }
        // A stopped run resumes: what is scored is skipped unless forced.
        (code, stdout, _) = await Score();
        Assert.Contains("already scored", stdout);
        Assert.Empty(seen);
        double inverted = 0;
        foreach (var r in new[] { "yes", "no", "inverted" })
        {
            rule = r;
            (code, _, err) = await Score("--force");
            Assert.True(code == 0, err);
            var expected = Expected(firingTexts.Contains);
            Assert.Equal(expected.Accuracy, Stored("detection"), 12);
            if (r != "inverted") Assert.Equal(0.5, expected.Accuracy);
            else Assert.Equal(1 - detection.Accuracy, inverted = expected.Accuracy, 12);
        }
        rule = "marks";
        (code, _, err) = await Score("--method", "fuzzing", "--positives", "6", "--negatives", "6");
        Assert.True(code == 0, err);
        var fuzzing = Expected(rightMarks.Contains);
        Assert.Equal((6, 6), (fuzzing.P, fuzzing.N));
        Assert.Equal(fuzzing.Accuracy, Stored("fuzzing"), 12);
        Assert.True(fuzzing.Accuracy > 0.5, $"the rule should beat chance: {fuzzing.Accuracy}");
        // features show says it.
        (code, stdout, _) = CliRunner.Run("features", "show", "--db", dir.Path, spec);
        Assert.Contains($"fuzzing score: {fuzzing.Accuracy:F3}", stdout);
        Assert.Contains($"detection score: {inverted:F3}", stdout);

        // Failures: a 500 midway, an unclear answer, a slow server. No score appears and the one stored stays.
        int calls = 0;
        using var failing = new FeatureStoreTests.FakeChatServer(_ => Interlocked.Increment(ref calls) == 3 ? (500, "overloaded") : (200, Reply("1")));
        using var unclear = new FeatureStoreTests.FakeChatServer(_ => (200, Reply("Probably, yes.")));
        using var slow = new FeatureStoreTests.FakeChatServer(_ => { Thread.Sleep(3000); return (200, Reply("1")); });
        foreach (var (bad, message, extra) in new[] { (failing, "answered 500", ""), (unclear, "neither 1 nor 0", ""), (slow, "did not answer within 1 s", "1") })
        {
            var args = new List<string> { "features", "score", "--db", dir.Path, "--endpoint", bad.Url + "v1", "--features", spec, "--force" };
            if (extra.Length > 0) args.AddRange(new[] { "--timeout", extra, "--positives", "1", "--negatives", "1" });
            (code, _, err) = await Task.Run(() => CliRunner.Run(args.ToArray()));
            Assert.Equal(2, code);
            Assert.Contains(message, err);
            Assert.Contains("got no score", err);
            Assert.Equal(inverted, Stored("detection"), 12);       // the inverted rule's score, untouched
        }
    }

    [Fact]
    public void TrialsSpanTheActivationIntervalsAndNegativesNeverFire()
    {
        // Hand-made dashboard: two intervals; windows fire at their last token. Detection negatives are the silent prefixes.
        ShownExample Window(long text, float act) => new(text, 5, act, new[] { "a", " b", " c", " d", " e", " X" }, new float[] { 0, 0, 0, 0, 0, act }, 5);
        var high = new ExampleInterval(2, 4, 3, new[] { Window(1, 3), Window(2, 3), Window(3, 3) });
        var low = new ExampleInterval(1, 2, 3, new[] { Window(4, 1), Window(5, 1), Window(6, 1) });
        var summary = new FeatureHit(0, 0, 1, "X", "X", null, null, 6, 100, 0.06, 3, 2);
        var d = new FeatureDashboard(summary, "clt", Array.Empty<HistogramBin>(), Array.Empty<TokenValue>(), Array.Empty<TokenValue>(), null, Array.Empty<ShownExample>(), new[] { high, low });
        var trials = FeatureScorer.Trials(d, ScoreMethod.Detection, new ScoringOptions("http://x", "m", Positives: 4, Negatives: 4));
        Assert.Equal(4, trials.Count(t => t.Fires));
        Assert.All(trials.Where(t => t.Fires), t => Assert.EndsWith(" X", t.Text));
        Assert.All(trials.Where(t => !t.Fires), t => Assert.DoesNotContain("X", t.Text));
        Assert.Single(trials, t => !t.Fires);                // the silent prefixes are all the same text: asked once
        var fuzz = FeatureScorer.Trials(d, ScoreMethod.Fuzzing, new ScoringOptions("http://x", "m", Positives: 2, Negatives: 2));
        Assert.All(fuzz.Where(t => t.Fires), t => Assert.EndsWith("⟦ X⟧", t.Text));
        Assert.All(fuzz.Where(t => !t.Fires), t => { Assert.Contains("⟦", t.Text); Assert.DoesNotContain("⟦ X⟧", t.Text); });
        Assert.Equal(new bool?[] { true, true, false, false, null }, new[] { "1", "Yes.", "0", "no", "maybe" }.Select(FeatureScorer.ParseAnswer).ToArray());
    }
}
