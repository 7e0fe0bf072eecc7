using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Tests.Tensors;

/// <summary>The top-k selection against libtorch's topk: the same values on every kind of row it takes or hands on.</summary>
public class TopKSelectTests
{
    /// <summary>The selected values, sorted, equal libtorch's k largest; the positions are distinct.</summary>
    static void AssertTopK(Tensor x, int k)
    {
        using var scope = NewDisposeScope();
        var indices = TopKSelect.Indices(x, k);
        Assert.Equal(x.shape[..^1].Append(k).ToArray(), indices.shape);
        var want = x.topk(k, dim: -1).values.sort(-1).Values;
        var got = x.gather(-1, indices).sort(-1).Values;
        Assert.True(want.eq(got).all().item<bool>(), "the selected values are not the k largest");
        var sorted = indices.sort(-1).Values;
        Assert.True(sorted.narrow(-1, 1, k - 1).ne(sorted.narrow(-1, 0, k - 1)).all().item<bool>(), "a position was selected twice");
    }

    [Fact]
    public void RandomRowsAtDictionaryWidths()
    {
        manual_seed(1);
        AssertTopK(randn(300, 1024), 16);
        AssertTopK(randn(40, 4096), 64);
        AssertTopK(randn(50, 1000), 7);     // width not a multiple of the groups, odd k
        AssertTopK(randn(30, 20), 3);       // too narrow for the ranking: the heap
        AssertTopK(randn(10, 500), 300);    // k beyond the heap: libtorch
    }

    [Fact]
    public void TiesAndConstantRows()
    {
        manual_seed(2);
        AssertTopK(randn(200, 1024).Mul(2.0).round(), 16);   // a handful of distinct values: many ties at the boundary
        AssertTopK(zeros(20, 512), 16);                        // every candidate tied: too many to rank
        AssertTopK(SafeOps.Full(new long[] { 5, 64 }, -3.0), 8);
    }

    [Fact]
    public void StridedRowsAndBatchedShapes()
    {
        manual_seed(3);
        using var layersFirst = randn(4, 32, 1024);                 // [L, B, f] memory, read as [B, L, f]
        AssertTopK(layersFirst.transpose(0, 1), 16);
        using var wide = randn(8, 2048);
        AssertTopK(wide.narrow(1, 100, 1024), 16);                // rows that start mid-storage
    }

    [Fact]
    public void NaNsNeverOutrankNumbersUnlessThereAreTooFewNumbers()
    {
        using var row = tensor(new float[] { 1, float.NaN, 5, 3, float.NaN, 2, 4, 0, -1, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
            29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64 }).view(1, -1);
        using var top = TopKSelect.Indices(row, 4);
        Assert.Equal(new long[] { 64, 65, 66, 67 }, top.sort(-1).Values.data<long>().ToArray());
        using var few = tensor(new float[] { float.NaN, 2, float.NaN, 1 }).view(1, -1);
        using var picked = TopKSelect.Indices(few, 3);
        Assert.Equal(new long[] { 0, 1, 3 }, picked.sort(-1).Values.data<long>().ToArray());
    }

    [Fact]
    public void BadK()
    {
        using var x = randn(2, 8);
        Assert.Throws<MechanistException>(() => TopKSelect.Indices(x, 0));
        Assert.Throws<MechanistException>(() => TopKSelect.Indices(x, 9));
    }
}
