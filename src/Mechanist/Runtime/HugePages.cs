using System.Runtime.InteropServices;

namespace Mechanist.Runtime;

/// <summary>
/// libtorch's CPU allocator takes every large tensor from the kernel afresh (glibc maps allocations above its threshold and unmaps them
/// on free), so each large intermediate pays one page fault per 4 KB it touches. On a virtual machine a fault is dear: a 512-token
/// attribution graph spent 126 s of 152 in the kernel (measured on this project's 2-core VM). libtorch's own switch
/// <c>THP_MEM_ALLOC_ENABLE=1</c> advises transparent huge pages for tensors of 2 MB and more (page-aligned for it; one fault per
/// 2 MB): the same graph then ran 4.3x faster. Mechanist sets that variable in the process's native environment (libc's, which
/// libtorch reads once, at its first allocation; .NET's <see cref="Environment"/> does not reach it) before libtorch is first used,
/// unless the variable is already set (<c>THP_MEM_ALLOC_ENABLE=0</c> keeps 4 KB pages) or the kernel's huge pages are off.
/// </summary>
public static class HugePages
{
    /// <summary>libtorch's variable (1: tensors of 2 MB and more on transparent huge pages).</summary>
    public const string Variable = "THP_MEM_ALLOC_ENABLE";

    /// <summary>The kernel's transparent-huge-page mode.</summary>
    public const string KernelModeFile = "/sys/kernel/mm/transparent_hugepage/enabled";

    /// <summary>What was done, for <c>bench</c> and diagnostics.</summary>
    public static string Status { get; private set; } = "not checked (libtorch not loaded yet)";

    /// <summary>Whether libtorch's large tensors go on huge pages in this process (set here or by the user).</summary>
    public static bool Enabled { get; private set; }

    /// <summary>Sets libtorch's switch where it applies (before libtorch's first allocation); never throws.</summary>
    internal static void Apply()
    {
        try { Status = TryApply(); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or IOException or UnauthorizedAccessException)
        {
            Status = $"4 KB pages (the switch could not be set: {e.GetType().Name})";
        }
    }

    static string TryApply()
    {
        if (!OperatingSystem.IsLinux()) return "the allocator's own pages (not Linux)";
        if (NativeValue() is { } set)
        {
            Enabled = set == "1";
            return Enabled ? $"huge pages for tensors of 2 MB and more ({Variable}=1, set by the user)" : $"4 KB pages ({Variable}={set}, set by the user)";
        }
        string mode = KernelMode() ?? "unknown";
        if (mode is not ("always" or "madvise")) return $"4 KB pages (the kernel's transparent huge pages are {mode})";
        if (SetEnv(Variable, "1", 1) != 0) return "4 KB pages (setenv failed)";
        Enabled = true;
        return $"huge pages for tensors of 2 MB and more ({Variable}=1; the kernel's mode is {mode}; {Variable}=0 keeps 4 KB pages)";
    }

    /// <summary>The kernel's mode (the bracketed word of <see cref="KernelModeFile"/>: always, madvise or never), or null where unreadable.</summary>
    public static string? KernelMode()
    {
        if (!File.Exists(KernelModeFile)) return null;
        string text = File.ReadAllText(KernelModeFile);
        int open = text.IndexOf('['), close = text.IndexOf(']');
        return open >= 0 && close > open ? text[(open + 1)..close] : null;
    }

    /// <summary>The variable as native code sees it (libc's environment), or null where unset.</summary>
    public static string? NativeValue()
    {
        IntPtr value = GetEnv(Variable);
        return value == IntPtr.Zero ? null : Marshal.PtrToStringUTF8(value);
    }

    [DllImport("libc", EntryPoint = "setenv")] static extern int SetEnv(string name, string value, int overwrite);
    [DllImport("libc", EntryPoint = "getenv")] static extern IntPtr GetEnv(string name);
}
