using System.Diagnostics;
using Mechanist.IO;
using static TorchSharp.torch;

namespace Mechanist.Cli.Bench;

/// <summary>Timing and memory measurement.</summary>
public sealed partial class BenchCommand
{
    /// <summary>A "Key:   value kB" line of a /proc file, in kB; null when absent.</summary>
    static long? ProcKb(string file, string key)
    {
        foreach (var line in File.ReadLines(file))
            if (line.StartsWith(key + ":")) return long.Parse(line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)[1]);
        return null;
    }

    static long MemAvailableBytes() => ProcKb("/proc/meminfo", "MemAvailable") * 1024 ?? long.MaxValue;

    static double RssMb() => ProcKb("/proc/self/status", "VmRSS") / 1024.0 ?? double.NaN;

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    static extern int MallocTrim(nuint pad);

    /// <summary>Returns freed native heap to the OS (glibc keeps it otherwise), so RSS deltas measure what is live.</summary>
    static void ReleaseFreedHeap()
    {
        try { MallocTrim(0); } catch (DllNotFoundException) { } catch (EntryPointNotFoundException) { }
    }

    /// <summary>Resets the kernel's peak-RSS mark of this process (writing 5 to /proc/self/clear_refs), so VmHWM measures one step.</summary>
    static void ResetPeakRss()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }


    static Row Time(string name, int repeats, Action action)
    {
        action(); // warm-up
        var times = new List<double>();
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            action();
            times.Add(sw.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        return new Row(name, times[times.Count / 2], times[0]);
    }

    static Row OpenLargeFile(int mb)
    {
        string dir = Path.Combine(Path.GetTempPath(), "mechanist-bench-file-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string path = Path.Combine(dir, "large.safetensors");
            using (var scope = NewDisposeScope())
                SafetensorsWriter.Write(path, Enumerable.Range(0, Math.Max(1, mb / 16)).Select(i => KeyValuePair.Create($"layer.{i}.weight", zeros(4L * 1024 * 1024))));
            var row = Time($"open {new FileInfo(path).Length / 1e6:F0} MB safetensors", 5, () => SafetensorsFile.Open(path).Dispose());
            return row with { Note = "memory-mapped; header parsed and validated" };
        }
        finally { Directory.Delete(dir, true); }
    }

    static double PeakRssMb() => ProcKb("/proc/self/status", "VmHWM") / 1024.0 ?? double.NaN;
}
