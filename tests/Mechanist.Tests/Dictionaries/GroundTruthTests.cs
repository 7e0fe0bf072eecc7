using System.Text.Json;
using Mechanist.Dictionaries.Evaluation;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Tests.Dictionaries;

/// <summary>Synthetic ground truth: the generator's laws, the measures on hand-built cases, the oracle and random bounds, and a TopK SAE that recovers the features.</summary>
public class GroundTruthTests
{
    [Fact]
    public void TheHungarianMatchingFindsTheBestOneToOneAssignment()
    {
        // Greedy would take 9 (row 0 → column 0) and then 1; the best total is 8 + 7 = 15.
        var scores = new double[] { 9, 8, 7, 1 };
        Assert.Equal(new[] { 1, 0 }, Hungarian.MaximumMatching(scores, 2, 2));
        // More columns than rows, and more rows than columns (the extra row left out).
        Assert.Equal(new[] { 2, 0 }, Hungarian.MaximumMatching(new double[] { 1, 0, 5, 4, 0, 4 }, 2, 3));
        Assert.Equal(new[] { -1, 0, 1 }, Hungarian.MaximumMatching(new double[] { 1, 1, 5, 0, 0, 3 }, 3, 2));
        // Against every permutation of a random 6 × 6 matrix.
        var rng = new Random(3);
        var m = Enumerable.Range(0, 36).Select(_ => rng.NextDouble()).ToArray();
        var match = Hungarian.MaximumMatching(m, 6, 6);
        double best = Permutations(Enumerable.Range(0, 6).ToArray()).Max(p => p.Select((c, r) => m[r * 6 + c]).Sum());
        Assert.Equal(best, match.Select((c, r) => m[r * 6 + c]).Sum(), 12);
    }

    static IEnumerable<int[]> Permutations(int[] items) => items.Length <= 1 ? new[] { items }
        : items.SelectMany((x, i) => Permutations(items.Where((_, j) => j != i).ToArray()).Select(rest => rest.Prepend(x).ToArray()));

    static SyntheticData Hand(SyntheticConfig config, float[,] codes, float[,] directions)
    {
        var c = tensor(codes); var dirs = tensor(directions);
        return new SyntheticData(config, c.matmul(dirs), c, dirs);
    }

    [Fact]
    public void MccRecoveryAndShrinkageOnAHandBuiltCaseAreTheirClosedForms()
    {
        // True codes f0 = (1, 1, 0, 0), f1 = (1, 0, 1, 0) (uncorrelated), along e0 and e1. Learned latent A = 2·f1 along e1;
        // B = (1, 1, 1, 0) along (e0 + e1)/√2 correlates 1/√3 with both. The matching pairs f1–A and f0–B: MCC = (1 + 1/√3) / 2.
        using var truth = Hand(new SyntheticConfig(DModel: 2, Features: 2), new float[,] { { 1, 1 }, { 1, 0 }, { 0, 1 }, { 0, 0 } }, new float[,] { { 1, 0 }, { 0, 1 } });
        using var learned = tensor(new float[,] { { 2, 1 }, { 0, 1 }, { 2, 1 }, { 0, 0 } });
        using var decoder = tensor(new float[,] { { 0, 3 }, { 1, 1 } });
        var g = GroundTruthEvaluation.Score(truth, learned, decoder, truth.Activations);
        Assert.Equal((1 + 1 / Math.Sqrt(3)) / 2, g.Mcc, 9);
        Assert.Equal(0.5, g.Recall, 12);       // f1 at cosine 1; f0's best is 0.707
        Assert.Equal(0.5, g.Precision, 12);    // of the two live latents, A is a true direction
        Assert.Equal(0.5, g.F1, 12);
        Assert.Equal((1 + Math.Sqrt(0.5)) / 2, g.MeanMaxCosine, 6);
        Assert.Equal(1.0, g.ExplainedVariance, 9);
        Assert.Equal(1.0, g.Shrinkage, 9);     // the reconstruction given is x itself
        Assert.Equal(1.25, g.L0, 12);       // A fires in 2 samples, B in 3, over 4
        Assert.Equal(1.0, g.TrueL0, 12);
        Assert.Equal(0, g.DeadFraction);
        // Half as long a reconstruction: shrinkage 0.5, explained variance 1 − Σ‖x/2‖² / Σ‖x − x̄‖² = 1 − 1 / 2.
        using var half = truth.Activations.mul(tensor(0.5f));
        var h = GroundTruthEvaluation.Score(truth, learned, decoder, half);
        Assert.Equal(0.5, h.Shrinkage, 9);
        Assert.Equal(0.5, h.ExplainedVariance, 9);
    }

