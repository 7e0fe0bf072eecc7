using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Mechanist.Models;
using Mechanist.Web;

namespace Mechanist.Tests.Web;

/// <summary>Traces in the workbench run at once, and both land in the graph folder's index.</summary>
public sealed class ConcurrentTraceTests
{
    [Fact]
    public async Task TwoTracesRunAtOnceAndBothAreIndexed()
    {
        // Each trace, at its first progress, waits until the other has made progress too: they meet only if both run at once
        // (a lock around whole traces would leave the second waiting for the first, and the first waiting here until it gives up).
        using var both = new CountdownEvent(2);
        var met = new System.Collections.Concurrent.ConcurrentBag<bool>();
        var seen = new System.Collections.Concurrent.ConcurrentDictionary<int, bool>();
        var observer = new RecordingObserver
        {
            OnProgress = _ =>
            {
                if (!seen.TryAdd(Environment.CurrentManagedThreadId, true)) return;
                both.Signal();
                met.Add(both.Wait(TimeSpan.FromSeconds(60)));
            },
        };
        using var dir = new TempDir();
        string modelDir = Path.Combine(SharedData.RepoRoot, "models", "toy-4l");
        await using var server = WorkbenchServer.Create(new[] { HookedTransformer.Load(modelDir) }, new WorkbenchOptions
        {
            Port = 0, MaxConcurrentAnalyses = 2, QueueTimeout = TimeSpan.FromSeconds(60), GraphDir = dir.Path, Observer = observer,
            Transcoders = new Dictionary<string, string> { ["toy-4l"] = Path.Combine(modelDir, "clt") },
        });
        await server.StartAsync();
        using var client = new HttpClient { BaseAddress = new Uri(server.Url), Timeout = TimeSpan.FromSeconds(300) };
        string[] prompts = { "The capital of the state containing Dallas is", "The capital of the state containing Salem is" };
        var answers = await Task.WhenAll(prompts.Select(p => client.PostAsJsonAsync("/api/graph", new { prompt = p, maxFeatureNodes = 50 })));
        Assert.All(answers, a => Assert.Equal(HttpStatusCode.OK, a.StatusCode));
        Assert.Equal(new[] { true, true }, met.ToArray());
        var index = JsonDocument.Parse(await client.GetStringAsync("/api/graphs")).RootElement.GetProperty("graphs");
        Assert.Equal(2, index.GetArrayLength());
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tracing", SearchOption.AllDirectories));
    }
}
