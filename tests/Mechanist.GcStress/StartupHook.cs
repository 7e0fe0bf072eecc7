using System.Diagnostics;

/// <summary>
/// Loaded by the runtime before <c>Main</c> when this assembly is named in <c>DOTNET_STARTUP_HOOKS</c>: starts a background
/// thread that forces a gen-0 collection and runs pending finalizers every <c>MECHANIST_GC_STRESS_US</c> microseconds
/// (default 50); with <c>MECHANIST_GC_STRESS_REPORT</c> set, writes the process's gen-0 collection count to that file at exit. Any temporary object whose native handle is still in use when it becomes unreachable is finalized within
/// microseconds, so a missing <c>GC.KeepAlive</c> shows as a native error instead of once in thousands of runs.
/// </summary>
internal static class StartupHook
{
    /// <summary>The runtime's entry point for startup hooks.</summary>
    public static void Initialize()
    {
        double micros = double.TryParse(Environment.GetEnvironmentVariable("MECHANIST_GC_STRESS_US"), out var v) && v > 0 ? v : 50;
        long ticks = (long)(micros * Stopwatch.Frequency / 1e6);
        var thread = new Thread(() =>
        {
            while (true)
            {
                long start = Stopwatch.GetTimestamp();
                GC.Collect(0, GCCollectionMode.Forced, blocking: true);
                GC.WaitForPendingFinalizers();
                while (Stopwatch.GetTimestamp() - start < ticks) Thread.SpinWait(20);
            }
        }) { IsBackground = true, Name = "gc-stress" };
        thread.Start();
        // For the tests that check the hook works: how many gen-0 collections the process saw.
        if (Environment.GetEnvironmentVariable("MECHANIST_GC_STRESS_REPORT") is { Length: > 0 } report)
            AppDomain.CurrentDomain.ProcessExit += (_, _) => File.WriteAllText(report, GC.CollectionCount(0).ToString());
    }
}