    [Fact]
    public void AbsorptionIsTheParentLatentsMissesOnTheChildBeyondItsOrdinaryMisses()
    {
        // Parent 0 with children 1 and 2. The parent fires in samples 0–5; child 1 in 0–2, child 2 in 3; 4 and 5 are parent-only.
        // The parent's latent is silent in 1 and 2 (taken by the child) and in 5 (an ordinary miss): child 1 loses 2/3, the
        // parent-only samples 1/2, so the absorption is 2/3 − 1/2; child 2 loses nothing.
        var config = new SyntheticConfig(DModel: 3, Features: 3, Parents: 1, ChildrenPerParent: 2);
        var codes = new float[10, 3];
        for (int i = 0; i < 6; i++) codes[i, 0] = 1;
        for (int i = 0; i < 3; i++) codes[i, 1] = 1;
        codes[3, 2] = 1;
        using var truth = Hand(config, codes, new float[,] { { 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 } });
        var learnedCodes = (float[,])codes.Clone();
        learnedCodes[1, 0] = 0; learnedCodes[2, 0] = 0; learnedCodes[5, 0] = 0;
        using var learned = tensor(learnedCodes);
        using var decoder = eye(3);
        var g = GroundTruthEvaluation.Score(truth, learned, decoder, truth.Activations);
        var one = g.Absorption.Single(a => a.Child == 1);
        Assert.Equal((0, 0, 3L), (one.Parent, one.ParentLatent, one.ChildSamples));
        Assert.Equal(2 / 3.0, one.ChildMissRate, 12);
        Assert.Equal(0.5, one.ParentOnlyMissRate, 12);
        Assert.Equal(2 / 3.0 - 0.5, one.Absorption, 12);
        Assert.Equal(0, g.Absorption.Single(a => a.Child == 2).Absorption);
        Assert.Equal((2 / 3.0 - 0.5) / 2, g.MeanAbsorption, 12);
    }

    [Fact]
    public void TheGeneratorFollowsItsParameters()
    {
        var config = new SyntheticConfig(DModel: 32, Features: 128, MeanActive: 5, FrequencyExponent: 0.8, Parents: 4, ChildrenPerParent: 3, ChildProbability: 0.6, Seed: 5);
        using var data = SyntheticData.Generate(config, 40_000);
        using var again = SyntheticData.Generate(config, 40_000);
        Assert.True(data.Activations.eq(again.Activations).all().item<bool>(), "the same seed gives the same samples");
        var fires = data.Codes.Gt(0);
        double l0 = fires.sum(1).to(ScalarType.Float64).mean().item<double>();
        Assert.InRange(l0, 5 * 0.95, 5 * 1.05);
        var rate = fires.to(ScalarType.Float64).mean(new long[] { 0 }).data<double>().ToArray();
        var p = config.FiringProbabilities();
        for (int i = 0; i < 128; i++) Assert.True(Math.Abs(rate[i] - p[i]) < 4 * Math.Sqrt(p[i] * (1 - p[i]) / 40_000) + 1e-9, $"feature {i}: fires {rate[i]:F4}, p = {p[i]:F4}");
        // Children fire only with their parent, at most one per parent; and the power law: p_16 / p_64 = (65 / 17)^0.8.
        foreach (var (parent, child) in config.Hierarchy())
            Assert.Equal(0, fires.select(1, child).logical_and(fires.select(1, parent).logical_not()).sum().item<long>());
        for (int parent = 0; parent < 4; parent++)
            Assert.True(fires.narrow(1, 4 + parent * 3, 3).sum(1).le(tensor(1L)).all().item<bool>());
        Assert.Equal(Math.Pow(65.0 / 17, 0.8), p[16] / p[64], 9);
        // x is the codes times the unit directions.
        Assert.True(data.Directions.norm(1).sub(ones(128)).abs().max().item<float>() < 1e-5);
        Assert.True(data.Codes.matmul(data.Directions).sub(data.Activations).abs().max().item<float>() < 1e-4);
    }

    [Fact]
    public void TheOracleScoresOneAndARandomDictionaryNearZero()
    {
        using var truth = SyntheticData.Generate(new SyntheticConfig(Seed: 2), 20_000);
        var oracle = GroundTruthEvaluation.Score(truth, truth.Codes, truth.Directions, truth.Activations);
        Assert.Equal(1.0, oracle.Mcc, 6);
        Assert.Equal(1.0, oracle.F1, 12);
        Assert.Equal(1.0, oracle.ExplainedVariance, 6);
        manual_seed(9);
        using var codes = nn.functional.relu(randn(20_000, 256).sub(tensor(2.0f)));
        using var decoder = randn(256, 64);
        var random = GroundTruthEvaluation.Score(truth, codes, decoder, codes.matmul(decoder));
        Assert.InRange(random.Mcc, -0.05, 0.1);
        Assert.Equal(0, random.F1);
        Assert.True(random.MeanMaxCosine < 0.6, $"mean max cosine {random.MeanMaxCosine}");
    }

