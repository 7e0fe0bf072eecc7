using Mechanist.Dictionaries;
using Mechanist.IO;
using Mechanist.Tests.Cli;

namespace Mechanist.Tests.Cluster;

/// <summary>Corpus-scale jobs on a real one-node Slurm cluster.</summary>
[Collection("slurm")]
public sealed class SlurmTests
{
    static readonly string[] HarvestArgs = { "harvest", "--texts", "300", "--tokens", "1000000", "--chunk-tokens", "1500" };

    /// <summary>Every row of a harvest as (token id, rounded activation sum): the token multiset plus a fingerprint of each row.</summary>
    static List<(long, double)> Rows(string dir)
    {
        var m = HarvestJob.ReadManifest(Path.Combine(dir, "manifest.json"));
        var rows = new List<(long, double)>();
        foreach (var c in m.Chunks)
        {
            using var f = SafetensorsFile.Open(Path.Combine(dir, c.File));
            using var ids = f.Read("token_ids");
            using var sum = m.Hooks.Select(h => f.Read(h).sum(new long[] { 1 })).Aggregate((a, b) => a + b);
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
        var (code, _, err) = CliRunner.Run(HarvestArgs.Concat(new[] { "--out", single.Path }).ToArray());
        Assert.True(code == 0, err);
        Assert.Equal(0, CliRunner.Run("harvest", "merge", single.Path).Code);

        string program = $"{Environment.ProcessPath} {Path.Combine(AppContext.BaseDirectory, "Mechanist.Cli.dll")}";
        string previous = Environment.GetEnvironmentVariable("SLURM_CONF") ?? "";
        Environment.SetEnvironmentVariable("SLURM_CONF", cluster.Conf);
        try
        {
            // First submission: task 2 is left out, as if it had failed; the merge runs and names the missing shard.
            string[] Submit(params string[] extra) => new[] { "slurm", "submit", "--shards", "4", "--cpus-per-task", "1", "--mechanist", program }
                .Concat(extra).Append("--").Concat(HarvestArgs).Concat(new[] { "--out", sharded.Path }).ToArray();
            (code, var stdout, err) = CliRunner.Run(Submit("--tasks", "0,1,3"));
            Assert.True(code == 0, err);
            var ids = System.Text.RegularExpressions.Regex.Matches(stdout, @"job (\d+)").Select(m => m.Groups[1].Value).ToArray();
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
            ids = System.Text.RegularExpressions.Regex.Matches(stdout, @"job (\d+)").Select(m => m.Groups[1].Value).ToArray();
            cluster.Wait(TimeSpan.FromMinutes(5), ids);
            Assert.True(File.Exists(Path.Combine(sharded.Path, "manifest.json")), File.ReadAllText(Directory.GetFiles(logs, $"merge-{ids[1]}.log").Single()));
        }
        finally { Environment.SetEnvironmentVariable("SLURM_CONF", previous.Length > 0 ? previous : null); }

        // The merged shards hold exactly the rows of the single process: nothing lost, nothing twice.
        Assert.Equal(Rows(single.Path), Rows(sharded.Path));
        var merged = HarvestJob.ReadManifest(Path.Combine(sharded.Path, "manifest.json"));
        Assert.Equal(4, merged.ShardCount);
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
