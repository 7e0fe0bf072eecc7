namespace Mechanist.Runtime;

/// <summary>This process's memory as Linux reports it (/proc): resident set, its high-water mark, and what the machine has free.</summary>
public static class ProcessMemory
{
    /// <summary>A "Key:   value kB" line of a /proc file, in bytes; null when absent (or not Linux).</summary>
    static long? ProcBytes(string file, string key)
    {
        try
        {
            foreach (var line in File.ReadLines(file))
                if (line.StartsWith(key + ":", StringComparison.Ordinal)) return long.Parse(line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>Resident bytes of this process now (0 where /proc is missing).</summary>
    public static long Resident() => ProcBytes("/proc/self/status", "VmRSS") ?? 0;

    /// <summary>The most resident bytes since start or since <see cref="ResetPeak"/>.</summary>
    public static long Peak() => ProcBytes("/proc/self/status", "VmHWM") ?? 0;

    /// <summary>
    /// An environment variable capping, in MB, what this process may hold in all (e.g. a Slurm allocation's --mem): the sizer allows
    /// the smaller of it and what the machine has.
    /// </summary>
    public const string LimitVariable = "MECHANIST_MEMORY_LIMIT_MB";

    /// <summary>
    /// The most this process may hold in all: what it holds now plus the machine's MemAvailable, or less under
    /// <see cref="LimitVariable"/>; <see cref="long.MaxValue"/> where unknown.
    /// </summary>
    public static long Allowed()
    {
        long free = MachineAvailable();
        long machine = free == long.MaxValue ? free : Resident() + free;
        if (Environment.GetEnvironmentVariable(LimitVariable) is { } limit && long.TryParse(limit, out long mb) && mb > 0)
            return Math.Min(machine, mb * (1L << 20));
        return machine;
    }

    /// <summary>What the machine can still give without swapping (MemAvailable); <see cref="long.MaxValue"/> where unknown.</summary>
    public static long MachineAvailable() => ProcBytes("/proc/meminfo", "MemAvailable") ?? long.MaxValue;

    /// <summary>The machine's memory (MemTotal); null where unknown.</summary>
    public static long? MachineTotal() => ProcBytes("/proc/meminfo", "MemTotal");

    /// <summary>Resets the kernel's peak mark to the current resident size (writing 5 to /proc/self/clear_refs).</summary>
    public static void ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int MallocTrim(nuint pad);

    /// <summary>Returns freed native heap to the OS (glibc keeps it otherwise), so that resident size measures what is live.</summary>
    public static void ReleaseFreedHeap()
    {
        try { MallocTrim(0); } catch (DllNotFoundException) { } catch (EntryPointNotFoundException) { }
    }

    /// <summary>Collects garbage, then <see cref="ReleaseFreedHeap"/>.</summary>
    public static void Settle()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        ReleaseFreedHeap();
    }
}
