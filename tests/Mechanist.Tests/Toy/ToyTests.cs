using Mechanist.Training;
using Mechanist.Models;
using Mechanist.Tokenization;
using Mechanist.Toy;
using static TorchSharp.torch;

namespace Mechanist.Tests.Toy;

public class ToyTests
{
    static (HookedTransformer Model, long[] Stream) Tiny(int seed)
    {
        var corpus = new ToyCorpus(3).Lines(300).ToList();
        var tokenizer = TokenizerFromCorpus(corpus);
        var preset = ToyPresets.Get("attn-only-2l") with { DModel = 32, Heads = 2 };
        var model = RandomModels.Create(preset.ModelConfig(tokenizer.VocabSize), seed);
        return (model, ToyPresets.Stream(tokenizer, corpus));
    }

    static TextTokenizer TokenizerFromCorpus(List<string> corpus)
    {
        using var dir = new TempDir();
        WordTokenizerBuilder.Write(dir.Path, WordTokenizerBuilder.Build(corpus.Concat(ToyCorpus.AllText())));
        return TokenizerLoader.FromModelFolder(dir.Path)!;
    }

    [Fact]
    public void TrainingIsDeterministicAndResumingGivesTheSameRun()
    {
        var config = new TrainConfig(Steps: 12, BatchSize: 4, SeqLen: 16, LearningRate: 3e-3, WarmupSteps: 3, Seed: 9, CheckpointEvery: 6);
        using var dirA = new TempDir(); using var dirB = new TempDir();
        var (a, stream) = Tiny(1);
        using var _a = a;
        var lossesA = Trainer.Train(a, stream, config, dirA.Path);

        // Interrupted after 6 steps (a checkpoint is written then), then resumed with a fresh model.
        var (b1, _) = Tiny(1);
        using var cancel = new CancellationTokenSource();
        using (b1)
            Assert.Throws<OperationCanceledException>(() => Trainer.Train(b1, stream, config, dirB.Path,
                new SyncProgress(p => { if (p.Step == 6) cancel.Cancel(); }), cancel.Token));
        var (b2, _) = Tiny(1);
        using var _b = b2;
        var lossesB = Trainer.Train(b2, stream, config, dirB.Path);

        Assert.Equal(12, lossesA.Count);
        Assert.Equal(lossesA, lossesB);
        Assert.True(lossesA[^1] < lossesA[0], "the loss goes down");
        using var tokens = tensor(stream[..16], new long[] { 1, 16 });
        TensorAssert.Close(a.Run(tokens), b2.Run(tokens), 0, "weights after an uninterrupted and a resumed run");
    }

    sealed class SyncProgress(Action<TrainProgress> report) : IProgress<TrainProgress>
    {
        public void Report(TrainProgress value) => report(value);
    }

    [Fact]
    public void LearningRateWarmsUpThenDecaysToATenth()
    {
        var c = new TrainConfig(Steps: 1000, BatchSize: 1, SeqLen: 1, LearningRate: 1.0, WarmupSteps: 100);
        Assert.Equal(0.01, Trainer.Schedule(c).At(0), 9);
        Assert.Equal(1.0, Trainer.Schedule(c).At(99), 9);
        Assert.Equal(0.55, Trainer.Schedule(c).At(550), 9);
        Assert.Equal(0.1, Trainer.Schedule(c).At(1000), 9);
    }

    [Fact]
    public void CorpusIsSeededAndHoldsItsGrammar()
    {
        var a = new ToyCorpus(42).Lines(500).ToList();
        Assert.Equal(a, new ToyCorpus(42).Lines(500).ToList());
        Assert.Contains(a, l => l.StartsWith("When ") && l.Contains(" gave "));
        Assert.Contains(a, l => l.StartsWith("The capital of the state containing "));
        // Held-out cities never appear in the two-hop form.
        foreach (var city in ToyWorld.HeldOutTwoHopCities)
            Assert.DoesNotContain(new ToyCorpus(1).Lines(20000), l => l.Contains($"containing {city} "));
        var prompts = new ToyCorpus(5).EvaluationPrompts().ToList();
        Assert.All(prompts.Where(p => p.Kind == ToyLineKind.IndirectObject), p => Assert.True(ToyCorpus.IsHeldOutPair(p.Answer, p.Wrong!)));
        Assert.Equal(12, prompts.Count(p => p.Kind == ToyLineKind.TwoHop && p.HeldOut));
    }

    [Fact]
    public void ShippedModelsMeetTheirTargets()
    {
        string models = Path.Combine(SharedData.RepoRoot, "models");
        using (var toy = HookedTransformer.Load(Path.Combine(models, "toy-4l")))
        {
            var (groups, _, _) = ToyEvaluation.Run(toy);
            Assert.True(groups.Single(g => g.Group == "two-hop, seen cities").Accuracy >= 0.95);
            Assert.True(groups.Single(g => g.Group.StartsWith("indirect object")).Accuracy >= 0.9);
        }
        using var attnOnly = HookedTransformer.Load(Path.Combine(models, "attn-only-2l"));
        var (_, induction, head) = ToyEvaluation.Run(attnOnly);
        Assert.True(induction > 0.9, $"best induction score {induction:F3} ({head})");
    }
}