    [Fact]
    public void ATopKSaeTrainedOnTheFileRecoversTheTrueFeatures()
    {
        // The issue's setting: 256 true features in d = 64, L0 ≈ 6; a TopK SAE of 256 latents (k = 6) trained from the file alone.
        using var dir = new TempDir();
        var (code, output, err) = Cli.CliRunner.Run("dict", "synth", "--out", dir.File("synth"), "--d", "64", "--features", "256", "--l0", "6", "--samples", "60000", "--eval-samples", "10000");
        Assert.True(code == 0, err);
        Assert.Contains("true L0", output);
        (code, output, err) = Cli.CliRunner.Run("dict", "train", "--kind", "sae", "--activation", "topk", "--k", "6", "--features", "256", "--steps", "2000", "--batch", "512",
            "--lr", "3e-3", "--activations-file", dir.File("synth/activations.safetensors"), "--out", dir.File("sae"));
        Assert.True(code == 0, err);
        Assert.True(File.Exists(dir.File("sae/cfg.json")) && File.Exists(dir.File("sae/README.md")));
        (code, output, err) = Cli.CliRunner.Run("dict", "eval", "--dict", dir.File("sae"), "--ground-truth", dir.File("synth/ground_truth.safetensors"), "--json");
        Assert.True(code == 0, err);
        var g = JsonDocument.Parse(output).RootElement;
        double recall = g.GetProperty("recall").GetDouble(), mcc = g.GetProperty("mcc").GetDouble();
        Assert.True(recall >= 0.95, $"recall {recall}, MCC {mcc}, F1 {g.GetProperty("f1").GetDouble()}");
        Assert.True(mcc >= 0.8, $"MCC {mcc}");
        Assert.InRange(g.GetProperty("l0").GetDouble(), 5.9, 6.0001);
        // The table says the same in words.
        (code, output, err) = Cli.CliRunner.Run("dict", "eval", "--dict", dir.File("sae"), "--ground-truth", dir.File("synth/ground_truth.safetensors"));
        Assert.True(code == 0, err);
        Assert.Contains("MCC", output);
    }

    [Fact]
    public void BadFilesAndOptionsGiveOneClearError()
    {
        using var dir = new TempDir();
        Mechanist.IO.SafetensorsWriter.Write(dir.File("other.safetensors"), new Dictionary<string, Tensor> { ["x"] = ones(4, 2) });
        var (code, _, err) = Cli.CliRunner.Run("dict", "train", "--kind", "sae", "--activations-file", dir.File("other.safetensors"), "--out", dir.File("o"));
        Assert.Equal(2, code); Assert.Contains("no tensor named 'activations'", err);
        Mechanist.IO.SafetensorsWriter.Write(dir.File("ints.safetensors"), new Dictionary<string, Tensor> { ["activations"] = ones(new long[] { 4, 2 }, ScalarType.Int64) });
        (code, _, err) = Cli.CliRunner.Run("dict", "train", "--kind", "sae", "--activations-file", dir.File("ints.safetensors"), "--out", dir.File("o"));
        Assert.Equal(2, code); Assert.Contains("float32", err);
        Mechanist.IO.SafetensorsWriter.Write(dir.File("few.safetensors"), new Dictionary<string, Tensor> { ["activations"] = ones(100, 8) });
        (code, _, err) = Cli.CliRunner.Run("dict", "train", "--kind", "clt", "--activations-file", dir.File("few.safetensors"), "--out", dir.File("o"));
        Assert.Equal(2, code); Assert.Contains("--kind sae", err);
        (code, _, err) = Cli.CliRunner.Run("dict", "train", "--kind", "sae", "--activations-file", dir.File("few.safetensors"), "--out", dir.File("o"));
        Assert.Equal(2, code); Assert.Contains("fewer than one batch", err);
        (code, _, err) = Cli.CliRunner.Run("dict", "train", "--kind", "sae", "--activations-file", dir.File("missing.safetensors"), "--out", dir.File("o"));
        Assert.Equal(2, code); Assert.Contains("not found", err);
        (code, _, err) = Cli.CliRunner.Run("dict", "synth", "--out", dir.File("s"), "--parents", "100", "--children", "3");
        Assert.Equal(2, code); Assert.Contains("need 400 features", err);
        (code, _, err) = Cli.CliRunner.Run("dict", "eval", "--dict", dir.Path, "--ground-truth", dir.File("other.safetensors"));
        Assert.Equal(2, code);
        Assert.False(Directory.Exists(dir.File("o")));
    }
}
