using Mechanist.Cluster;
using Mechanist.Tensors;
using Mechanist.Dictionaries;
using Mechanist.IO;
using Mechanist.Tests.Cli;

namespace Mechanist.Tests.Cluster;

/// <summary>Corpus-scale jobs on a real one-node Slurm cluster.</summary>
[Collection("slurm")]
public sealed class SlurmTests
{
    static readonly string[] HarvestArgs = { "harvest", "--texts", "300", "--tokens", "1000000", "--chunk-tokens", "1500" };

    /// <summary>Runs a harvest in this process and merges it: the single-process reference.</summary>
    static void HarvestOnce(string[] harvest, string dir)
    {
        var (code, _, err) = CliRunner.Run(harvest.Concat(new[] { "--out", dir }).ToArray());
        Assert.True(code == 0, err);
        Assert.Equal(0, CliRunner.Run("harvest", "merge", dir).Code);
    }

    /// <summary>Every row of a harvest as (token id, rounded activation sum): the token multiset plus a fingerprint of each row.</summary>
    static List<(long, double)> Rows(string dir)
    {
        var m = HarvestJob.ReadManifest(Path.Combine(dir, "manifest.json"));
        var rows = new List<(long, double)>();
        foreach (var c in m.Chunks)
        {
            using var f = SafetensorsFile.Open(Path.Combine(dir, c.File));
            using var ids = f.Read("token_ids");
            using var sum = m.Hooks.Select(h => f.Read(h).sum(new long[] { 1 })).Aggregate((a, b) => a.Add(b));
            rows.AddRange(ids.data<long>().ToArray().Zip(sum.data<float>().ToArray().Select(s => Math.Round(s, 2))));
        }
        rows.Sort();
        return rows;
    }

    [Fact]
    public void AHarvestAsAFourTaskArrayPlusMergeEqualsOneProcessAndAMissingTaskIsResubmittedAlone()
    {
        using var cluster = new SlurmCluster();
        using var single = new TempDir(); using var sharded = new TempDir();
        HarvestOnce(HarvestArgs, single.Path);
        using (cluster.AsDefault())
        {
            // First submission: task 2 is left out, as if it had failed; the merge runs and names the missing shard.
            string[] Submit(params string[] extra) => new[] { "slurm", "submit", "--shards", "4", "--cpus-per-task", "1", "--mechanist", SlurmCluster.Mechanist }
                .Concat(extra).Append("--").Concat(HarvestArgs).Concat(new[] { "--out", sharded.Path }).ToArray();
            var (code, stdout, err) = CliRunner.Run(Submit("--tasks", "0,1,3"));
            Assert.True(code == 0, err);
            var ids = SlurmCluster.JobIds(stdout);
            Assert.Equal(2, ids.Length);
            cluster.Wait(TimeSpan.FromMinutes(5), ids);
            var logs = Path.Combine(sharded.Path, "slurm", "logs");
            Assert.Equal(3, Directory.GetFiles(logs, "task-*.log").Length);
            Assert.Contains("shard(s) 2 of 4 are missing", File.ReadAllText(Directory.GetFiles(logs, $"merge-{ids[1]}.log").Single()));
            Assert.False(File.Exists(Path.Combine(sharded.Path, "manifest.json")));

            // Resubmitting submits only the shard that is not complete; the merge then succeeds.
            (code, stdout, err) = CliRunner.Run(Submit());
            Assert.True(code == 0, err);
            Assert.Contains("shard(s) 0, 1, 3 of 4 are complete", err);
            Assert.Contains("tasks 2 of 4", stdout);
            ids = SlurmCluster.JobIds(stdout);
            cluster.Wait(TimeSpan.FromMinutes(5), ids);
            Assert.True(File.Exists(Path.Combine(sharded.Path, "manifest.json")), File.ReadAllText(Directory.GetFiles(logs, $"merge-{ids[1]}.log").Single()));
        }

        // The merged shards hold exactly the rows of the single process: nothing lost, nothing twice.
        Assert.Equal(Rows(single.Path), Rows(sharded.Path));
        var merged = HarvestJob.ReadManifest(Path.Combine(sharded.Path, "manifest.json"));
        Assert.Equal(4, merged.ShardCount);
    }

