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
        // What the kernel says of the CPU (not the CPUID reads the bypass makes): its vendor and whether avx512f is among its flags.
        bool expected = false;
        if (OperatingSystem.IsLinux() && File.Exists("/proc/cpuinfo"))
        {
            var lines = File.ReadLines("/proc/cpuinfo").ToList();
            string Field(string name) => lines.FirstOrDefault(l => l.StartsWith(name + "\t") || l.StartsWith(name + " "))?.Split(':', 2)[1].Trim() ?? "";
            expected = Field("vendor_id") is { Length: > 0 } vendor && vendor != "GenuineIntel" && Field("flags").Split(' ').Contains("avx512f")
                && Environment.GetEnvironmentVariable(MklDispatch.OptOutVariable) != "keep";
        }
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
