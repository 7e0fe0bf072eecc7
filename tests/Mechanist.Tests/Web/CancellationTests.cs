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
        // One slot; a request waits at most 1 s for it. The heads × positions grid below (976 patched runs) takes several seconds.
        await using var server = WorkbenchServer.Create(new[] { HookedTransformer.Load(Path.Combine(SharedData.RepoRoot, "models", "toy-4l")) },
            new WorkbenchOptions { Port = 0, MaxConcurrentAnalyses = 1, QueueTimeout = TimeSpan.FromSeconds(1) });
        await server.StartAsync();
        using var client = new HttpClient { BaseAddress = new Uri(server.Url) };
        using (var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(500)))
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.PostAsJsonAsync("/api/patch",
                new { clean = Clean, corrupt = Corrupt, answer = " Lily", wrong = " Anna", what = "heads-pos" }, cts.Token));
        // Had the grid gone on, this would wait 1 s for the slot and get 503.
        var next = await client.PostAsJsonAsync("/api/run", new { prompt = "Lily saw" });
        Assert.Equal(HttpStatusCode.OK, next.StatusCode);
    }
}