    [Fact]
    public void AnArrayTaskKilledMidWayIsResubmittedAloneAndResumesWithNothingLostOrTwice()
    {
        using var cluster = new SlurmCluster();
        using var single = new TempDir(); using var sharded = new TempDir();
        string[] harvest = { "harvest", "--texts", "5000", "--tokens", "10000000", "--chunk-tokens", "1000" };
        HarvestOnce(harvest, single.Path);
        using (cluster.AsDefault())
        {
            string[] submit = new[] { "slurm", "submit", "--shards", "2", "--cpus-per-task", "1", "--mechanist", SlurmCluster.Mechanist, "--" }.Concat(harvest).Concat(new[] { "--out", sharded.Path }).ToArray();
            // Task 1 is held by a pause file after each chunk it commits: it is killed at a known point, never racing its own end.
            Directory.CreateDirectory(sharded.Path);
            string pause = Path.Combine(sharded.Path, ShardedJobs.PauseFileName(new ShardPlan(1, 2)));
            File.WriteAllText(pause, "");
            var (code, stdout, err) = CliRunner.Run(submit);
            Assert.True(code == 0, err);
            var ids = SlurmCluster.JobIds(stdout);
            string manifest = Path.Combine(sharded.Path, HarvestJob.ManifestName(1, 2));
            var deadline = DateTime.UtcNow.AddMinutes(3);
            while (!(File.Exists(manifest) && HarvestJob.ReadManifest(manifest).Chunks.Length >= 1))
            {
                Assert.True(DateTime.UtcNow < deadline, "task 1 wrote no chunk in 3 minutes");
                Thread.Sleep(100);
            }
            cluster.Run("scancel", $"{ids[0]}_1");
            cluster.Wait(TimeSpan.FromMinutes(5), ids);
            File.Delete(pause);
            var killed = HarvestJob.ReadManifest(manifest);
            Assert.False(killed.Complete);
            Assert.Single(killed.Chunks);
            Assert.False(File.Exists(Path.Combine(sharded.Path, "manifest.json")));   // the merge never ran

            // The same command again: shard 0 is complete and skipped, shard 1 resumes after its last complete chunk.
            (code, stdout, err) = CliRunner.Run(submit);
            Assert.True(code == 0, err);
            Assert.Contains("tasks 1 of 2", stdout);
            ids = SlurmCluster.JobIds(stdout);
            cluster.Wait(TimeSpan.FromMinutes(5), ids);
            Assert.True(File.Exists(Path.Combine(sharded.Path, "manifest.json")));
            var resumed = HarvestJob.ReadManifest(manifest);
            Assert.Equal(killed.Chunks.Select(c => c.File), resumed.Chunks.Take(killed.Chunks.Length).Select(c => c.File));
        }
        Assert.Equal(Rows(single.Path), Rows(sharded.Path));
    }

