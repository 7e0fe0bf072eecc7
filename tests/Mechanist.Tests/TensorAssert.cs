using static TorchSharp.torch;

namespace Mechanist.Tests;

/// <summary>Assertions on tensors with a readable failure message.</summary>
public static class TensorAssert
{
    /// <summary>Asserts equal shapes and max |a - b| ≤ tolerance.</summary>
    public static double Close(Tensor expected, Tensor actual, double tolerance, string what)
    {
        Assert.True(expected.shape.SequenceEqual(actual.shape),
            $"{what}: shape [{string.Join(",", actual.shape)}] != expected [{string.Join(",", expected.shape)}]");
        using var diff = (expected.to(ScalarType.Float64).cpu() - actual.to(ScalarType.Float64).cpu()).abs();
        double max = diff.numel() == 0 ? 0 : diff.max().item<double>();
        Assert.True(max <= tolerance, $"{what}: max abs diff {max:E3} > {tolerance:E1}");
        return max;
    }
}
