using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries.Evaluation;

/// <summary>
/// A binary logistic-regression probe, fitted by Newton's method on centred features (all divided by one scale, so the penalty
/// favours no coordinate) with an L2 penalty on the weights (not the bias). Weights and bias are given in the raw feature space: score(x) = x·w + b, positive means "yes".
/// </summary>
/// <param name="Weights">Weights in the raw feature space [k].</param>
/// <param name="Bias">Bias in the raw feature space.</param>
public sealed record LogisticProbe(double[] Weights, double Bias)
{
    /// <summary>
    /// Fits a probe to rows <paramref name="x"/> [n, k] with labels <paramref name="y"/>. <paramref name="l2"/> is the penalty on the
    /// scaled weights per row of the mean loss (0: the maximum-likelihood fit, which diverges on separable data).
    /// </summary>
    public static LogisticProbe Fit(Tensor x, bool[] y, double l2 = 1e-3, int maxIterations = 100)
    {
        if (x.dim() != 2 || x.shape[0] != y.Length) throw new ArgumentException($"rows [n, k] with one label per row (got {string.Join("x", x.shape)} and {y.Length} labels)");
        if (y.Length == 0 || y.All(v => v) || !y.Any(v => v)) throw new MechanistException("a probe needs both positive and negative examples");
        using var scope = NewDisposeScope();
        long n = x.shape[0], k = x.shape[1];
        var raw = x.to(ScalarType.Float64);
        var mean = raw.mean(new long[] { 0 });
        // One scale for all columns (their RMS about the mean), not one per column: the penalty stays isotropic, so the fitted
        // direction is a direction of the activation space rather than one that favours its quietest coordinates.
        var centred = raw.Sub(mean);
        double rms = Math.Sqrt(centred.Square().mean().item<double>());
        double scale = rms > 1e-12 ? rms : 1;
        var z = cat(new[] { centred.Div(scale), ones(n, 1, ScalarType.Float64) }, 1);              // [n, k + 1]
        var target = tensor(y.Select(v => v ? 1.0 : 0.0).ToArray(), ScalarType.Float64).unsqueeze(1);
        var penalty = diag(cat(new[] { SafeOps.Full(new[] { k }, l2, ScalarType.Float64), zeros(1, ScalarType.Float64) }));
        var w = zeros(k + 1, 1, ScalarType.Float64);
        for (int it = 0; it < maxIterations; it++)
        {
            using var step = NewDisposeScope();
            var p = z.matmul(w).sigmoid();
            var gradient = z.t().matmul(p.Sub(target)).Div(n).Add(penalty.matmul(w));
            var weight = p.mul(p.RSub(1.0));                                                        // p(1 − p)
            var hessian = z.t().matmul(z.mul(weight)).Div(n).Add(penalty).Add(eye(k + 1, dtype: ScalarType.Float64).Mul(1e-10));
            var delta = linalg.solve(hessian, gradient);
            w = w.Sub(delta).DetachFromDisposeScope();
            if (delta.abs().max().item<double>() < 1e-10) break;
        }
        var ws = w.squeeze(1);
        var scaled = ws[..(int)k].Div(scale);
        double bias = ws[k].item<double>() - scaled.dot(mean).item<double>();
        return new LogisticProbe(scaled.data<double>().ToArray(), bias);
    }

    /// <summary>Scores x·w + b of rows [n, k].</summary>
    public double[] Scores(Tensor x)
    {
        using var scope = NewDisposeScope();
        var w = tensor(Weights, ScalarType.Float64);
        return x.to(ScalarType.Float64).matmul(w).Add(Bias).data<double>().ToArray();
    }

    /// <summary>Accuracy and F1 (positive class) of the probe's calls on rows [n, k] with labels.</summary>
    public (double Accuracy, double F1) Score(Tensor x, bool[] y) => ProbeMetrics.Of(Scores(x).Select(s => s > 0).ToArray(), y);
}

/// <summary>Accuracy and F1 of yes/no calls.</summary>
public static class ProbeMetrics
{
    /// <summary>Accuracy and F1 of the positive class (F1 0 when nothing positive is called or exists).</summary>
    public static (double Accuracy, double F1) Of(bool[] called, bool[] truth)
    {
        if (called.Length != truth.Length || truth.Length == 0) throw new ArgumentException("one call per label, at least one");
        int tp = 0, fp = 0, fn = 0, correct = 0;
        for (int i = 0; i < truth.Length; i++)
        {
            if (called[i] == truth[i]) correct++;
            if (called[i] && truth[i]) tp++; else if (called[i]) fp++; else if (truth[i]) fn++;
        }
        return ((double)correct / truth.Length, tp == 0 ? 0 : 2.0 * tp / (2.0 * tp + fp + fn));
    }
}