    [Fact]
    public void FeatureDashboardsAndTheCorpusMicroscopeRunAsArraysAndMergeIntoTheSingleProcessResults()
    {
        using var tmp = new TempDir();
        string[] features = { "features", "build", "--texts", "240", "--top-k", "6", "--per-interval", "2", "--batch-texts", "1" };
        var rng = new Random(3);
        var words = "the cat dog sat on a mat and ran to the park with ball Alice Ben saw big red tree".Split(' ');
        File.WriteAllLines(tmp.File("texts.txt"), Enumerable.Range(0, 120).Select(_ => string.Join(" ", Enumerable.Range(0, rng.Next(5, 16)).Select(_ => words[rng.Next(words.Length)]))));
        string[] microscope = { "microscope", "--text-file", tmp.File("texts.txt") };
        string Dir(string name) => Path.Combine(tmp.Path, name);
        var (code, _, err) = CliRunner.Run(features.Concat(new[] { "--out", Dir("features-single") }).ToArray());
        Assert.True(code == 0, err);
        (code, _, err) = CliRunner.Run(microscope.Concat(new[] { "--out", Dir("microscope-single") }).ToArray());
        Assert.True(code == 0, err);

        using var cluster = new SlurmCluster();
        using (cluster.AsDefault())
        {
            string[] Submit(int shards, string[] command, string outDir) => new[] { "slurm", "submit", "--shards", shards.ToString(), "--cpus-per-task", "1", "--mechanist", SlurmCluster.Mechanist, "--" }
                .Concat(command).Concat(new[] { "--out", outDir }).ToArray();
            (code, var stdout, err) = CliRunner.Run(Submit(3, features, Dir("features-slurm")));
            Assert.True(code == 0, err);
            var featureJobs = SlurmCluster.JobIds(stdout);
            (code, stdout, err) = CliRunner.Run(Submit(2, microscope, Dir("microscope-slurm")));
            Assert.True(code == 0, err);
            var microscopeJobs = SlurmCluster.JobIds(stdout);
            cluster.Wait(TimeSpan.FromMinutes(5), featureJobs.Concat(microscopeJobs).ToArray());
            string Logs(string d) => string.Join("\n", Directory.GetFiles(Path.Combine(d, "slurm", "logs")).Select(File.ReadAllText));
            Assert.True(File.Exists(Path.Combine(Dir("features-slurm"), "features.db")), Logs(Dir("features-slurm")));
            Assert.True(File.Exists(Path.Combine(Dir("microscope-slurm"), "report.json")), Logs(Dir("microscope-slurm")));
        }

        // The feature stores hold the same counts, histograms and examples (each text is run alone, so shards see the same numbers).
        var single = Mechanist.Features.FeatureStore.Open(Path.Combine(Dir("features-single"), "features.db"));
        var merged = Mechanist.Features.FeatureStore.Open(Path.Combine(Dir("features-slurm"), "features.db"));
        Assert.Equal(3, merged.Info.ShardCount);
        Assert.Equal(single.Info.Tokens, merged.Info.Tokens);
        var (a, _) = single.ReadSketches(); var (b, _) = merged.ReadSketches();
        for (int l = 0; l < a.Length; l++)
        {
            Assert.Equal(a[l].Count, b[l].Count);
            Assert.Equal(a[l].Histogram, b[l].Histogram);
            for (int f = 0; f < a[l].DDict; f++)
                Assert.Equal((a[l].Top[f] ?? new()).Select(e => (e.Text, e.Position, e.Activation)), (b[l].Top[f] ?? new()).Select(e => (e.Text, e.Position, e.Activation)));
            for (int i = 0; i < a[l].Sampled.Length; i++)
                Assert.Equal((a[l].Sampled[i] ?? new()).Select(e => (e.Text, e.Position)), (b[l].Sampled[i] ?? new()).Select(e => (e.Text, e.Position)));
        }
        // The microscope: the same report from merged moments.
        var r1 = Mechanist.Microscope.MicroscopeShards.Merge(null, Dir("microscope-single"));
        var r2 = System.Text.Json.JsonSerializer.Deserialize<Mechanist.Microscope.MicroscopeReport>(File.ReadAllText(Path.Combine(Dir("microscope-slurm"), "report.json")), Mechanist.Reporting.JsonFormat.Options)!;
        Assert.Equal(r1.Tokens, r2.Tokens);
        foreach (var (x, y) in new[] { (r1.Linearity, r2.Linearity), (r1.LinearityCentred, r2.LinearityCentred), (r1.IntrinsicDimension, r2.IntrinsicDimension), (r1.Anisotropy, r2.Anisotropy), (r1.LensLoss, r2.LensLoss) })
            for (int i = 0; i < x.Length; i++) Assert.True(Math.Abs(x[i] - y[i]) < 1e-9, $"{x[i]} vs {y[i]}");
    }

    [Fact]
    public void ScriptsAndTheKubernetesJobAreWrittenWithoutACluster()
    {
        using var dir = new TempDir();
        var (code, stdout, err) = CliRunner.Run(new[] { "slurm", "submit", "--shards", "3", "--dry-run", "--mem", "8G", "--time", "01:00:00", "--mechanist", "/opt/mechanist" }
            .Append("--").Concat(HarvestArgs).Concat(new[] { "--out", dir.Path }).ToArray());
        Assert.True(code == 0, err);
        string array = File.ReadAllText(Path.Combine(dir.Path, "slurm", "array.sbatch"));
        Assert.Contains("#SBATCH --array=0,1,2", array);
        Assert.Contains("#SBATCH --mem=8G", array);
        Assert.Contains($"exec /opt/mechanist harvest --texts 300 --tokens 1000000 --chunk-tokens 1500 --out {dir.Path} --shard \"${{SLURM_ARRAY_TASK_ID}}/3\"", array);
        Assert.Contains($"exec /opt/mechanist harvest merge {dir.Path}", File.ReadAllText(Path.Combine(dir.Path, "slurm", "merge.sbatch")));
        (code, stdout, _) = CliRunner.Run(new[] { "slurm", "k8s", "--shards", "3" }.Append("--").Concat(HarvestArgs).Concat(new[] { "--out", dir.Path }).ToArray());
        Assert.Equal(0, code);
        Assert.Contains("completionMode: Indexed", stdout);
        Assert.Contains("completions: 3", stdout);
        Assert.Contains("$JOB_COMPLETION_INDEX/3", stdout);
        // Bad input: a command that is not shard-aware, --shard given by hand.
        Assert.Equal(2, CliRunner.Run("slurm", "submit", "--shards", "2", "--", "lens", "--prompt", "x").Code);
        (code, _, err) = CliRunner.Run(new[] { "slurm", "submit", "--shards", "2", "--" }.Concat(HarvestArgs).Concat(new[] { "--out", dir.Path, "--shard", "0/2" }).ToArray());
        Assert.Equal(2, code);
        Assert.Contains("leave --shard out", err);
    }
}

