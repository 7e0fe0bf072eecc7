namespace Mechanist.Cluster;

/// <summary>A command that runs as shards of one job (<c>--shard i/N</c>) and the command that merges them.</summary>
/// <param name="Name">The job's name (Slurm job names).</param>
/// <param name="MergeWords">The merge command's words before the output folder.</param>
/// <param name="CompleteShards">The complete shards of an N-shard plan in a folder.</param>
public sealed record ShardAwareCommand(string Name, string[] MergeWords, Func<string, int, List<int>> CompleteShards);

/// <summary>The shard-aware commands that <c>slurm submit</c> and <c>slurm k8s</c> run, each a thin user of the sharded-job engine.</summary>
public static class ShardAwareCommands
{
    /// <summary>What the commands are, for messages.</summary>
    public const string Supported = "harvest, features build, microscope --corpus C, trace --prompts FILE";

    /// <summary>The shard-aware command <paramref name="args"/> runs; a clear error for any other.</summary>
    public static ShardAwareCommand For(IReadOnlyList<string> args)
    {
        bool Has(string option) => args.Contains(option);
        return args.Count == 0 ? throw new MechanistException($"give a shard-aware command ({Supported})")
            : args[0] switch
            {
                "harvest" => new("harvest", new[] { "harvest", "merge" }, (d, n) => ShardedJobs.CompleteShards(Dictionaries.HarvestJob.Shards, d, n)),
                "trace" when Has("--prompts") => new("trace", new[] { "trace", "merge" }, (d, n) => ShardedJobs.CompleteShards(Attribution.TraceBatch.Shards, d, n)),
                "features" when args.Count > 1 && args[1] == "build" => new("features-build", new[] { "features", "merge" }, (d, n) => ShardedJobs.CompleteShards(Features.FeatureBuild.Shards, d, n)),
                "microscope" when Has("--corpus") || Has("--text-file") => new("microscope", new[] { "microscope", "merge" }, (d, n) => ShardedJobs.CompleteShards(Microscope.MicroscopeShards.Shards, d, n)),
                _ => throw new MechanistException($"'{(args[0].Length > 40 ? args[0][..40] + "…" : args[0])}' is not a shard-aware command (supported: {Supported})"),
            };
    }
}
