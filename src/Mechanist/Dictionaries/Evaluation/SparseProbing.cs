using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries.Evaluation;

/// <summary>A probe on the k latents that best separate the classes.</summary>
/// <param name="K">Latents used.</param>
/// <param name="Latents">Which (ranked by |mean on positives − mean on negatives| over the training readings).</param>
/// <param name="Accuracy">Held-out accuracy (0.5 is chance: the classes are balanced).</param>
/// <param name="F1">Held-out F1 of the positive class.</param>
public sealed record SparseProbeAtK(int K, int[] Latents, double Accuracy, double F1);

/// <summary>One task at one layer: a probe on the raw activations against probes on a few latents.</summary>
/// <param name="Task">Task name.</param>
/// <param name="Description">What is labelled.</param>
/// <param name="Layer">Dictionary layer (0 for an SAE).</param>
/// <param name="TrainReadings">Readings the probes were fitted on.</param>
/// <param name="TestReadings">Held-out readings they are scored on.</param>
/// <param name="RawAccuracy">Held-out accuracy of a probe on the dictionary's whole input.</param>
/// <param name="RawF1">Its held-out F1.</param>
/// <param name="Sparse">Probes on the best k latents.</param>
public sealed record SparseProbeResult(string Task, string Description, int Layer, int TrainReadings, int TestReadings, double RawAccuracy, double RawF1, SparseProbeAtK[] Sparse);

/// <summary>Means over the tasks at one layer.</summary>
/// <param name="Layer">Dictionary layer.</param>
/// <param name="RawAccuracy">Mean raw-probe accuracy.</param>
/// <param name="SparseAccuracy">Mean accuracy at each k, in the order of <see cref="SparseProbingReport.Ks"/>.</param>
public sealed record SparseProbingLayer(int Layer, double RawAccuracy, double[] SparseAccuracy);

/// <summary>The probing suite's report.</summary>
/// <param name="Suite">"probing".</param>
/// <param name="Model">The model read.</param>
/// <param name="Ks">Latent counts probed.</param>
/// <param name="Seed">Seed of the readings and the split.</param>
/// <param name="Tasks">Per task and layer.</param>
/// <param name="Layers">Means per layer.</param>
public sealed record SparseProbingReport(string Suite, string Model, int[] Ks, int Seed, SparseProbeResult[] Tasks, SparseProbingLayer[] Layers);

/// <summary>
/// SAEBench-style sparse probing: for each binary task, a logistic-regression probe on the k latents whose mean activation differs
/// most between the classes (on the training readings), scored on held-out readings, against a probe on the raw activations the
/// dictionary reads. A dictionary whose latents carry the task's concept scores near the raw probe already at k = 1.
/// </summary>
public static class SparseProbing
{
    /// <summary>Latent counts of the report.</summary>
    public static readonly int[] DefaultKs = { 1, 2, 5 };

    /// <summary>
    /// Probes one task: <paramref name="raw"/> [n, d] and <paramref name="latents"/> [n, f] are the readings' inputs and latent
    /// activations, <paramref name="labels"/> their classes, <paramref name="isTest"/> the held-out ones.
    /// </summary>
    public static SparseProbeResult Probe(string task, string description, int layer, Tensor raw, Tensor latents, bool[] labels, bool[] isTest, int[] ks)
    {
        using var scope = NewDisposeScope();
        var train = Rows(isTest, false); var test = Rows(isTest, true);
        if (train.Length == 0 || test.Length == 0) throw new MechanistException($"{task}: too few readings to hold some out");
        bool[] trainY = train.Select(i => labels[i]).ToArray(), testY = test.Select(i => labels[i]).ToArray();
        var trainIdx = tensor(train.Select(i => (long)i).ToArray()); var testIdx = tensor(test.Select(i => (long)i).ToArray());
        var rawProbe = LogisticProbe.Fit(raw.index_select(0, trainIdx), trainY);
        var (rawAcc, rawF1) = rawProbe.Score(raw.index_select(0, testIdx), testY);
        var ranked = RankLatents(latents.index_select(0, trainIdx), trainY, absolute: true, ks.Max());
        var sparse = ks.Select(k =>
        {
            var chosen = ranked.Take(k).ToArray();
            var columns = tensor(chosen.Select(c => (long)c).ToArray());
            var probe = LogisticProbe.Fit(latents.index_select(0, trainIdx).index_select(1, columns), trainY);
            var (acc, f1) = probe.Score(latents.index_select(0, testIdx).index_select(1, columns), testY);
            return new SparseProbeAtK(k, chosen, acc, f1);
        }).ToArray();
        return new SparseProbeResult(task, description, layer, train.Length, test.Length, rawAcc, rawF1, sparse);
    }

    /// <summary>
    /// Latents ordered by how much their mean activation on the positives exceeds (or, with <paramref name="absolute"/>, differs
    /// from) their mean on the negatives; the first <paramref name="take"/>.
    /// </summary>
    public static int[] RankLatents(Tensor latents, bool[] labels, bool absolute, int take)
    {
        using var scope = NewDisposeScope();
        var y = tensor(labels).to(ScalarType.Float64).unsqueeze(1);
        var z = latents.to(ScalarType.Float64);
        long pos = labels.Count(v => v), neg = labels.Length - pos;
        var diff = z.mul(y).sum(new long[] { 0 }).Div(Math.Max(1, pos)).Sub(z.mul(y.RSub(1.0)).sum(new long[] { 0 }).Div(Math.Max(1, neg)));
        if (absolute) diff = diff.abs();
        int k = (int)Math.Min(take, latents.shape[1]);
        return diff.topk(k).indexes.data<long>().Select(i => (int)i).ToArray();
    }

    /// <summary>A seeded split holding out <paramref name="testShare"/> of each class.</summary>
    public static bool[] Split(bool[] labels, double testShare, int seed)
    {
        var rng = new Random(seed);
        var test = new bool[labels.Length];
        foreach (var cls in new[] { true, false })
        {
            var members = Enumerable.Range(0, labels.Length).Where(i => labels[i] == cls).OrderBy(_ => rng.Next()).ToArray();
            int held = (int)Math.Round(members.Length * testShare);
            foreach (var i in members.Take(held)) test[i] = true;
        }
        return test;
    }

    static int[] Rows(bool[] isTest, bool test) => Enumerable.Range(0, isTest.Length).Where(i => isTest[i] == test).ToArray();
}
