namespace Mechanist.Runtime;

/// <summary>What this machine's CPU can do, read from the kernel rather than assumed.</summary>
public static class CpuFeatures
{
    static readonly Lazy<string[]> Flags = new(ReadFlags);

    /// <summary>
    /// Whether the CPU has bf16 matrix instructions (AVX-512 BF16 or AMX-BF16, from /proc/cpuinfo's flags; Arm's bf16 from
    /// its Features line). Without them libtorch runs bf16 matrix products several times slower than fp32.
    /// </summary>
    public static bool HasBFloat16MatrixInstructions => Flags.Value.Any(f => f is "avx512_bf16" or "amx_bf16" or "bf16");

    /// <summary>One line for --help and bench: what was found and what bf16 weights therefore do.</summary>
    public static string BFloat16Summary => HasBFloat16MatrixInstructions
        ? "this CPU has " + string.Join(", ", Flags.Value.Where(f => f is "avx512_bf16" or "amx_bf16" or "bf16")) + ": bf16 weights compute in bf16"
        : "this CPU has neither avx512_bf16 nor amx_bf16: bf16 weights compute in fp32";

    static string[] ReadFlags()
    {
        try
        {
            if (!File.Exists("/proc/cpuinfo")) return Array.Empty<string>();
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal) || l.StartsWith("Features", StringComparison.Ordinal));
            return line is null ? Array.Empty<string>() : line[(line.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        }
        catch (IOException) { return Array.Empty<string>(); }
        catch (UnauthorizedAccessException) { return Array.Empty<string>(); }
    }
}
