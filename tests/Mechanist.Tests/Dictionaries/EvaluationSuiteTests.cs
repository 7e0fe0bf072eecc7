using System.Text.Json;
using Mechanist.Dictionaries.Evaluation;
using Mechanist.Tests.Cli;
using static TorchSharp.torch;

namespace Mechanist.Tests.Dictionaries;

/// <summary>dict eval --suite: the probe, sparse probing and absorption on hand-built cases with known answers, and the suites end to end on toy-4l.</summary>
public class EvaluationSuiteTests
{
    [Fact]
    public void TheLogisticProbeFindsTheMaximumLikelihoodFitInClosedForm()
    {
        // x = 0: 1 positive, 3 negatives; x = 1: 3 positives, 1 negative. The unpenalised fit gives p(0) = 1/4 and p(1) = 3/4:
        // b = ln(1/3), w = ln 3 − ln(1/3) = 2 ln 3.
        var x = tensor(new float[] { 0, 0, 0, 0, 1, 1, 1, 1 }, new long[] { 8, 1 });
        var y = new[] { true, false, false, false, true, true, true, false };
        var probe = LogisticProbe.Fit(x, y, l2: 0);
        Assert.Equal(2 * Math.Log(3), probe.Weights[0], 6);
        Assert.Equal(-Math.Log(3), probe.Bias, 6);
        // Accuracy: x = 1 called yes (3 of 4 right), x = 0 called no (3 of 4 right); F1 = 2·3 / (2·3 + 1 + 1).
        var (accuracy, f1) = probe.Score(x, y);
        Assert.Equal(0.75, accuracy, 12);
        Assert.Equal(0.75, f1, 12);
        Assert.Throws<MechanistException>(() => LogisticProbe.Fit(x, Enumerable.Repeat(true, 8).ToArray()));
    }

