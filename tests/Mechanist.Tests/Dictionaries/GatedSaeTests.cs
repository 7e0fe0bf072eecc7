using System.Text.Json;
using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Evaluation;
using Mechanist.Dictionaries.Formats;
using Mechanist.Dictionaries.Training;
using Mechanist.Tests.Cli;
using static TorchSharp.torch;

namespace Mechanist.Tests.Dictionaries;

/// <summary>Gated SAEs: the published encode by hand, SAELens's folder both ways, training, and a splice into a model.</summary>
public class GatedSaeTests
{
    [Fact]
    public void AGatedSaeEncodesAsPublishedAndReadsAndWritesSaeLensFolders()
    {
        // One input x = (1, 2), three features. Gate pre-activations x·W_gate + b_gate = (1·1 + 2·0 − 0.5, 1·0 + 2·1 + 0.5, −1 − 2 + 0) = (0.5, 2.5, −3):
        // features 0 and 1 open. Magnitudes ReLU(x·(W_gate ⊙ exp(r_mag)) + b_mag) with r_mag = (0, ln 2, 0), b_mag = (−2, 0.5, 9):
        // (1 − 2 → 0, 2·2 + 0.5 = 4.5, closed). Activations (0, 4.5, 0).
        using var tmp = new TempDir();
        Directory.CreateDirectory(tmp.File("g"));
        var wEnc = tensor(new float[,] { { 1, 0, -1 }, { 0, 1, -1 } });            // [d_in, d_sae] as SAELens stores it
        var bDec = tensor(new float[] { 0.25f, -0.5f });
        Mechanist.IO.SafetensorsWriter.Write(tmp.File("g/sae_weights.safetensors"), new Dictionary<string, Tensor>
        {
            ["W_enc"] = wEnc, ["b_gate"] = tensor(new float[] { -0.5f, 0.5f, 0 }), ["r_mag"] = tensor(new float[] { 0, (float)Math.Log(2), 0 }),
            ["b_mag"] = tensor(new float[] { -2, 0.5f, 9 }), ["W_dec"] = ones(3, 2), ["b_dec"] = bDec,
        });
        File.WriteAllText(tmp.File("g/cfg.json"), "{\"architecture\": \"gated\", \"d_in\": 2, \"d_sae\": 3, \"hook_name\": \"blocks.0.hook_resid_post\", \"model_name\": \"m\"}");
        using var bundle = SaeLensFormat.Load(tmp.File("g"));
        Assert.Equal(DictionaryActivation.Gated, bundle.Sae.Activation);
        using var x = tensor(new float[,] { { 1, 2 } });
        TensorAssert.Close(tensor(new float[,] { { 0, 4.5f, 0 } }), bundle.Sae.Encode(x), 1e-6, "gate and magnitude by hand");
        // Written back with the gate, read again identical.
        SaeLensFormat.Save(bundle, tmp.File("again"));
        Assert.Equal("gated", JsonDocument.Parse(File.ReadAllText(tmp.File("again/cfg.json"))).RootElement.GetProperty("architecture").GetString());
        using var again = SaeLensFormat.Load(tmp.File("again"));
        using var many = randn(50, 2);
        TensorAssert.Close(bundle.Sae.Encode(many), again.Sae.Encode(many), 0, "round trip");
        // With apply_b_dec_to_input the gate and magnitude read x − b_dec: folded into both biases.
        File.WriteAllText(tmp.File("g/cfg.json"), "{\"architecture\": \"gated\", \"d_in\": 2, \"d_sae\": 3, \"hook_name\": \"h\", \"apply_b_dec_to_input\": true}");
        using var shifted = SaeLensFormat.Load(tmp.File("g"));
        TensorAssert.Close(bundle.Sae.Encode(many - bDec), shifted.Sae.Encode(many), 1e-5, "b_dec applied to the input");
    }

    [Fact]
    public void AGatedSaeTrainsOnSyntheticFeaturesAndOnAModel()
    {
        using var train = SyntheticData.Generate(new SyntheticConfig(Seed: 4), 40_000, sampleSeed: 1);
        using var truth = SyntheticData.Generate(new SyntheticConfig(Seed: 4), 5_000, sampleSeed: 2);
        var rows = train.Activations.unsqueeze(1);
        using var data = new ActivationSet(rows, rows, 0);
        GroundTruthMetrics Train(double sparsity)
        {
            var c = new DictionaryTrainConfig(DictionaryKind.Sae, TrainActivation.Gated, Features: 256, Sparsity: sparsity, Steps: 800, BatchSize: 512, LearningRate: 3e-3);
            using var d = DictionaryTrainer.Train(data, c).Dictionary;
            Assert.Equal(DictionaryActivation.Gated, ((Transcoder)d.Layer(0)!).Activation);
            return GroundTruthEvaluation.Evaluate(d, truth);
        }
        var dense = Train(0);
        var sparse = Train(0.1);
        Assert.True(dense.ExplainedVariance > 0.95, $"without a penalty the gated SAE reconstructs: {dense.ExplainedVariance:F3}");
        Assert.True(sparse.L0 < dense.L0 / 2, $"the gate's L1 makes it sparse: L0 {sparse.L0:F1} against {dense.L0:F1}");

        using var dir = new TempDir();
        string corpus = dir.File("corpus.txt");
        File.WriteAllLines(corpus, Enumerable.Range(0, 60).Select(i => $"Once upon a time, a little boy named Tom had {i % 5} blue cars and a small cat."));
        var (code, stdout, err) = CliRunner.Run("dict", "train", "-m", SharedData.PathOf("models", "stories260K", "stories260K.bin"), "--corpus", corpus, "--kind", "sae",
            "--activation", "gated", "--features", "128", "--sparsity", "0.01", "--steps", "60", "--batch", "128", "--tokens", "2000", "--eval-tokens", "300", "--out", dir.File("sae"));
        Assert.True(code == 0, err);
        Assert.Contains("loss recovered", stdout);
        Assert.Equal("gated", JsonDocument.Parse(File.ReadAllText(dir.File("sae/cfg.json"))).RootElement.GetProperty("architecture").GetString());
        (code, stdout, err) = CliRunner.Run("dict", "info", dir.File("sae"), "--json");
        Assert.True(code == 0, err);
        Assert.Equal("gated", JsonDocument.Parse(stdout).RootElement.GetProperty("activation").GetString());
    }
}
