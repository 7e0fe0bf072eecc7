using Mechanist.Tensors;
using Mechanist.Models;
using Mechanist.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Mechanist.Toy;

/// <summary>Training hyper-parameters.</summary>
/// <param name="Steps">Optimizer steps.</param>
/// <param name="BatchSize">Sequences per step.</param>
/// <param name="SeqLen">Tokens per sequence.</param>
/// <param name="LearningRate">Peak learning rate.</param>
/// <param name="WeightDecay">AdamW decoupled weight decay (matrices only).</param>
/// <param name="WarmupSteps">Linear warm-up steps, then cosine decay to 10% of the peak.</param>
/// <param name="GradClip">Global gradient-norm clip.</param>
/// <param name="Seed">Seed of initialisation and batch sampling.</param>
/// <param name="CheckpointEvery">Steps between checkpoints (0: only at the end).</param>
public sealed record TrainConfig(int Steps, int BatchSize, int SeqLen, double LearningRate, double WeightDecay = 0.01,
    int WarmupSteps = 100, double GradClip = 1.0, int Seed = 0, int CheckpointEvery = 500);

/// <summary>
/// Trains a <see cref="HookedTransformer"/> on a token stream with AdamW, linear warm-up and cosine
/// decay, gradient clipping and resumable checkpoints. Batches are drawn from a generator seeded by
/// (seed, step), so a resumed run sees exactly the batches an uninterrupted one would.
/// </summary>
public static class Trainer
{
    /// <summary>The schedule of a configuration: linear warm-up, then cosine decay to 10% of the peak.</summary>
    public static LearningRateSchedule Schedule(TrainConfig c) => new LearningRateSchedule.WarmupCosine(c.LearningRate, c.WarmupSteps, c.Steps);

    /// <summary>
    /// Trains in place and returns the loss of every step (resumed steps included from the checkpoint).
    /// <paramref name="checkpointDir"/> receives the parameters and optimizer state; an existing one is resumed.
    /// </summary>
    public static List<double> Train(HookedTransformer model, long[] stream, TrainConfig c, string checkpointDir,
        IProgress<TrainProgress>? progress = null, CancellationToken ct = default)
    {
        if (stream.Length < c.SeqLen + 2) throw new MechanistException("the corpus is shorter than one training sequence");
        using var data = tensor(stream, ScalarType.Int64);
        using var optimizer = new AdamW(model.Weights.Named().Select(p => p.Tensor), beta1: 0.9, beta2: 0.95, eps: 1e-8);
        Tensor Loss(int step)
        {
            var rng = new Random(HashCode.Combine(c.Seed, step));
            var starts = Enumerable.Range(0, c.BatchSize).Select(_ => (long)rng.NextInt64(stream.Length - c.SeqLen - 1)).ToArray();
            var index = tensor(starts).unsqueeze(1).Add(SafeOps.Arange(c.SeqLen + 1).unsqueeze(0));
            var batch = data.index_select(0, index.flatten()).view(c.BatchSize, c.SeqLen + 1).to(model.Device);
            var logits = model.Run(batch[.., ..^1], new RunOptions { EnableGrad = true });
            return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[2]), batch[.., 1..].reshape(-1));
        }
        return TrainingLoop.Run(optimizer, Loss, new TrainingLoopOptions(c.Steps, Schedule(c), c.WeightDecay, c.GradClip,
            (long)c.BatchSize * c.SeqLen, checkpointDir, c.CheckpointEvery), progress, ct);
    }
}
