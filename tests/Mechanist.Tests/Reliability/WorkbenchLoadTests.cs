using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using Mechanist.Tests.Cli;

namespace Mechanist.Tests.Reliability;

/// <summary>
/// The workbench under sustained concurrent load, as its own process (so its memory is its own): several clients mix
/// run, lens, intervene, steer, trace and feature search on loopback for a bounded time. Before SafeOps, one request in
/// thousands answered 500 (a Scalar finalized mid-call).
/// </summary>
public class WorkbenchLoadTests
{
    static long RssBytes(int pid)
    {
        foreach (var line in File.ReadLines($"/proc/{pid}/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return 0;
    }

    static int FreePort()
    {
        var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        l.Start(); int port = ((IPEndPoint)l.LocalEndpoint).Port; l.Stop();
        return port;
    }

    [Fact]
    public async Task ManyClientsMixingEveryAnalysisGetNoServerErrorAndMemoryStaysFlat()
    {
        using var dir = new TempDir();
        var (code, _, err) = CliRunner.Run("features", "build", "--texts", "60", "--out", dir.Path);
        Assert.True(code == 0, err);
        int port = FreePort();
        using var server = CliProcess.Start(new[]
        {
            "serve", "--model", "toy-4l", "--features", dir.File("features.db"), "--graphs", dir.File("graphs"), "--port", port.ToString(),
            "--transcoders", $"toy-4l={Path.Combine(SharedData.RepoRoot, "models", "toy-4l", "clt")}",
        }, gcStress: false);
        var serverErr = server.StandardError.ReadToEndAsync();
        try
        {
            string? banner = await server.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromMinutes(1));
            Assert.True(banner is not null && banner.Contains($":{port}"), $"server did not start: {banner} {(server.HasExited ? await serverErr : "")}");
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(90) };
            string[] prompts = { "The capital of the state containing Dallas is", "When Mary and John went to the store, John gave a drink to", "The capital of Oregon is" };
            Func<int, Task<HttpResponseMessage>>[] requests =
            {
                i => http.PostAsJsonAsync("/api/run", new { prompt = prompts[i % 3] }),
                i => http.PostAsJsonAsync("/api/lens", new { prompt = prompts[i % 3], target = " Austin" }),
                i => http.PostAsJsonAsync("/api/intervene", new { prompt = prompts[0], set = new[] { "0:-1:776=x0" }, generate = 4 }),
                i => http.PostAsJsonAsync("/api/steer", new { prompt = prompts[i % 3], positive = new[] { "happy" }, negative = new[] { "sad" }, generate = 6 }),
                i => http.PostAsJsonAsync("/api/graph", new { prompt = prompts[i % 3], maxFeatureNodes = 20 + i % 7 }),
                i => http.GetAsync($"/api/features/0/search?q={(i % 2 == 0 ? "dallas" : "the")}"),
            };
            var statuses = new System.Collections.Concurrent.ConcurrentBag<(int Kind, HttpStatusCode Status, string Body)>();
            var rss = new List<(double Seconds, long Bytes)>();
            var clock = Stopwatch.StartNew();
            var duration = TimeSpan.FromSeconds(27);
            async Task Client(int c)
            {
                for (int i = c; clock.Elapsed < duration; i += 5)
                {
                    int kind = i % requests.Length;
                    using var response = await requests[kind](i);
                    statuses.Add((kind, response.StatusCode, (int)response.StatusCode >= 500 ? await response.Content.ReadAsStringAsync() : ""));
                }
            }
            var clients = Enumerable.Range(0, 4).Select(Client).ToArray();
            while (!clients.All(t => t.IsCompleted))
            {
                rss.Add((clock.Elapsed.TotalSeconds, RssBytes(server.Id)));
                await Task.WhenAny(Task.WhenAll(clients), Task.Delay(250));
            }
            await Task.WhenAll(clients);

            var failures = statuses.Where(s => (int)s.Status >= 500).ToList();
            Assert.True(failures.Count == 0, $"{failures.Count} of {statuses.Count} requests answered 5xx: {string.Join("; ", failures.Take(3).Select(f => $"{f.Kind} {(int)f.Status} {f.Body}"))}");
            Assert.All(statuses, s => Assert.Equal(HttpStatusCode.OK, s.Status));
            Assert.True(statuses.Select(s => s.Kind).Distinct().Count() == requests.Length, "every kind of request ran");
            // Memory: after a warm-up third, the last third stays within the middle third's peak (plus allocator slack).
            double third = duration.TotalSeconds / 3;
            long middle = rss.Where(r => r.Seconds >= third && r.Seconds < 2 * third).Max(r => r.Bytes);
            long last = rss.Where(r => r.Seconds >= 2 * third).Max(r => r.Bytes);
            Assert.True(last <= middle * 1.10 + 48_000_000, $"RSS grew from {middle / 1e6:F0} MB to {last / 1e6:F0} MB over {statuses.Count} requests");
        }
        finally
        {
            if (!server.HasExited) server.Kill(entireProcessTree: true);
            server.WaitForExit();
        }
    }
}
