using Mechanist.Microscope;
using Mechanist.Models;

namespace Mechanist.Tests.Microscope;

/// <summary>The microscope over a corpus in shards: sums over tokens merged exactly, linear maps refitted from merged moments.</summary>
public sealed class MicroscopeShardTests
{
    static string ModelDir => Path.Combine(SharedData.RepoRoot, "models", "toy-4l");
    static readonly string[] Words = "the cat dog sat on a mat and ran to the park with ball Alice Ben saw big red tree".Split(' ');

    static List<string> Corpus(int n, int seed = 1)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => string.Join(" ", Enumerable.Range(0, rng.Next(5, 16)).Select(_ => Words[rng.Next(Words.Length)]))).ToList();
    }

    static void Close(double[] expected, double[] actual, double tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance * Math.Max(1, Math.Abs(expected[i])), $"[{i}] expected {expected[i]}, got {actual[i]}");
    }

    [Fact]
    public void ThreeShardsMergedGiveTheInMemoryReportAndASingleShardsNumbers()
    {
        using var model = HookedTransformer.Load(ModelDir);
        var texts = Corpus(150);
        // The in-memory path: QR least squares on every row, lens means, TwoNN and anisotropy on all rows (fewer than 3,000).
        var reference = MicroscopeRunner.Run(model, texts, new MicroscopeOptions(PerTextViews: 0));
        Assert.True(reference.Tokens < 3000);
        using var one = new TempDir(); using var three = new TempDir();
        MicroscopeShards.Run(model, () => texts, 0, 1, one.Path, checkpointTokens: 200, chunkTexts: 16);
        var single = MicroscopeShards.Merge(model, one.Path);
        for (int s = 0; s < 3; s++) MicroscopeShards.Run(model, () => texts, s, 3, three.Path, chunkTexts: 16);
        var merged = MicroscopeShards.Merge(model, three.Path);

        Assert.Equal(reference.Tokens, merged.Tokens);
        Assert.Equal(reference.Texts, merged.Texts);
        // Refitted from XᵀX, XᵀY (normal equations) against QR on the rows: the same fit.
        Close(reference.Linearity, merged.Linearity, 1e-6);
        Close(reference.LinearityCentred, merged.LinearityCentred, 1e-6);
        Close(reference.LensLoss, merged.LensLoss, 1e-6);
        Close(reference.LensTopTokenLoss, merged.LensTopTokenLoss, 1e-6);
        Close(reference.Anisotropy, merged.Anisotropy, 1e-6);
        Close(reference.IntrinsicDimension, merged.IntrinsicDimension, 1e-6);
        // One process and three shards: the same sums, so the same report up to summation order.
        Close(single.Linearity, merged.Linearity, 1e-9);
        Close(single.LinearityCentred, merged.LinearityCentred, 1e-9);
        Close(single.Anisotropy, merged.Anisotropy, 1e-9);
        Close(single.IntrinsicDimension, merged.IntrinsicDimension, 1e-9);
        Close(single.LensLoss, merged.LensLoss, 1e-9);
    }

    [Fact]
    public void TheSampleForTwoNnIsTheSameRowsWhateverThePlanAndAKilledShardResumes()
    {
        using var model = HookedTransformer.Load(ModelDir);
        var texts = Corpus(200, seed: 2);
        using var one = new TempDir(); using var two = new TempDir(); using var killed = new TempDir();
        // A sample smaller than the corpus: the rows with the smallest hashes of (text, position), whichever shard read them.
        MicroscopeShards.Run(model, () => texts, 0, 1, one.Path, sampleRows: 300);
        MicroscopeShards.Run(model, () => texts, 0, 2, two.Path, sampleRows: 300);
        MicroscopeShards.Run(model, () => texts, 1, 2, two.Path, sampleRows: 300);
        var a = MicroscopeShards.Merge(model, one.Path); var b = MicroscopeShards.Merge(model, two.Path);
        Close(a.IntrinsicDimension, b.IntrinsicDimension, 1e-9);

        using (var cts = new CancellationTokenSource())
        {
            int reports = 0;
            Assert.ThrowsAny<OperationCanceledException>(() => MicroscopeShards.Run(model, () => texts, 0, 1, killed.Path, sampleRows: 300, checkpointTokens: 100, chunkTexts: 8,
                progress: new Mechanist.Training.SyncProgress<(long, long)>(_ => { if (++reports == 10) cts.Cancel(); }), ct: cts.Token));
        }
        var partial = MicroscopeShards.ReadInfo(Path.Combine(killed.Path, MicroscopeShards.ShardName(0, 1)));
        Assert.False(partial.Complete);
        Assert.InRange(partial.TextsDone, 8, 80);
        MicroscopeShards.Run(model, () => texts, 0, 1, killed.Path, sampleRows: 300, checkpointTokens: 100, chunkTexts: 8);
        var resumed = MicroscopeShards.Merge(model, killed.Path);
        Assert.Equal(a.Tokens, resumed.Tokens);
        Close(a.Linearity, resumed.Linearity, 1e-9);
        Close(a.IntrinsicDimension, resumed.IntrinsicDimension, 1e-9);
    }

    [Fact]
    public void AMergeRefusesAnotherCorpusAMissingShardAndAStrangeFile()
    {
        using var model = HookedTransformer.Load(ModelDir);
        using var dir = new TempDir(); using var other = new TempDir();
        MicroscopeShards.Run(model, () => Corpus(30), 0, 2, dir.Path);
        Assert.Contains("shard(s) 1 of 2 are missing", Assert.Throws<MechanistException>(() => MicroscopeShards.Merge(model, dir.Path)).Message);
        MicroscopeShards.Run(model, () => Corpus(30, seed: 9), 1, 2, other.Path);
        File.Copy(Path.Combine(other.Path, MicroscopeShards.ShardName(1, 2)), Path.Combine(dir.Path, MicroscopeShards.ShardName(1, 2)));
        Assert.Contains("another corpus", Assert.Throws<MechanistException>(() => MicroscopeShards.Merge(model, dir.Path)).Message);
        Assert.Contains("another microscope run", Assert.Throws<MechanistException>(() => MicroscopeShards.Run(model, () => Corpus(30, seed: 9), 0, 2, dir.Path)).Message);
        File.WriteAllText(Path.Combine(dir.Path, MicroscopeShards.ShardName(1, 2)), "garbage");
        Assert.Contains("not a microscope shard", Assert.Throws<MechanistException>(() => MicroscopeShards.Merge(model, dir.Path)).Message);
    }
}
