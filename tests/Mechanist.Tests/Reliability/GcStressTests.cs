using System.Diagnostics;

namespace Mechanist.Tests.Reliability;

/// <summary>Runs the CLI as a separate process, optionally with the GC-stress startup hook.</summary>
public static class CliProcess
{
    /// <summary>The GC-stress hook assembly copied beside the tests.</summary>
    public static string StressHook => Path.Combine(AppContext.BaseDirectory, "Mechanist.GcStress.dll");

    /// <summary>A started CLI process (stdout and stderr redirected), from the repository root.</summary>
    public static Process Start(IEnumerable<string> args, bool gcStress, int stressMicros = 50, string? report = null)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = SharedData.RepoRoot,
        };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Mechanist.Cli.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (gcStress)
        {
            psi.Environment["DOTNET_STARTUP_HOOKS"] = StressHook;
            psi.Environment["MECHANIST_GC_STRESS_US"] = stressMicros.ToString();
            if (report is not null) psi.Environment["MECHANIST_GC_STRESS_REPORT"] = report;
        }
        return Process.Start(psi)!;
    }

    /// <summary>Runs to completion (or <paramref name="timeout"/>) and returns the exit code and both outputs.</summary>
    public static (int Code, string Out, string Err) Run(IEnumerable<string> args, bool gcStress, TimeSpan timeout, string? report = null)
    {
        using var p = Start(args, gcStress, report: report);
        var stdout = p.StandardOutput.ReadToEndAsync(); var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            return (-1, stdout.Result, stderr.Result + $"\n(killed after {timeout.TotalSeconds:F0} s)");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}

/// <summary>
/// The commands with hot tensor paths, each run with a background thread forcing a gen-0 collection and pending
/// finalizers every 50 µs (as a busy multithreaded host would). A temporary Scalar or tensor whose native handle is
/// still in use when it becomes unreachable is then finalized mid-call: before SafeOps, microscope and dict train failed
/// every run with "Expected false to be true", "Unknown scalar type" or "INTERNAL ASSERT FAILED at Scalar.h:279".
/// </summary>
public class GcStressTests
{
    public static TheoryData<string, string[]> Commands => new()
    {
        { "trace", new[] { "trace", "--prompt", "The capital of the state containing Dallas is", "--out", "{dir}/graph.json" } },
        { "intervene", new[] { "intervene", "--prompt", "The capital of the state containing Dallas is", "--set", "0:*:776=x0", "--generate", "8" } },
        { "harvest", new[] { "harvest", "--texts", "200", "--tokens", "3000", "--chunk-tokens", "1000", "--out", "{dir}/harvest" } },
        { "dict train", new[] { "dict", "train", "--kind", "transcoder", "--steps", "200", "--batch", "64", "--features", "128", "--tokens", "4000", "--eval-tokens", "500", "--out", "{dir}/dict" } },
        { "features build", new[] { "features", "build", "--texts", "100", "--out", "{dir}/features" } },
        { "microscope", new[] { "microscope", "--generate", "8", "--ctx-steps", "40", "--removal-lengths", "8,16" } },
        // The showcase's swap loop (thousands of swaps, each reading feature rows and a top token) crashed with SIGSEGV under this
        // stress until its temporaries were held; ten cities, a quick corpus scan.
        { "showcase", new[] { "showcase", "--out", "{dir}/showcase", "--cities", "10", "--corpus-lines", "200" } },
        // Shorter paths that a sweep of every command under this stress also ran clean: the encoder-decoder's cached generation,
        // patching both ways, QK, the lens and DLA.
        { "generate (T5)", new[] { "generate", "--model", SharedData.PathOf("golden", "models", "t5"), "--tokens", "1,5,9,13,17", "-n", "6" } },
        { "patch", new[] { "patch", "--clean", "The capital of the state containing Dallas is", "--corrupt", "The capital of the state containing Boston is", "--answer", " Austin", "--what", "heads", "--method", "both" } },
        { "qk", new[] { "qk", "--prompt", "The capital of the state containing Dallas is", "--layer", "2", "--head", "1", "--key", "5" } },
        { "lens", new[] { "lens", "--prompt", "The capital of the state containing Dallas is", "--mid" } },
        { "dla", new[] { "dla", "--prompt", "The capital of the state containing Dallas is", "--answer", " Austin", "--neurons", "5" } },
    };

    [Theory]
    [MemberData(nameof(Commands))]
    public void RunsCleanUnderForcedCollections(string name, string[] args)
    {
        using var dir = new TempDir();
        var (code, _, err) = CliProcess.Run(args.Select(a => a.Replace("{dir}", dir.Path)), gcStress: true, TimeSpan.FromMinutes(4));
        Assert.True(code == 0, $"{name} under GC stress exited {code}: {err[Math.Max(0, err.Length - 2000)..]}");
    }

    [Fact]
    public void TheHookReallyCollects()
    {
        // Loading the model and answering one prompt takes a second or two: with the hook, thousands of gen-0 collections.
        using var dir = new TempDir();
        var (code, _, err) = CliProcess.Run(new[] { "run", "--prompt", "The capital of" }, gcStress: true, TimeSpan.FromMinutes(2), report: dir.File("gc.txt"));
        Assert.True(code == 0, err);
        Assert.True(int.Parse(File.ReadAllText(dir.File("gc.txt"))) > 1000, File.ReadAllText(dir.File("gc.txt")));
    }
}
