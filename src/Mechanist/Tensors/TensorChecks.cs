using static TorchSharp.torch;

namespace Mechanist.Tensors;

/// <summary>Checks on tensors read from files or given by users.</summary>
public static class TensorChecks
{
    /// <summary>
    /// Returns <paramref name="t"/> when every element is finite; otherwise disposes it and throws an
    /// <see cref="InvalidCheckpointException"/> naming the tensor, how many elements are NaN or infinite, and the first.
    /// </summary>
    public static Tensor RequireFinite(Tensor t, string name, string file)
    {
        if (!is_floating_point(t)) return t;
        long bad;
        using (NewDisposeScope()) bad = isfinite(t).logical_not().sum().item<long>();
        if (bad == 0) return t;
        long first;
        using (NewDisposeScope()) first = isfinite(t.reshape(-1)).logical_not().nonzero()[0, 0].item<long>();
        t.Dispose();
        throw new InvalidCheckpointException(file, $"tensor '{name}' has {bad:N0} NaN or infinite value(s) (the first at flat index {first:N0}); the file is corrupt or the training diverged");
    }

    /// <summary>Throws a <see cref="MechanistException"/> naming <paramref name="what"/> when <paramref name="value"/> is NaN or infinite.</summary>
    public static double RequireFinite(double value, string what) =>
        double.IsFinite(value) ? value : throw new MechanistException($"{what} must be a finite number (got {value})");
}
