using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Mechanist.IO;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Cli.Commands;

/// <summary>
/// <c>mechanist bench</c>: forward time with and without a full activation cache on a random
/// GPT-2-small-sized model, peak memory, and the time to open (memory-map) a large safetensors file.
/// </summary>
public sealed class BenchCommand : ICliCommand
{
    /// <summary>One measured row.</summary>
    public sealed record Row(string Name, double MedianMs, double MinMs, int Repeats, double RssMb);

    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var repeats = new Option<int>("--repeats") { Description = "Timed repetitions per row.", DefaultValueFactory = _ => 5 };
        var lengths = new Option<string>("--lengths") { Description = "Sequence lengths.", DefaultValueFactory = _ => "128,1024" };
        var fileMb = new Option<int>("--file-mb") { Description = "Size of the safetensors file for the open test (0: skip).", DefaultValueFactory = _ => 500 };
        var threads = new Option<int>("--threads") { Description = "Torch threads (0: default)." };
        var json = CommonOptions.Json();
        var cmd = new Command("bench", "Measure forward speed, cache overhead, memory and checkpoint open time.") { repeats, lengths, fileMb, threads, json };
        cmd.SetAction(parse =>
        {
            if (parse.GetValue(threads) is > 0 and var t) set_num_threads(t);
            int n = Math.Max(1, parse.GetValue(repeats));
            var rows = new List<Row>();
            using var model = RandomModels.Create(RandomModels.Gpt2SmallConfig(), dtype: HookedTransformer.DTypeFor(parse.GetValue(CommonOptions.DType)!));
            ctx.Err.WriteLine($"random GPT-2 small: {model.Weights.ParameterCount:N0} parameters, {get_num_threads()} threads");
            foreach (var len in parse.GetValue(lengths)!.Split(',').Select(int.Parse))
            {
                using var tokens = randint(0, model.Config.VocabSize, new long[] { 1, len });
                rows.Add(Time($"forward 1x{len}", n, () => model.Run(tokens).Dispose()));
                rows.Add(Time($"forward 1x{len} + full cache", n, () => { var (l, c) = model.RunWithCache(tokens); l.Dispose(); c.Dispose(); }));
            }
            if (parse.GetValue(fileMb) is > 0 and var mb) rows.Add(OpenLargeFile(mb));
            if (parse.GetValue(json)) ctx.Out.WriteLine(JsonSerializer.Serialize(rows, JsonOutput.Options));
            else
            {
                ctx.Out.WriteLine($"{"row",-34} {"median ms",10} {"min ms",10} {"RSS MB",8}");
                foreach (var r in rows) ctx.Out.WriteLine($"{r.Name,-34} {r.MedianMs,10:F1} {r.MinMs,10:F1} {r.RssMb,8:F0}");
                ctx.Out.WriteLine($"peak RSS {PeakRssMb():F0} MB");
            }
            return 0;
        });
        return cmd;
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
        return new Row(name, times[times.Count / 2], times[0], repeats, Process.GetCurrentProcess().WorkingSet64 / 1e6);
    }

    static Row OpenLargeFile(int mb)
    {
        string dir = Path.Combine(Path.GetTempPath(), "mechanist-bench-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string path = Path.Combine(dir, "large.safetensors");
            using (var scope = NewDisposeScope())
            {
                long perTensor = 4L * 1024 * 1024; // 16 MB of fp32 each
                var tensors = Enumerable.Range(0, Math.Max(1, mb / 16)).Select(i => KeyValuePair.Create($"layer.{i}.weight", zeros(perTensor)));
                SafetensorsWriter.Write(path, tensors);
            }
            var row = Time($"open {new FileInfo(path).Length / 1e6:F0} MB safetensors", 5, () => SafetensorsFile.Open(path).Dispose());
            return row;
        }
        finally { Directory.Delete(dir, true); }
    }

    static double PeakRssMb()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:")) return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0;
        return double.NaN;
    }
}
