using Mechanist.Runtime;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Tests.Runtime;

/// <summary>How tensors get their memory: from glibc's heap, kept for reuse, on huge pages where the kernel offers them.</summary>
public class NativeHeapTests
{
    // What the process was started with (.NET keeps the environment it began with).
    static bool OptedOut => Environment.GetEnvironmentVariable(NativeHeap.OptOutVariable) == "system";

    [Fact]
    public void LargeTensorsComeFromTheHeapRatherThanFreshMappings()
    {
        TorchRuntime.EnsureLoaded();
        Assert.True(NativeHeap.HeapKept == (OperatingSystem.IsLinux() && !OptedOut), NativeHeap.Status);
        if (NativeHeap.MappedChunkBytes() is not { } before) return;         // not glibc: nothing to read
        // A 40 MB tensor: glibc maps it separately by default (above its largest threshold, 32 MB: its mapped bytes grow by as
        // much), from its heap under the policy (a thread's heap where this test runs on a thread of its own).
        using var big = empty(new long[] { 10L << 20 }, ScalarType.Float32);
        long grown = NativeHeap.MappedChunkBytes()!.Value - before;
        if (NativeHeap.HeapKept) Assert.Equal(0, grown);
        else Assert.True(grown >= 40L << 20, $"mapped bytes grew by {grown}");
    }

    [Fact]
    public void LargeTensorsLieOnHugePagesExactlyWhereTheKernelOffersThem()
    {
        TorchRuntime.EnsureLoaded();
        string? user = Environment.GetEnvironmentVariable(NativeHeap.HugePageVariable);
        string? mode = OperatingSystem.IsLinux() && File.Exists(NativeHeap.KernelModeFile) ? File.ReadAllText(NativeHeap.KernelModeFile) : null;
        bool offered = mode is not null && (mode.Contains("[always]") || mode.Contains("[madvise]"));
        bool expected = OperatingSystem.IsLinux() && (user is null && !OptedOut ? offered : user == "1");
        Assert.True(expected == NativeHeap.HugePages, NativeHeap.Status);
        // libtorch saw the switch: its allocator aligns a tensor of 2 MB or more to a page (for madvise) only under it, else to 64
        // bytes (never a page boundary: glibc's chunk header sits before it). Several tensors.
        long page = Environment.SystemPageSize;
        var tensors = Enumerable.Range(0, 4).Select(i => empty(new long[] { (3 + i) << 20 }, ScalarType.Float32)).ToList();
        int aligned = tensors.Count(t => TensorMemory.DataPointer(t).ToInt64() % page == 0);
        foreach (var t in tensors) t.Dispose();
        Assert.Equal(NativeHeap.HugePages ? tensors.Count : 0, aligned);
        Assert.Equal(NativeHeap.HugePages && user is null ? "1" : user, NativeHeap.NativeHugePageValue());
    }
}
