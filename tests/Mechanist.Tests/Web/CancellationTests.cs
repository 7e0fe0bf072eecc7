using System.Net;
using System.Net.Http.Json;
using Mechanist.Analysis;
using Mechanist.Models;
using Mechanist.Web;
using static TorchSharp.torch;

namespace Mechanist.Tests.Web;

/// <summary>A long analysis stops when its client goes away, so it does not hold an analysis slot for nobody.</summary>
[Collection("workbench")]
public sealed class CancellationTests
{
    static readonly string Clean = string.Join(" ", Enumerable.Repeat("Lily saw a dog and the dog saw Lily .", 6));
    static readonly string Corrupt = string.Join(" ", Enumerable.Repeat("Lily saw a dog and the dog saw Lily .", 5).Append("Anna saw a dog and the dog saw Lily ."));

    [Fact]
    public void PatchingStopsAtTheNextCellOnceCancelled()
    {
        using var model = HookedTransformer.Load(Path.Combine(SharedData.RepoRoot, "models", "toy-4l"));
        using var scope = NewDisposeScope();
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => PatchingExperiment.Run(model, model.ToTokens(Clean), model.ToTokens(Corrupt), " Lily", " Anna", null, PatchTarget.HeadsPos, ct: cts.Token));
    }

    [Fact]
    public async Task AnAbandonedPatchFreesTheOnlyAnalysisSlot()
    {
        // One slot, no queue. The client gives up once the patch holds the slot; the analysis sees its request aborted and ends
        // as abandoned (not answered after running on for nobody), and the slot serves the next request.
        using var clientGone = new CancellationTokenSource();
        var observer = new RecordingObserver
        {
            OnStarted = (endpoint, aborted) =>
            {
                if (endpoint != "/api/patch") return;
                clientGone.Cancel();
                Assert.True(aborted.WaitHandle.WaitOne(TimeSpan.FromSeconds(60)), "the server never saw the client go away");
            },
        };
        await using var server = WorkbenchServer.Create(new[] { HookedTransformer.Load(Path.Combine(SharedData.RepoRoot, "models", "toy-4l")) },
            new WorkbenchOptions { Port = 0, MaxConcurrentAnalyses = 1, QueueTimeout = TimeSpan.Zero, Observer = observer });
        await server.StartAsync();
        using var client = new HttpClient { BaseAddress = new Uri(server.Url) };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.PostAsJsonAsync("/api/patch",
            new { clean = Clean, corrupt = Corrupt, answer = " Lily", wrong = " Anna", what = "heads-pos" }, clientGone.Token));
        Assert.True(await observer.EndedSignal.WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Equal(("/api/patch", AnalysisOutcome.Abandoned), observer.Ends.Single());
        // With no queue, a slot still held would answer 503 at once.
        var next = await client.PostAsJsonAsync("/api/run", new { prompt = "Lily saw" });
        Assert.Equal(HttpStatusCode.OK, next.StatusCode);
    }
}
