using System.CommandLine;
using System.Text.Json;
using Mechanist.IO;
using Mechanist.Models;
using Mechanist.Reporting;
using static TorchSharp.torch;

namespace Mechanist.Cli.Bench;

/// <summary>
/// <c>mechanist bench</c>: forward speed, cache and hook overhead, generation, load time and memory on a
/// random GPT-2-small model, the machine's GEMM throughput, and the analyses; optionally the PyTorch
/// peer on the very same weights, with ratios, written to BENCHMARKS.md.
/// </summary>
public sealed partial class BenchCommand : ICliCommand
{
    /// <summary>One measured row.</summary>
    public sealed record Row(string Name, double MedianMs, double MinMs, double? PeerMedianMs = null, string? Note = null)
    {
        /// <summary>Mechanist / peer (lower is better for Mechanist).</summary>
        public double? Ratio => PeerMedianMs is { } p && p > 0 ? MedianMs / p : null;
    }

    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var repeats = new Option<int>("--repeats") { Description = "Timed repetitions per row.", DefaultValueFactory = _ => 5 };
        var threads = new Option<int>("--threads") { Description = "Torch threads for both sides (0: all cores).", DefaultValueFactory = _ => 0 };
        var peer = new Option<string>("--peer") { Description = "The PyTorch peer script (bench/peer/gpt2_forward.py), run with /usr/bin/python3 on the same weights." };
        var markdown = new Option<string>("--markdown") { Description = "Write the table to this Markdown file (BENCHMARKS.md)." };
        var fileMb = new Option<int>("--file-mb") { Description = "Size of the safetensors file for the mmap-open row (0: skip).", DefaultValueFactory = _ => 500 };
        var json = CommonOptions.Json();
        var suite = new Option<string>("--suite") { Description = "all; dictionaries (harvesting and dictionary training on the built-in model only); large (Llama-3.2-1B- and Gemma-2-2B-shaped random checkpoints in bf16: load, memory, forward, cache, generation); attribution; features; moe; generation (T5 with and without the KV cache); or sizer (each job's --estimate against the job).", DefaultValueFactory = _ => "all" };
        suite.AcceptOnlyFromAmong("all", "dictionaries", "large", "attribution", "features", "moe", "generation", "sizer");
        var tokenCounts = new Option<string>("--attribution-tokens") { Description = "Prompt lengths of the attribution suite.", DefaultValueFactory = _ => "64,128,512" };
        var visit = new Option<int>("--attribution-features") { Description = "Features the attribution suite's graphs visit (circuit-tracer's CLI default is 7,500).", DefaultValueFactory = _ => 1000 };
        var cmd = new Command("bench", "Benchmarks against a PyTorch peer and the machine's GEMM limit.") { repeats, threads, peer, markdown, fileMb, json, suite, tokenCounts, visit };
        cmd.SetAction(parse =>
        {
            int t = parse.GetValue(threads) is > 0 and var tt ? tt : Environment.ProcessorCount;
            // The thread count is the process's: set for the run, restored after it.
            using var threadScope = new TorchThreads(t);
            var gemm = new GemmRates();
            int n = Math.Max(1, parse.GetValue(repeats));
            string dir = Path.Combine(Path.GetTempPath(), "mechanist-bench-" + Guid.NewGuid().ToString("N"));
            try
            {
                var summary = new Dictionary<string, string>();
                List<Row> rows;
                if (parse.GetValue(suite) == "dictionaries")
                {
                    using var toy = HookedTransformer.Load(BuiltInModels.DefaultPath());
                    rows = DictionaryRows(toy, n).ToList();
                }
                else if (parse.GetValue(suite) == "attribution")
                {
                    var lengths = parse.GetValue(tokenCounts)!.Split(',').Select(x => int.TryParse(x, out int v) && v > 1 ? v : throw new MechanistException($"--attribution-tokens: '{x}' is not a length above 1")).ToArray();
                    rows = AttributionScaleRows(lengths, Math.Max(1, parse.GetValue(visit)), ctx, summary).Select(r => { ctx.Err.WriteLine($"  {r.Name}: {r.MedianMs:F0} ms; {r.Note}"); return r; }).ToList();
                }
                else if (parse.GetValue(suite) == "moe")
                    rows = MoeRows(n).Select(r => { ctx.Err.WriteLine($"  {r.Name}: {r.MedianMs:F0} ms; {r.Note}"); return r; }).ToList();
                else if (parse.GetValue(suite) == "generation")
                    rows = T5GenerationRows(dir).Select(r => { ctx.Err.WriteLine($"  {r.Name}: {r.MedianMs:F0} ms; {r.Note}"); return r; }).ToList();
                else if (parse.GetValue(suite) == "sizer")
                    rows = SizerRows(dir).Select(r => { ctx.Err.WriteLine($"  {r.Name}: {r.MedianMs:F0} ms; {r.Note}"); return r; }).ToList();
                else if (parse.GetValue(suite) == "features")
                    rows = FeatureRows(dir).Select(r => { ctx.Err.WriteLine($"  {r.Name}: {r.MedianMs:F0} ms; {r.Note}"); return r; }).ToList();
                else if (parse.GetValue(suite) == "large")
                    rows = LargeModelRows(dir, Math.Min(n, 3), ctx, summary).Select(r => { ctx.Err.WriteLine($"  {r.Name}: {r.MedianMs:F0} ms; {r.Note}"); return r; }).ToList();
                else rows = Measure(dir, n, parse.GetValue(fileMb), ctx, gemm, out summary);
                if (parse.GetValue(peer) is { } script) AddPeer(rows, summary, script, dir, t, n, ctx, gemm);
                if (parse.GetValue(json)) ctx.Out.WriteLine(JsonSerializer.Serialize(new { rows, summary }, JsonFormat.Options));
                else
                {
                    ctx.Out.WriteLine($"{"row",-40} {"median ms",10} {"peer ms",10} {"ratio",7}  note");
                    foreach (var r in rows) ctx.Out.WriteLine($"{r.Name,-40} {r.MedianMs,10:F1} {r.PeerMedianMs?.ToString("F1") ?? "",10} {r.Ratio?.ToString("F2") ?? "",7}  {r.Note}");
                    foreach (var (k, v) in summary) ctx.Out.WriteLine($"{k}: {v}");
                }
                if (parse.GetValue(markdown) is { } md)
                {
                    // A peer whose BLAS runs far below this machine's would flatter every ratio: refuse to publish it.
                    if (parse.GetValue(peer) is not null && (double.IsNaN(gemm.Peer) || gemm.Peer < 0.5 * gemm.Own))
                        throw new MechanistException($"the peer's GEMM ({gemm.Peer / 1e9:F0} GFLOP/s) is below half of libtorch's on this machine ({gemm.Own / 1e9:F0} GFLOP/s): its BLAS is misconfigured " +
                            "(install libopenblas0-pthread; see the 'peer BLAS' line), so BENCHMARKS.md was not written");
                    string which = parse.GetValue(suite)!;
                    string? old = File.Exists(md) ? File.ReadAllText(md) : null;
                    AtomicFile.WriteText(md, which == "all" ? Markdown(rows, summary, t) + KeptSections(old) : WithSection(old, which, SuiteMarkdown(which, rows, summary, t)));
                    ctx.Err.WriteLine($"wrote {md}");
                }
            }
            finally
            {
                foreach (var d in new[] { dir, dir + "-llama" }) if (Directory.Exists(d)) Directory.Delete(d, true);
            }
            return 0;
        });
        return cmd;
    }
}

/// <summary>The GEMM rates of one bench run (FLOP/s; NaN until measured): ours, and the peer's.</summary>
sealed class GemmRates
{
    public double Own = double.NaN;
    public double Peer = double.NaN;
}

/// <summary>Sets libtorch's intra-op thread count for a scope and restores the previous count after it.</summary>
sealed class TorchThreads : IDisposable
{
    readonly int _previous = get_num_threads();

    public TorchThreads(int threads) => set_num_threads(threads);

    public void Dispose() => set_num_threads(_previous);
}
