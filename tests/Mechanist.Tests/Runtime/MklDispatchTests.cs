using System.Runtime.Intrinsics.X86;
using Mechanist.Runtime;
using static TorchSharp.torch;

namespace Mechanist.Tests.Runtime;

/// <summary>MKL's kernel choice: made by the CPU's features where its vendor test would hold AVX-512 back, and still exact.</summary>
public class MklDispatchTests
{
    [Fact]
    public void TheBypassAppliesExactlyWhereTheCpuHasAvx512AndIsNotIntels()
    {
        TorchRuntime.EnsureLoaded();
        bool intel = X86Base.IsSupported && X86Base.CpuId(0, 0) is var (_, b, _, _) && b == 0x756E6547;   // "Genu"
        bool expected = OperatingSystem.IsLinux() && X86Base.IsSupported && Avx512F.IsSupported && !intel
            && Environment.GetEnvironmentVariable(MklDispatch.OptOutVariable) != "keep";
        Assert.True(expected == MklDispatch.Bypassed, MklDispatch.Status);
    }

    [Fact]
    public void Float32ProductsMatchFloat64AtEveryShapeClass()
    {
        // Square, tall, wide, a vector and an odd remainder: each within float32's accumulated rounding of the float64 product.
        using var g = new Generator(5);
        foreach (var (m, k, n) in new[] { (256, 256, 256), (1000, 64, 7), (3, 512, 1024), (1, 768, 3072), (129, 257, 65) })
        {
            using var scope = NewDisposeScope();
            var a = randn(new long[] { m, k }, ScalarType.Float64, generator: g); var b = randn(new long[] { k, n }, ScalarType.Float64, generator: g);
            var exact = matmul(a, b);
            var single = matmul(a.to(ScalarType.Float32), b.to(ScalarType.Float32)).to(ScalarType.Float64);
            double error = (single - exact).abs().max().item<double>();
            Assert.True(error < 1e-5 * Math.Sqrt(k) * 8, $"{m}x{k}x{n}: max error {error}");
        }
    }
}
