using Mechanist.Tensors;
using System.Diagnostics;
using System.Text.Json;
using Mechanist.IO;
using static TorchSharp.torch;

namespace Mechanist.Training;

/// <summary>How a training loop runs.</summary>
/// <param name="Steps">Optimizer steps in all.</param>
/// <param name="Schedule">Learning rate per step.</param>
/// <param name="WeightDecay">AdamW decoupled weight decay (matrices only).</param>
/// <param name="GradClip">Global gradient-norm clip (∞: none).</param>
/// <param name="TokensPerStep">For the tokens/s figure of the progress reports.</param>
/// <param name="CheckpointDir">Folder for checkpoints (parameters, optimizer moments, step, losses); an existing checkpoint there is resumed. Null: none.</param>
/// <param name="CheckpointEvery">Steps between checkpoints (0: only at the end).</param>
/// <param name="ExtraState">Tensors besides the parameters that a resumed run needs (counters, running estimates); checkpointed and restored in place.</param>
public sealed record TrainingLoopOptions(int Steps, LearningRateSchedule Schedule, double WeightDecay = 0, double GradClip = double.PositiveInfinity,
    long TokensPerStep = 0, string? CheckpointDir = null, int CheckpointEvery = 0, IReadOnlyList<Tensor>? ExtraState = null);

/// <summary>Progress of a training loop.</summary>
/// <param name="Step">Steps done.</param>
/// <param name="Steps">Steps in all.</param>
/// <param name="Loss">Loss of the last step.</param>
/// <param name="LearningRate">Learning rate of the last step.</param>
/// <param name="TokensPerSecond">Throughput so far in this run.</param>
public readonly record struct TrainProgress(int Step, int Steps, double Loss, double LearningRate, double TokensPerSecond);

/// <summary>
/// The training loop every trainer uses (toy models, the contextuality decoder, dictionaries): per step it asks
/// for a loss, backpropagates, clips, steps AdamW on the schedule, reports progress and writes resumable
/// checkpoints (written atomically). A run resumed from a checkpoint continues exactly where it stopped, as long
/// as the loss function depends on the step alone (seed batches by step).
/// </summary>
public static class TrainingLoop
{
    /// <summary>Runs the loop and returns the loss of every step (steps done before a resume included).</summary>
    public static List<double> Run(AdamW optimizer, Func<int, Tensor> lossAt, TrainingLoopOptions o,
        IProgress<TrainProgress>? progress = null, CancellationToken ct = default)
    {
        var losses = new List<double>();
        var extra = o.ExtraState ?? Array.Empty<Tensor>();
        if (o.CheckpointDir is { } stale && Directory.Exists(stale))
            foreach (var file in new[] { StateFile, TensorFile }) AtomicFile.RemoveStaleTemps(Path.Combine(stale, file)); // a killed run's temp files
        int start = o.CheckpointDir is { } dir ? Resume(dir, optimizer, losses, extra) : 0;
        var sw = Stopwatch.StartNew();
        long tokens = 0;
        for (int step = start; step < o.Steps; step++)
        {
            ct.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var loss = lossAt(step);
            optimizer.ZeroGrad();
            loss.backward();
            double lr = o.Schedule.At(step);
            optimizer.Step(lr, o.WeightDecay, o.GradClip);
            double value = loss.item<float>();
            losses.Add(value);
            tokens += o.TokensPerStep;
            progress?.Report(new TrainProgress(step + 1, o.Steps, value, lr, tokens / Math.Max(1e-9, sw.Elapsed.TotalSeconds)));
            if (o.CheckpointDir is { } d && o.CheckpointEvery > 0 && (step + 1) % o.CheckpointEvery == 0 && step + 1 < o.Steps)
                Save(d, step + 1, optimizer, losses, extra);
        }
        if (o.CheckpointDir is { } final) Save(final, o.Steps, optimizer, losses, extra);
        return losses;
    }

    const string StateFile = "trainer_state.json", TensorFile = "optimizer.safetensors";

    /// <summary>Writes parameters, moments, step and losses to <paramref name="dir"/> (each file atomically; the tensors first).</summary>
    public static void Save(string dir, int step, AdamW optimizer, IReadOnlyList<double> losses, IReadOnlyList<Tensor>? extraState = null)
    {
        Directory.CreateDirectory(dir);
        using var scope = NewDisposeScope();
        var state = new Dictionary<string, Tensor>();
        for (int i = 0; i < optimizer.Parameters.Count; i++)
        {
            state[$"param.{i}"] = optimizer.Parameters[i].DetachedCpu();
            state[$"m.{i}"] = optimizer.FirstMoments[i].cpu(); state[$"v.{i}"] = optimizer.SecondMoments[i].cpu();
        }
        for (int i = 0; i < (extraState?.Count ?? 0); i++) state[$"state.{i}"] = extraState![i].DetachedCpu();
        SafetensorsWriter.Write(Path.Combine(dir, TensorFile), state);
        AtomicFile.WriteText(Path.Combine(dir, StateFile), JsonSerializer.Serialize(new { step, losses }));
    }

    static int Resume(string dir, AdamW optimizer, List<double> losses, IReadOnlyList<Tensor> extra)
    {
        string statePath = Path.Combine(dir, StateFile), tensorPath = Path.Combine(dir, TensorFile);
        if (!File.Exists(statePath) || !File.Exists(tensorPath)) return 0;
        int step;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(statePath));
            step = doc.RootElement.GetProperty("step").GetInt32();
            losses.AddRange(doc.RootElement.GetProperty("losses").EnumerateArray().Select(e => e.GetDouble()));
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new InvalidCheckpointException(statePath, $"not a training state ({e.Message}); start from an empty folder");
        }
        using var st = SafetensorsFile.Open(tensorPath);
        using (no_grad())
            for (int i = 0; i < optimizer.Parameters.Count; i++)
            {
                var p = optimizer.Parameters[i];
                if (!st.Contains($"param.{i}") || !st.ShapeOf($"param.{i}").SequenceEqual(p.shape))
                    throw new InvalidCheckpointException(tensorPath, $"parameter {i} does not match what is being trained; start from an empty folder");
                using var pi = st.Read($"param.{i}"); using var mi = st.Read($"m.{i}"); using var vi = st.Read($"v.{i}");
                p.copy_(pi); optimizer.FirstMoments[i].copy_(mi); optimizer.SecondMoments[i].copy_(vi);
            }
        using (no_grad())
            for (int i = 0; i < extra.Count; i++)
            {
                if (!st.Contains($"state.{i}") || !st.ShapeOf($"state.{i}").SequenceEqual(extra[i].shape))
                    throw new InvalidCheckpointException(tensorPath, $"training state {i} does not match what is being trained; start from an empty folder");
                using var si = st.Read($"state.{i}");
                extra[i].copy_(si);
            }
        optimizer.StepCount = step;
        return step;
    }
}

/// <summary>An <see cref="IProgress{T}"/> that reports on the calling thread, at once (unlike <see cref="Progress{T}"/>).</summary>
public sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    /// <inheritdoc/>
    public void Report(T value) => report(value);
}