    [Fact]
    public void SparseProbingFindsTheOneLatentThatCarriesTheLabel()
    {
        var rng = new Random(5);
        int n = 200, f = 30, d = 8;
        var labels = Enumerable.Range(0, n).Select(i => i % 2 == 0).ToArray();
        // Latent 17 fires exactly on the positives; the others fire at random. The raw activations carry the label on dimension 3 only.
        var latents = new float[n, f]; var raw = new float[n, d];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < f; j++) latents[i, j] = rng.NextDouble() < 0.3 ? (float)rng.NextDouble() : 0;
            latents[i, 17] = labels[i] ? 1 + (float)rng.NextDouble() : 0;
            for (int j = 0; j < d; j++) raw[i, j] = (float)(rng.NextDouble() - 0.5);
            raw[i, 3] += labels[i] ? 2 : -2;
        }
        var isTest = SparseProbing.Split(labels, 0.25, 1);
        Assert.Equal(50, isTest.Count(t => t));
        Assert.Equal(25, isTest.Where((t, i) => t && labels[i]).Count());
        var r = SparseProbing.Probe("t", "", 0, tensor(raw), tensor(latents), labels, isTest, new[] { 1, 2, 5 });
        Assert.Equal(150, r.TrainReadings);
        Assert.Equal(1.0, r.RawAccuracy);
        Assert.Equal(new[] { 17 }, r.Sparse[0].Latents);
        Assert.All(r.Sparse, s => Assert.Equal(1.0, s.Accuracy));
        Assert.Equal(5, r.Sparse[2].Latents.Length);
    }

    [Fact]
    public void AbsorptionOnAHandBuiltDictionaryIsItsClosedForm()
    {
        // d = 4. Latent 0 (decoder e0) is the category's; latent 1 (decoder (e0 + e1)/√2) is one word's own latent that carries e0
        // too; latent 2 (decoder e2) is the other category's. Word "p" reads e0 (latent 0 fires 1), word "c" reads e0 + e1 with latent 0
        // silent and latent 1 at √2 (full absorption: fraction 1), word "h" reads e0 + e1 with latent 0 at ½ and latent 1 at √2/2
        // (partial: the main latent and the absorber carry ½ each, fraction ½). The other category's words read e2.
        var rng = new Random(2);
        var xs = new List<float[]>(); var acts = new List<float[]>(); var words = new List<string>(); var cats = new List<string>();
        float s2 = (float)Math.Sqrt(2);
        void Add(string word, string cat, float[] x, float[] a, int count)
        {
            for (int i = 0; i < count; i++)
            {
                xs.Add(x.Select(v => v + (float)(rng.NextDouble() - 0.5) * 0.02f).ToArray());
                acts.Add(a); words.Add(word); cats.Add(cat);
            }
        }
        foreach (var w in new[] { "p1", "p2", "p3" }) Add(w, "A", new float[] { 1, 0, 0, 0 }, new float[] { 1, 0, 0, 0 }, 20);
        Add("c", "A", new float[] { 1, 1, 0, 0 }, new float[] { 0, s2, 0, 0 }, 12);
        Add("h", "A", new float[] { 1, 1, 0, 0 }, new float[] { 0.5f, s2 / 2, 0, 0 }, 8);
        foreach (var w in new[] { "b1", "b2", "b3", "b4" }) Add(w, "B", new float[] { 0, 0, 1, 0 }, new float[] { 0, 0, 1, 0 }, 20);
        var x = tensor(xs.SelectMany(v => v).ToArray(), new long[] { xs.Count, 4 });
        var latents = tensor(acts.SelectMany(v => v).ToArray(), new long[] { acts.Count, 4 });
        var decoder = tensor(new float[] { 1, 0, 0, 0, 1 / s2, 1 / s2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1 }, new long[] { 4, 4 });
        var held = new HashSet<string> { "p3", "c", "h", "b4" };
        var r = FeatureAbsorption.Category("A", 0, x, latents, decoder, cats.ToArray(), words.ToArray(), held, new AbsorptionOptions());
        Assert.Null(r.Skipped);
        Assert.Equal(1.0, r.ProbeF1);
        Assert.Equal(new[] { 0 }, r.MainLatents);
        Assert.Equal(40, r.ProbeTruePositives);                                  // p3 (20), c (12), h (8)
        Assert.Equal((12 * 1.0 + 8 * 0.5) / 40, r.MeanAbsorptionFraction, 2);  // the noise moves each projection by < 1 %
        Assert.Equal(12.0 / 40, r.FullAbsorptionRate, 12);
        var absorber = Assert.Single(r.Absorbers);
        Assert.Equal((1, 12, "c"), (absorber.Latent, absorber.Readings, string.Join(",", absorber.Words)));

        // The other category has no absorption, and a category whose words cannot be held out is skipped with the reason.
        Assert.Equal(0.0, FeatureAbsorption.Category("B", 0, x, latents, decoder, cats.ToArray(), words.ToArray(), held, new AbsorptionOptions()).MeanAbsorptionFraction, 12);
        Assert.Contains("hold out", FeatureAbsorption.Category("B", 0, x, latents, decoder, cats.ToArray(), words.ToArray(), new HashSet<string> { "p3" }, new AbsorptionOptions()).Skipped);
    }

    [Fact]
    public void HeldOutWordsAreAFifthOfEachCategory()
    {
        var words = ToyProbeTasks.Categories.SelectMany(c => c.Words.Select(w => (c.Category, w))).ToArray();
        var held = FeatureAbsorption.HeldOutWords(words, 0.2, 0);
        foreach (var (category, members) in ToyProbeTasks.Categories)
            Assert.Equal((int)Math.Round(members.Length * 0.2), members.Count(held.Contains));
        Assert.Equal(held, FeatureAbsorption.HeldOutWords(words.Reverse(), 0.2, 0));    // the order words come in does not matter
    }

    [Fact]
    public void TheSuitesRunOnToy4lWriteTheirReportsAndCardRowsAndRefuseWhatTheyCannotScore()
    {
        using var dir = new TempDir();
        string dict = dir.File("st");
        CopyFolder(Path.Combine(SharedData.RepoRoot, "models", "toy-4l", "skip-transcoders"), dict);
        var (code, stdout, err) = CliRunner.Run("dict", "eval", "-m", "toy-4l", "--dict", dict, "--suite", "probing,absorption", "--suite", "core",
            "--layer", "1", "--tokens", "1500", "--json");
        Assert.True(code == 0, err);
        var reports = JsonDocument.Parse(stdout).RootElement;
        var probing = reports.GetProperty("probing");
        var tasks = probing.GetProperty("tasks").EnumerateArray().ToArray();
        Assert.Equal(new[] { "name-vs-place", "two-hop-vs-one-hop", "state:Texas", "state:California", "state:Ohio", "state:Florida", "state:Illinois" },
            tasks.Select(t => t.GetProperty("task").GetString()));
        Assert.All(tasks, t => Assert.Equal(1, t.GetProperty("layer").GetInt32()));
        // The toy model knows these labels: a probe on its activations separates them (chance is 0.5).
        Assert.All(tasks, t => Assert.True(t.GetProperty("rawAccuracy").GetDouble() >= 0.9, t.ToString()));
        var absorption = reports.GetProperty("absorption");
        Assert.Equal(6, absorption.GetProperty("categories").GetArrayLength());
        var names = absorption.GetProperty("categories").EnumerateArray().First(c => c.GetProperty("category").GetString() == "person name");
        Assert.True(names.GetProperty("probeF1").GetDouble() >= 0.6);
        Assert.True(names.GetProperty("probeTruePositives").GetInt32() > 50);
        var core = reports.GetProperty("core");
        var density = core.GetProperty("extras")[0].GetProperty("density").EnumerateArray().Sum(b => b.GetProperty("features").GetInt32());
        Assert.Equal(1024, density);                                           // every feature of the layer in exactly one bin
        Assert.Equal(4, core.GetProperty("extras").GetArrayLength());

        foreach (var suite in new[] { "probing", "absorption", "core" }) Assert.True(File.Exists(Path.Combine(dict, "eval", suite + ".json")), suite);
        string card = File.ReadAllText(Path.Combine(dict, "README.md"));
        Assert.StartsWith("# SkipTranscoder", card);                           // the training card is kept
        Assert.Contains("## Evaluation: probing", card);
        Assert.Contains("| 1 | name-vs-place |", card);

        // A rerun replaces the suite's section instead of adding a second one.
        (code, _, err) = CliRunner.Run("dict", "eval", "-m", "toy-4l", "--dict", dict, "--suite", "probing", "--layer", "0");
        Assert.True(code == 0, err);
        card = File.ReadAllText(Path.Combine(dir.File("st"), "README.md"));
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(card, "## Evaluation: probing"));
        Assert.Contains("| 0 | name-vs-place |", card);
        Assert.DoesNotContain("| 1 | name-vs-place |", card);
        Assert.Contains("## Evaluation: absorption", card);

        // A CLT's features write to later layers: absorption says so; an unknown suite and layer are named.
        (code, _, err) = CliRunner.Run("dict", "eval", "-m", "toy-4l", "--dict", Path.Combine(SharedData.RepoRoot, "models", "toy-4l", "clt"), "--suite", "absorption",
            "--report-dir", dir.Path);
        Assert.Equal(2, code);
        Assert.Contains("cross-layer transcoder", err);
        (code, _, err) = CliRunner.Run("dict", "eval", "-m", "toy-4l", "--dict", dict, "--suite", "probeing");
        Assert.Equal(2, code);
        Assert.Contains("probing", err);
        (code, _, err) = CliRunner.Run("dict", "eval", "-m", "toy-4l", "--dict", dict, "--suite", "probing", "--layer", "7");
        Assert.Equal(2, code);
        Assert.Contains("--layer 7 is out of range", err);
    }

    static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}
