using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Tests.Tensors;

/// <summary>The one-block copy of a tensor's elements against TorchSharp's element-by-element accessor.</summary>
public class TensorMemoryTests
{
    [Fact]
    public void ToArrayReadsEveryLayoutInRowMajorOrder()
    {
        using var scope = NewDisposeScope();
        var t = SafeOps.Arange(24, ScalarType.Float32).view(2, 3, 4);
        Assert.Equal(Enumerable.Range(0, 24).Select(i => (float)i), TensorMemory.ToArray<float>(t));
        // A transposed view, an offset slice, int64 and float64: the same values as the accessor reads.
        var transposed = t.permute(2, 0, 1);
        Assert.Equal(transposed.contiguous().data<float>().ToArray(), TensorMemory.ToArray<float>(transposed));
        Assert.Equal(new float[] { 13, 14, 15 }, TensorMemory.ToArray<float>(t[1, 0, 1..]));
        Assert.Equal(new long[] { 5, 6 }, TensorMemory.ToArray<long>(SafeOps.Arange(5, 7, dtype: ScalarType.Int64)));
        Assert.Equal(new double[] { 0.5 }, TensorMemory.ToArray<double>(tensor(new[] { 0.5 })));
        Assert.Empty(TensorMemory.ToArray<float>(zeros(0)));
    }

    [Fact]
    public void ToArrayRefusesAnotherElementType()
    {
        using var t = zeros(3, dtype: ScalarType.Float64);
        var e = Assert.Throws<ArgumentException>(() => TensorMemory.ToArray<float>(t));
        Assert.Contains("Float64", e.Message);
    }
}
