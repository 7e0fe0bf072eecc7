using Mechanist.Attribution;
using Mechanist.Cluster;

namespace Mechanist.Tests.Cluster;

/// <summary>The sharded-job engine on a job without a model (a batch trace whose "graphs" are written by hand).</summary>
public sealed class ShardedJobTests
{
    static readonly string[] Prompts = { "a", "b", "c", "d", "e" };

    static TraceManifest Run(string dir, int index, int count, string model = "m", IReadOnlyList<string>? prompts = null) =>
        TraceBatch.Run(prompts ?? Prompts, dir, index, count, model, "clt", (k, path) => File.WriteAllText(path, $"{{\"metadata\": {{\"slug\": \"p{k}\", \"prompt\": \"{k}\"}}}}"));

    [Fact]
    public void PlansParseAndTakeEveryNthItem()
    {
        Assert.Equal(new ShardPlan(2, 4), ShardPlan.Parse("2/4"));
        Assert.Equal(ShardPlan.Single, ShardPlan.Parse(null));
        Assert.Equal("--shard '4/4': give i/N with 0 ≤ i < N, e.g. 0/4", Assert.Throws<MechanistException>(() => ShardPlan.Parse("4/4")).Message);
        Assert.Equal(new long[] { 1, 4, 7 }, new ShardPlan(1, 3).Select(Enumerable.Range(0, 9)).Select(x => x.Index));
    }

    [Fact]
    public void AShardResumesOnlyItsOwnJobAndAMergeNamesWhatIsWrong()
    {
        using var dir = new TempDir();
        Run(dir.Path, 0, 2);
        // Resuming shard 0 in the same folder for another prompt list is refused, naming what differs.
        var e = Assert.Throws<MechanistException>(() => Run(dir.Path, 0, 2, prompts: new[] { "x" }));
        Assert.Contains("holds another batch trace (prompt list differs)", e.Message);
        Assert.Equal("shard(s) 1 of 2 are missing", Assert.Throws<MechanistException>(() => TraceBatch.Merge(dir.Path)).Message);
        // Shard 1 of another model's batch.
        using (var other = new TempDir())
        {
            Run(other.Path, 1, 2, model: "other");
            File.Copy(Path.Combine(other.Path, TraceBatch.ManifestName(1, 2)), Path.Combine(dir.Path, TraceBatch.ManifestName(1, 2)));
        }
        Assert.Equal($"{TraceBatch.ManifestName(1, 2)} comes from another model than {TraceBatch.ManifestName(0, 2)}", Assert.Throws<MechanistException>(() => TraceBatch.Merge(dir.Path)).Message);
        File.Delete(Path.Combine(dir.Path, TraceBatch.ManifestName(1, 2)));
        Run(dir.Path, 1, 2);
        Assert.True(TraceBatch.Merge(dir.Path).Complete);
        Assert.Equal(new[] { 0, 1 }, ShardedJobs.CompleteShards(TraceBatch.Shards, dir.Path, 2));
    }

    [Fact]
    public async Task APauseFileHoldsAShardAfterACommitUntilItIsRemoved()
    {
        using var dir = new TempDir();
        string pause = Path.Combine(dir.Path, ShardedJobs.PauseFileName(new ShardPlan(0, 1)));
        File.WriteAllText(pause, "");
        var run = Task.Run(() => Run(dir.Path, 0, 1));
        string manifest = Path.Combine(dir.Path, TraceBatch.ManifestName(0, 1));
        var deadline = DateTime.UtcNow.AddMinutes(1);
        while (!(File.Exists(manifest) && TraceBatch.Read(manifest).Done.Length == 1)) { Assert.True(DateTime.UtcNow < deadline); await Task.Delay(20); }
        // Held after its first commit: the state on disk is that commit, and the shard cannot finish.
        Assert.False(run.IsCompleted);
        Assert.Equal(new[] { 0 }, TraceBatch.Read(manifest).Done);
        Assert.Empty(ShardedJobs.CompleteShards(TraceBatch.Shards, dir.Path, 1));
        File.Delete(pause);
        Assert.True((await run.WaitAsync(TimeSpan.FromMinutes(1))).Complete);
    }
}
