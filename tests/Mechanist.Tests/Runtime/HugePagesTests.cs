using Mechanist.Runtime;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Tests.Runtime;

/// <summary>libtorch's large tensors on transparent huge pages: switched on exactly where the kernel offers them and the user did not say otherwise.</summary>
public class HugePagesTests
{
    [Fact]
    public void LargeTensorsLieOnHugePageBoundariesExactlyWhereTheKernelOffersThem()
    {
        TorchRuntime.EnsureLoaded();
        // What the process was started with (.NET keeps the environment it began with) and what the kernel says of its huge pages.
        string? user = Environment.GetEnvironmentVariable(HugePages.Variable);
        string? mode = OperatingSystem.IsLinux() && File.Exists(HugePages.KernelModeFile) ? File.ReadAllText(HugePages.KernelModeFile) : null;
        bool offered = mode is not null && (mode.Contains("[always]") || mode.Contains("[madvise]"));
        bool expected = OperatingSystem.IsLinux() && (user is null ? offered : user == "1");
        Assert.True(expected == HugePages.Enabled, HugePages.Status);
        // libtorch saw the switch: its allocator aligns a tensor of 2 MB or more to a page (for madvise) only under it, else to 64
        // bytes (glibc maps such a chunk with its header first: the data sits 64 bytes past a page boundary). Several tensors.
        long page = Environment.SystemPageSize;
        var tensors = Enumerable.Range(0, 4).Select(i => empty(new long[] { (3 + i) << 20 }, ScalarType.Float32)).ToList();
        int aligned = tensors.Count(t => TensorMemory.DataPointer(t).ToInt64() % page == 0);
        foreach (var t in tensors) t.Dispose();
        Assert.Equal(HugePages.Enabled ? tensors.Count : 0, aligned);
        Assert.Equal(HugePages.Enabled ? "1" : user, HugePages.NativeValue());
    }
}