/// <summary>Batch tracing: one graph per prompt, sharded, merged, and on Slurm.</summary>
[Collection("slurm")]
public sealed class BatchTraceTests
{
    static string[] Prompts => new[] { "Dallas", "Portland", "Tulsa", "Miami", "Reno" }.Select(c => $"The capital of the state containing {c} is").ToArray();

    static Dictionary<string, string> Graphs(string dir) =>
        Directory.GetFiles(dir, "prompt-*.json").ToDictionary(f => Path.GetFileName(f), f => File.ReadAllText(f));

    [Fact]
    public void ShardsMergeIntoTheGraphsOfOneRunAndSlurmRunsThem()
    {
        using var tmp = new TempDir();
        File.WriteAllLines(tmp.File("prompts.txt"), Prompts);
        string single = Path.Combine(tmp.Path, "single"), two = Path.Combine(tmp.Path, "two"), slurm = Path.Combine(tmp.Path, "slurm");
        string[] Args(string outDir, params string[] extra) => new[] { "trace", "--prompts", tmp.File("prompts.txt"), "--max-feature-nodes", "24", "--out", outDir }.Concat(extra).ToArray();
        var (code, _, err) = CliRunner.Run(Args(single));
        Assert.True(code == 0, err);
        Assert.Equal(5, Graphs(single).Count);
        Assert.Equal(5, System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(single, "graph-metadata.json"))).RootElement.GetProperty("graphs").GetArrayLength());

        // Two shards by hand: merge refuses until both are there, then the graphs are the single run's, byte for byte.
        Assert.Equal(0, CliRunner.Run(Args(two, "--shard", "1/2")).Code);
        (code, _, err) = CliRunner.Run("trace", "merge", two);
        Assert.Equal(2, code);
        Assert.Contains("shard(s) 0 of 2 are missing", err);
        Assert.Equal(0, CliRunner.Run(Args(two, "--shard", "0/2")).Code);
        Assert.Equal(0, CliRunner.Run("trace", "merge", two).Code);
        Assert.Equal(Graphs(single), Graphs(two));
        // A shard of another prompt list is refused by the merge.
        File.WriteAllLines(tmp.File("other.txt"), Prompts.Reverse());
        Assert.Equal(0, CliRunner.Run("trace", "--prompts", tmp.File("other.txt"), "--max-feature-nodes", "24", "--shard", "0/3", "--out", two).Code);
        (code, _, err) = CliRunner.Run("trace", "merge", two);
        Assert.Equal(2, code);
        Assert.Contains("another", err);

        // On Slurm: a 3-task array and the merge.
        using var cluster = new SlurmCluster();
        using (cluster.AsDefault())
        {
            (code, var stdout, err) = CliRunner.Run(new[] { "slurm", "submit", "--shards", "3", "--cpus-per-task", "1", "--mechanist", SlurmCluster.Mechanist, "--" }.Concat(Args(slurm)).ToArray());
            Assert.True(code == 0, err);
            var ids = SlurmCluster.JobIds(stdout);
            cluster.Wait(TimeSpan.FromMinutes(5), ids);
            Assert.True(File.Exists(Path.Combine(slurm, "trace-manifest.json")), string.Join("\n", Directory.GetFiles(Path.Combine(slurm, "slurm", "logs")).Select(File.ReadAllText)));
        }
        Assert.Equal(Graphs(single), Graphs(slurm));
    }
}
