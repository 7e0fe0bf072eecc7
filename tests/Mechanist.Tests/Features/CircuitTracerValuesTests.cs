using Mechanist.Features;

namespace Mechanist.Tests.Features;

/// <summary>The values of circuit-tracer's feature files, from quarter-octave bins, on hand-computed cases.</summary>
public sealed class CircuitTracerValuesTests
{
    // Two firings in [1, 2) and two in [2, 4), the largest 4.
    static readonly HistogramBin[] Bins = { new(1, 2, 2), new(2, 4, 2) };

    [Fact]
    public void PercentilesInterpolateGeometricallyWithinABin()
    {
        var q = FeatureExport.Quantiles(Bins, 4);
        Assert.Equal(100, q.Length);
        // The 25th percentile is rank 1 of 4: halfway through the first bin in log scale, √2.
        Assert.Equal(Math.Sqrt(2), q[24], 12);
        // The 50th is rank 2: the first bin's top, 2; the 75th halfway through [2, 4): 2√2; the 100th the maximum.
        Assert.Equal(2, q[49], 12);
        Assert.Equal(2 * Math.Sqrt(2), q[74], 12);
        Assert.Equal(4, q[99]);
        Assert.Equal(q.Order(), q);
    }

    [Fact]
    public void EqualWidthBinsShareEachOctaveBinByLogLength()
    {
        // Bins [1, 2), [2, 3), [3, 4]: the first holds the two firings of [1, 2); [2, 4) splits as log(3/2)/log 2 and log(4/3)/log 2.
        var h = FeatureExport.EqualWidth(Bins, 1, 4, 3);
        Assert.Equal(2, h[0], 3);
        Assert.Equal(2 * Math.Log(1.5) / Math.Log(2), h[1], 3);
        Assert.Equal(2 * Math.Log(4.0 / 3) / Math.Log(2), h[2], 3);
        Assert.Equal(4, h.Sum(), 3);
    }
}
