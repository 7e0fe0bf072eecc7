using System.Diagnostics;
using Mechanist.IO;
using static TorchSharp.torch;

namespace Mechanist.Cli.Bench;

/// <summary>Timing and memory measurement.</summary>
public sealed partial class BenchCommand
{
    // The process's memory as the library's sizer reads it (Runtime.ProcessMemory), in the units the rows print.
    static long MemAvailableBytes() => Runtime.ProcessMemory.MachineAvailable();
    static double RssMb() => Runtime.ProcessMemory.Resident() / (double)(1 << 20);
    static double PeakRssMb() => Runtime.ProcessMemory.Peak() / (double)(1 << 20);
    static void ReleaseFreedHeap() => Runtime.ProcessMemory.ReleaseFreedHeap();
    static void ResetPeakRss() => Runtime.ProcessMemory.ResetPeak();


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
}
