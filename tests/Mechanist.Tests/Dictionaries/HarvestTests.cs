using Mechanist.Tensors;
using Mechanist.Dictionaries;
using Mechanist.IO;
using Mechanist.Models;
using Mechanist.Tests.Cli;
using static TorchSharp.torch;

namespace Mechanist.Tests.Dictionaries;

/// <summary>Sharded, resumable harvesting and its merge.</summary>
public class HarvestTests
{
    static readonly string Stories = SharedData.PathOf("models", "stories260K", "stories260K.bin");
    static readonly string[] Hooks = { "blocks.1.hook_resid_mid", "blocks.1.hook_mlp_out" };

    static List<string> Texts() => Enumerable.Range(0, 40).Select(i => $"Once upon a time, child {i} saw {i % 7} birds and {i % 3} cats in the park.").ToList();

    /// <summary>Every row of a harvest as (token id, rounded sum of its activations), sorted: the token multiset plus a fingerprint of each row.</summary>
    static List<(long, double)> Rows(string dir, HarvestManifest m)
    {
        var rows = new List<(long, double)>();
        foreach (var c in m.Chunks)
        {
            using var f = SafetensorsFile.Open(Path.Combine(dir, c.File));
            using var ids = f.Read("token_ids");
            using var a = f.Read(Hooks[0]); using var b = f.Read(Hooks[1]);
            using var sums = a.sum(new long[] { 1 }).Add(b.sum(new long[] { 1 }));
            rows.AddRange(ids.data<long>().ToArray().Zip(sums.data<float>().ToArray().Select(s => Math.Round(s, 2))));
        }
        rows.Sort();
        return rows;
    }

    [Fact]
    public void TwoShardsMergedHoldTheSameRowsAsOneRun()
    {
        using var model = HookedTransformer.Load(Stories);
        using var one = new TempDir(); using var two = new TempDir();
        var texts = Texts();
        var single = HarvestJob.Run(model, texts, new HarvestOptions(Hooks, 100_000, ChunkTokens: 300), one.Path);
        HarvestJob.Run(model, texts, new HarvestOptions(Hooks, 100_000, 0, 2, ChunkTokens: 300), two.Path);
        HarvestJob.Run(model, texts, new HarvestOptions(Hooks, 100_000, 1, 2, ChunkTokens: 300), two.Path);
        var merged = HarvestJob.Merge(two.Path);
        Assert.Equal(single.Tokens, merged.Tokens);
        // BOS rows are dropped: the tokens are every text's tokens but its first.
        long expected = texts.Sum(t => model.Tokenizer!.Encode(t).Length - 1);
        Assert.Equal(expected, single.Tokens);
        Assert.Equal(Rows(one.Path, single), Rows(two.Path, merged));
        Assert.True(single.Chunks.Length > 1);
        // The merged harvest trains: it loads with inputs and targets apart.
        using var data = HarvestJob.Load(two.Path, new[] { Hooks[0] }, new[] { Hooks[1] });
        Assert.Equal(merged.Tokens, data.Rows);
    }

    [Fact]
    public void AKilledRunResumesWithoutDuplicatesOrLoss()
    {
        using var model = HookedTransformer.Load(Stories);
        using var whole = new TempDir(); using var killed = new TempDir();
        var texts = Texts();
        var options = new HarvestOptions(Hooks, 100_000, ChunkTokens: 200);
        var reference = HarvestJob.Run(model, texts, options, whole.Path);
        using var cts = new CancellationTokenSource();
        int reports = 0;
        Assert.Throws<OperationCanceledException>(() => HarvestJob.Run(model, texts, options, killed.Path,
            new Mechanist.Training.SyncProgress<(long, long)>(_ => { if (++reports == 2) cts.Cancel(); }), cts.Token));
        var partial = HarvestJob.ReadManifest(Path.Combine(killed.Path, HarvestJob.ManifestName(0, 1)));
        Assert.False(partial.Complete);
        Assert.Equal(2, partial.Chunks.Length);
        var resumed = HarvestJob.Run(model, texts, options, killed.Path);
        Assert.Equal(reference.Tokens, resumed.Tokens);
        Assert.Equal(Rows(whole.Path, reference), Rows(killed.Path, resumed));
        // The chunk files themselves are identical (same text boundaries, same shuffle).
        foreach (var c in reference.Chunks)
            Assert.Equal(File.ReadAllBytes(Path.Combine(whole.Path, c.File)), File.ReadAllBytes(Path.Combine(killed.Path, c.File)));
    }

    [Fact]
    public void MergeRefusesShardsThatDoNotBelongTogether()
    {
        using var model = HookedTransformer.Load(Stories);
        using var dir = new TempDir();
        var texts = Texts();
        HarvestJob.Run(model, texts, new HarvestOptions(Hooks, 100_000, 0, 2, ChunkTokens: 400), dir.Path);
        Assert.Contains("shard(s) 1 of 2 are missing", Assert.Throws<MechanistException>(() => HarvestJob.Merge(dir.Path)).Message);
        // Shard 1 from another corpus.
        HarvestJob.Run(model, texts.Select(t => t + " The end.").ToList(), new HarvestOptions(Hooks, 100_000, 1, 2, ChunkTokens: 400), dir.Path);
        Assert.Contains("comes from another corpus", Assert.Throws<MechanistException>(() => HarvestJob.Merge(dir.Path)).Message);
        // A shard of another plan.
        File.Delete(Path.Combine(dir.Path, HarvestJob.ManifestName(1, 2)));
        HarvestJob.Run(model, texts, new HarvestOptions(Hooks, 100_000, 1, 3, ChunkTokens: 400), dir.Path);
        Assert.Contains("plan of", Assert.Throws<MechanistException>(() => HarvestJob.Merge(dir.Path)).Message);
        // The same folder cannot take another harvest for a shard it already holds.
        Assert.Contains("holds another harvest", Assert.Throws<MechanistException>(() =>
            HarvestJob.Run(model, texts, new HarvestOptions(new[] { "blocks.2.hook_resid_mid" }, 100_000, 0, 2), dir.Path)).Message);
    }

    [Fact]
    public void TheCliHarvestsShardsAndMerges()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir.File("corpus.txt"), Texts());
        foreach (var shard in new[] { "0/2", "1/2" })
        {
            var (code, stdout, err) = CliRunner.Run("harvest", "-m", Stories, "--corpus", dir.File("corpus.txt"), "--hooks", string.Join(",", Hooks), "--shard", shard, "--out", dir.File("h"));
            Assert.True(code == 0, err);
            Assert.Contains($"shard {shard}", stdout);
        }
        var (c2, merged, e2) = CliRunner.Run("harvest", "merge", dir.File("h"));
        Assert.True(c2 == 0, e2);
        Assert.Contains("merged 2 shard(s)", merged);
        var bad = CliRunner.Run("harvest", "-m", Stories, "--corpus", dir.File("corpus.txt"), "--hooks", "blocks.9.hook_resid_mid", "--out", dir.File("x"));
        Assert.Equal(2, bad.Code);
        Assert.Contains("unknown hook point 'blocks.9.hook_resid_mid'", bad.Err);
        bad = CliRunner.Run("harvest", "-m", Stories, "--corpus", dir.File("corpus.txt"), "--shard", "2/2", "--out", dir.File("x"));
        Assert.Equal(2, bad.Code);
        Assert.Contains("--shard '2/2'", bad.Err);
    }
}
