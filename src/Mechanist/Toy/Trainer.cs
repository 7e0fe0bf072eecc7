using System.Diagnostics;
using System.Text.Json;
using Mechanist.IO;
using Mechanist.Models;
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

/// <summary>Progress of training.</summary>
/// <param name="Step">Steps done.</param>
/// <param name="Steps">Steps in all.</param>
/// <param name="Loss">Loss of the last step.</param>
/// <param name="LearningRate">Learning rate of the last step.</param>
/// <param name="TokensPerSecond">Throughput so far in this run.</param>
public readonly record struct TrainProgress(int Step, int Steps, double Loss, double LearningRate, double TokensPerSecond);

/// <summary>
/// Trains a <see cref="HookedTransformer"/> on a token stream with AdamW, linear warm-up and cosine
/// decay, gradient clipping and resumable checkpoints. Batches are drawn from a generator seeded by
/// (seed, step), so a resumed run sees exactly the batches an uninterrupted one would.
/// </summary>
public sealed class Trainer
{
    const double Beta1 = 0.9, Beta2 = 0.95, Eps = 1e-8;

    /// <summary>Learning rate at a step.</summary>
    public static double LearningRateAt(TrainConfig c, int step)
    {
        if (step < c.WarmupSteps) return c.LearningRate * (step + 1) / c.WarmupSteps;
        double progress = (double)(step - c.WarmupSteps) / Math.Max(1, c.Steps - c.WarmupSteps);
        return c.LearningRate * (0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(1, progress))));
    }

    /// <summary>
    /// Trains in place and returns the loss of every step (resumed steps included from the checkpoint).
    /// <paramref name="checkpointDir"/> receives model.safetensors + optimizer state; an existing one is resumed.
    /// </summary>
    public static List<double> Train(HookedTransformer model, long[] stream, TrainConfig c, string checkpointDir,
        IProgress<TrainProgress>? progress = null, CancellationToken ct = default)
    {
        if (stream.Length < c.SeqLen + 2) throw new MechanistException("the corpus is shorter than one training sequence");
        var parameters = model.Weights.Named().Select(p => p.Tensor).ToList();
        foreach (var p in parameters) p.requires_grad_(true);
        var m = parameters.Select(p => zeros_like(p).requires_grad_(false)).ToList();
        var v = parameters.Select(p => zeros_like(p).requires_grad_(false)).ToList();
        var losses = new List<double>();
        int start = Resume(checkpointDir, parameters, m, v, losses);
        using var data = tensor(stream, ScalarType.Int64);
        var sw = Stopwatch.StartNew();
        long tokens = 0;
        try
        {
            for (int step = start; step < c.Steps; step++)
            {
                ct.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var rng = new Random(HashCode.Combine(c.Seed, step));
                var starts = Enumerable.Range(0, c.BatchSize).Select(_ => (long)rng.NextInt64(stream.Length - c.SeqLen - 1)).ToArray();
                var index = tensor(starts).unsqueeze(1) + arange(c.SeqLen + 1).unsqueeze(0);
                var batch = data.index_select(0, index.flatten()).view(c.BatchSize, c.SeqLen + 1);
                var logits = model.Run(batch[.., ..^1], new RunOptions { EnableGrad = true });
                var loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[2]), batch[.., 1..].reshape(-1));
                foreach (var p in parameters) p.grad?.zero_();
                loss.backward();
                double lr = LearningRateAt(c, step);
                using (no_grad())
                {
                    var norm = sqrt(stack(parameters.Select(p => p.grad!.pow(2).sum())).sum()).item<float>();
                    double clip = norm > c.GradClip ? c.GradClip / (norm + 1e-6) : 1.0;
                    double bias1 = 1 - Math.Pow(Beta1, step + 1), bias2 = 1 - Math.Pow(Beta2, step + 1);
                    for (int i = 0; i < parameters.Count; i++)
                    {
                        var p = parameters[i]; var g = p.grad! * clip;
                        m[i].mul_(Beta1).add_(g, 1 - Beta1);
                        v[i].mul_(Beta2).addcmul_(g, g, 1 - Beta2);
                        if (p.dim() >= 2 && c.WeightDecay > 0) p.mul_(1 - lr * c.WeightDecay);
                        var update = (m[i] / bias1) / ((v[i] / bias2).sqrt() + Eps);
                        p.sub_(update * lr);
                    }
                }
                double value = loss.item<float>();
                losses.Add(value);
                tokens += (long)c.BatchSize * c.SeqLen;
                progress?.Report(new TrainProgress(step + 1, c.Steps, value, lr, tokens / Math.Max(1e-9, sw.Elapsed.TotalSeconds)));
                if (c.CheckpointEvery > 0 && (step + 1) % c.CheckpointEvery == 0 && step + 1 < c.Steps)
                    SaveCheckpoint(model, checkpointDir, step + 1, parameters, m, v, losses);
            }
        }
        finally
        {
            foreach (var p in parameters) { p.requires_grad_(false); p.grad?.Dispose(); }
        }
        SaveCheckpoint(model, checkpointDir, c.Steps, parameters, m, v, losses);
        foreach (var t in m.Concat(v)) t.Dispose();
        return losses;
    }

    static void SaveCheckpoint(HookedTransformer model, string dir, int step, List<Tensor> parameters, List<Tensor> m, List<Tensor> v, List<double> losses)
    {
        Directory.CreateDirectory(dir);
        using var scope = NewDisposeScope();
        var state = new Dictionary<string, Tensor>();
        for (int i = 0; i < parameters.Count; i++)
        {
            state[$"param.{i}"] = parameters[i].detach();
            state[$"m.{i}"] = m[i]; state[$"v.{i}"] = v[i];
        }
        SafetensorsWriter.Write(Path.Combine(dir, "optimizer.safetensors"), state);
        AtomicFile.WriteText(Path.Combine(dir, "trainer_state.json"), JsonSerializer.Serialize(new { step, losses }));
    }

    static int Resume(string dir, List<Tensor> parameters, List<Tensor> m, List<Tensor> v, List<double> losses)
    {
        string statePath = Path.Combine(dir, "trainer_state.json"), optimizerPath = Path.Combine(dir, "optimizer.safetensors");
        if (!File.Exists(statePath) || !File.Exists(optimizerPath)) return 0;
        using var doc = JsonDocument.Parse(File.ReadAllText(statePath));
        int step = doc.RootElement.GetProperty("step").GetInt32();
        losses.AddRange(doc.RootElement.GetProperty("losses").EnumerateArray().Select(e => e.GetDouble()));
        using var st = SafetensorsFile.Open(optimizerPath);
        using (no_grad())
            for (int i = 0; i < parameters.Count; i++)
            {
                if (!st.Contains($"param.{i}") || !st.ShapeOf($"param.{i}").SequenceEqual(parameters[i].shape))
                    throw new InvalidCheckpointException(optimizerPath, $"parameter {i} does not match the model being trained; start from an empty folder");
                using var p = st.Read($"param.{i}"); using var mi = st.Read($"m.{i}"); using var vi = st.Read($"v.{i}");
                parameters[i].copy_(p); m[i].copy_(mi); v[i].copy_(vi);
            }
        return step;
    }
}
