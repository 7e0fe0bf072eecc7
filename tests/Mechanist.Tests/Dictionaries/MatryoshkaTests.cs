using System.Text.Json;
using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Evaluation;
using Mechanist.Dictionaries.Formats;
using Mechanist.Dictionaries.Training;
using Mechanist.Tests.Cli;
using static TorchSharp.torch;

namespace Mechanist.Tests.Dictionaries;

/// <summary>Matryoshka BatchTopK: nested prefixes, less absorption than TopK on a hierarchy, SAELens format, and a splice into a model.</summary>
public class MatryoshkaTests
{
    [Fact]
    public void EachPrefixDecodesWithOnlyItsLatents()
    {
        using var mean = zeros(1, 6);
        using var dict = new TrainableDictionary(DictionaryKind.Sae, TrainActivation.MatryoshkaBatchTopK, layers: 1, dIn: 6, dOut: 6, features: 8, k: 2, mean, seed: 3);
        manual_seed(1);
        using var acts = nn.functional.relu(randn(5, 1, 8));
        using var x = randn(5, 1, 6);
        var prefixes = dict.PrefixDecodes(acts, x, new[] { 1, 4, 8 });
        TensorAssert.Close(dict.Decode(acts, x), prefixes[^1], 1e-5, "the last prefix is the whole dictionary");
        foreach (var (width, i) in new[] { 1, 4 }.Select((w, i) => (w, i)))
        {
            using var mask = zeros(1, 1, 8);
            mask[.., .., ..width] = ones(width);
            TensorAssert.Close(dict.Decode(acts.mul(mask), x), prefixes[i], 1e-5, $"the first {width} latents alone");
        }
        Assert.Equal(new[] { 16, 32, 64, 128, 256 }, new DictionaryTrainConfig(DictionaryKind.Sae, TrainActivation.MatryoshkaBatchTopK, 256).PrefixWidths());
        Assert.Throws<MechanistException>(() => new DictionaryTrainConfig(DictionaryKind.Sae, TrainActivation.MatryoshkaBatchTopK, 256, MatryoshkaWidths: new[] { 64, 32, 256 }).PrefixWidths());
    }

    [Fact]
    public void OnAHierarchyMatryoshkaAbsorbsLessThanTopKAndSavesAsSaeLensDoes()
    {
        // 16 parents with 4 children each (a child fires only with its parent): TopK latents for frequent parents learn to stay
        // silent when a child fires (absorption); Matryoshka's small prefixes must reconstruct the parent alone, so they do not.
        var config = new SyntheticConfig(Parents: 16, ChildrenPerParent: 4, ChildProbability: 0.6, Seed: 0);
        using var train = SyntheticData.Generate(config, 100_000, sampleSeed: 1);
        using var truth = SyntheticData.Generate(config, 20_000, sampleSeed: 2);
        var rows = train.Activations.unsqueeze(1);
        using var data = new ActivationSet(rows, rows, 0);
        GroundTruthMetrics Train(TrainActivation activation, out ICrossLayerDictionary dictionary)
        {
            var c = new DictionaryTrainConfig(DictionaryKind.Sae, activation, Features: 256, K: 6, Steps: 2000, BatchSize: 512, LearningRate: 3e-3);
            dictionary = DictionaryTrainer.Train(data, c).Dictionary;
            return GroundTruthEvaluation.Evaluate(dictionary, truth);
        }
        var topK = Train(TrainActivation.TopK, out var plain);
        plain.Dispose();
        var matryoshka = Train(TrainActivation.MatryoshkaBatchTopK, out var nested);
        using var bundle = DictionaryBundle.Of(nested, "synthetic", TranscoderInput.Resid, "activations");   // owns it now
        Assert.True(matryoshka.MeanAbsorption < topK.MeanAbsorption / 2, $"absorption: Matryoshka {matryoshka.MeanAbsorption:F3}, TopK {topK.MeanAbsorption:F3}");
        Assert.True(matryoshka.F1 > topK.F1 && matryoshka.Recall >= 0.9, $"F1: Matryoshka {matryoshka.F1:F3} (recall {matryoshka.Recall:F3}), TopK {topK.F1:F3}");

        // Saved in SAELens format as SAELens saves a (Matryoshka) BatchTopK SAE: a JumpReLU with its threshold; loaded back identical.
        using var tmp = new TempDir();
        bundle.Save(tmp.File("m"));
        var cfg = JsonDocument.Parse(File.ReadAllText(tmp.File("m/cfg.json"))).RootElement;
        Assert.Equal("jumprelu", cfg.GetProperty("architecture").GetString());
        using var loaded = SaeLensFormat.Load(tmp.File("m"));
        using var x = truth.Activations.narrow(0, 0, 500);
        TensorAssert.Close(nested.Encode(0, x), loaded.Sae.Encode(x), 1e-5, "encode after the round trip");
        var again = GroundTruthEvaluation.Evaluate(loaded.Dictionary, truth);
        Assert.Equal(matryoshka.Mcc, again.Mcc, 5);
    }

    [Fact]
    public void AMatryoshkaSaeTrainsOnAModelAndSplicesIntoIt()
    {
        using var dir = new TempDir();
        string corpus = dir.File("corpus.txt");
        File.WriteAllLines(corpus, Enumerable.Range(0, 60).Select(i => $"Once upon a time, a little girl named Lily had {i % 7} red balls and a big dog."));
        var (code, stdout, err) = CliRunner.Run("dict", "train", "-m", SharedData.PathOf("models", "stories260K", "stories260K.bin"), "--corpus", corpus, "--kind", "sae",
            "--activation", "matryoshka", "--features", "128", "--k", "8", "--steps", "60", "--batch", "128", "--tokens", "2000", "--eval-tokens", "300", "--out", dir.File("sae"));
        Assert.True(code == 0, err);
        Assert.Contains("loss recovered", stdout);
        Assert.Equal("jumprelu", JsonDocument.Parse(File.ReadAllText(dir.File("sae/cfg.json"))).RootElement.GetProperty("architecture").GetString());
        Assert.Contains("MatryoshkaBatchTopK", File.ReadAllText(dir.File("sae/README.md")));
    }
}
