using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using System.Text;

namespace Mechanist.Runtime;

/// <summary>
/// libtorch's statically linked oneMKL chooses its GEMM kernels by the CPU's vendor: on an x86 CPU that is not Intel's it runs its
/// AVX2 path even where the CPU has AVX-512 (fp32 GEMM on this project's AVX-512 EPYC: 155 GFLOP/s, against 364 once MKL chooses by
/// the CPU's features, and OpenBLAS's 345 on the same shapes). Where the CPU reports AVX-512F and is not Intel's, MKL's vendor test
/// (<c>mkl_serv_intel_cpu_true</c>, an exported function of libtorch_cpu.so) is made to answer yes in this process before the first
/// GEMM; MKL then picks its kernels from the CPU's feature flags. The process's copy of the code is changed, never the file.
/// <c>MECHANIST_MKL_VENDOR_CHECK=keep</c> leaves MKL as it is.
/// </summary>
public static class MklDispatch
{
    /// <summary>The environment variable that keeps MKL's vendor test (value <c>keep</c>).</summary>
    public const string OptOutVariable = "MECHANIST_MKL_VENDOR_CHECK";

    /// <summary>What was done, for <c>bench</c> and diagnostics (e.g. "AVX-512 kernels: MKL's vendor test bypassed on this AuthenticAMD CPU").</summary>
    public static string Status { get; private set; } = "not checked (libtorch not loaded yet)";

    /// <summary>Whether MKL now chooses its kernels by the CPU's features where it would have gone by its vendor.</summary>
    public static bool Bypassed { get; private set; }

    // The function as MKL 2024/2025 builds it: return a cached answer when it is set (mov eax, [rip+x]; test eax, eax; js +1; ret).
    static readonly byte?[] ExpectedStart = { 0x8B, 0x05, null, null, null, null, 0x85, 0xC0, 0x78, 0x01, 0xC3 };
    static readonly byte[] ReturnOne = { 0xB8, 0x01, 0x00, 0x00, 0x00, 0xC3 };      // mov eax, 1; ret

    /// <summary>Applies the bypass where it applies (after libtorch is loaded, before its first GEMM); never throws.</summary>
    internal static void Apply()
    {
        try { Status = TryApply(); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            Status = $"MKL's kernels as it chooses them (the bypass failed: {e.GetType().Name})";
        }
    }

    static unsafe string TryApply()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64 || !X86Base.IsSupported)
            return "MKL's kernels as it chooses them (not Linux on x86-64)";
        string vendor = Vendor();
        if (vendor == "GenuineIntel") return "MKL's kernels as it chooses them (an Intel CPU: MKL picks its best path)";
        if (!Avx512F.IsSupported) return $"MKL's kernels as it chooses them ({vendor}, no AVX-512: MKL's path for it is AVX2 either way)";
        if (Environment.GetEnvironmentVariable(OptOutVariable) == "keep") return $"MKL's vendor test kept ({OptOutVariable}=keep): AVX2 kernels on this {vendor} CPU";
        IntPtr library = DlOpen("libtorch_cpu.so", RtldNow | RtldNoLoad);
        if (library == IntPtr.Zero) return "MKL's kernels as it chooses them (libtorch_cpu.so not loaded)";
        IntPtr function = DlSym(library, "mkl_serv_intel_cpu_true");
        if (function == IntPtr.Zero) return "MKL's kernels as it chooses them (this libtorch has no mkl_serv_intel_cpu_true)";
        byte* code = (byte*)function;
        for (int i = 0; i < ExpectedStart.Length; i++)
            if (ExpectedStart[i] is { } b && code[i] != b)
                return "MKL's kernels as it chooses them (mkl_serv_intel_cpu_true is not the code this bypass knows)";
        long page = Environment.SystemPageSize;
        var start = new IntPtr(function.ToInt64() & ~(page - 1));
        var length = (UIntPtr)(ulong)(2 * page);
        if (MProtect(start, length, ProtRead | ProtWrite | ProtExec) != 0) return "MKL's kernels as it chooses them (its code page could not be made writable)";
        for (int i = 0; i < ReturnOne.Length; i++) code[i] = ReturnOne[i];
        MProtect(start, length, ProtRead | ProtExec);
        Bypassed = true;
        return $"AVX-512 kernels: MKL's vendor test bypassed on this {vendor} CPU (it has AVX-512F; {OptOutVariable}=keep leaves MKL's AVX2 choice)";
    }

    static string Vendor()
    {
        var (_, ebx, ecx, edx) = X86Base.CpuId(0, 0);
        var bytes = new byte[12];
        BitConverter.TryWriteBytes(bytes.AsSpan(0, 4), ebx);
        BitConverter.TryWriteBytes(bytes.AsSpan(4, 4), edx);
        BitConverter.TryWriteBytes(bytes.AsSpan(8, 4), ecx);
        return Encoding.ASCII.GetString(bytes);
    }

    const int RtldNow = 2, RtldNoLoad = 4, ProtRead = 1, ProtWrite = 2, ProtExec = 4;

    [DllImport("libc", EntryPoint = "dlopen")] static extern IntPtr DlOpen(string file, int mode);
    [DllImport("libc", EntryPoint = "dlsym")] static extern IntPtr DlSym(IntPtr handle, string name);
    [DllImport("libc", EntryPoint = "mprotect")] static extern int MProtect(IntPtr address, UIntPtr length, int protection);
}
