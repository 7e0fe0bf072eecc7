using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Mechanist.Cluster;
using Mechanist.IO;
using Mechanist.Reporting;

namespace Mechanist.Attribution;

/// <summary>What one shard of a batch trace holds (or, merged, the whole batch).</summary>
/// <param name="Model">The model traced.</param>
/// <param name="Transcoders">The transcoder folder's name.</param>
/// <param name="PromptsHash">SHA-256 of the prompt list (all shards of one batch share it).</param>
/// <param name="ShardIndex">This shard (−1 when merged).</param>
/// <param name="ShardCount">N.</param>
/// <param name="Prompts">Number of prompts in the whole list.</param>
/// <param name="Done">Prompt indices whose graph file is written.</param>
/// <param name="Complete">Whether every prompt of the shard is done.</param>
public sealed record TraceManifest(string Model, string Transcoders, string PromptsHash, int ShardIndex, int ShardCount, int Prompts, int[] Done, bool Complete);

/// <summary>
/// Many prompts, one graph each (<c>prompt-00042.json</c>): shard i of N takes prompts i, i + N, …, writes each graph atomically
/// and records it in its manifest, so a killed shard resumes after its last graph; <see cref="Merge"/> checks the shards belong
/// together and writes the frontend's graph-metadata.json over all graphs.
/// </summary>
public static class TraceBatch
{
    /// <summary>The graph file of prompt k.</summary>
    public static string GraphName(int k) => $"prompt-{k:D5}.json";

    /// <summary>The manifest of shard i of N.</summary>
    public static string ManifestName(int index, int count) => $"trace-manifest-{index}-of-{count}.json";

    /// <summary>A batch trace as a sharded job: trace-manifest-I-of-N.json per shard; one model, transcoders and prompt list.</summary>
    public static readonly IShardKind<TraceManifest> Shards = new TraceShards();

    sealed class TraceShards : IShardKind<TraceManifest>
    {
        public string What => "batch trace";
        public string FileName(ShardPlan plan) => ManifestName(plan.Index, plan.Count);
        public string FilePattern => "trace-manifest-*-of-*.json";
        public TraceManifest Read(string path) => TraceBatch.Read(path);
        public ShardPlan PlanOf(TraceManifest m) => new(m.ShardIndex, m.ShardCount);
        public bool IsComplete(TraceManifest m) => m.Complete;
        public IEnumerable<(string Label, string Value)> Identity(TraceManifest m) => new[] { ("model", m.Model), ("set of transcoders", m.Transcoders), ("prompt list", m.PromptsHash) };
    }

    /// <summary>SHA-256 of the prompts (one per line).</summary>
    public static string Hash(IReadOnlyList<string> prompts) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join("\n", prompts)))).ToLowerInvariant();

    /// <summary>Reads a manifest; a clear error when it is not one.</summary>
    public static TraceManifest Read(string path)
    {
        try { return JsonSerializer.Deserialize<TraceManifest>(File.ReadAllText(path), JsonFormat.Options) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new MechanistException($"{path}: not a trace manifest ({e.Message})"); }
    }

    /// <summary>Runs (or resumes) shard <paramref name="index"/> of <paramref name="count"/>; <paramref name="traceOne"/> writes prompt k's graph to the given path.</summary>
    public static TraceManifest Run(IReadOnlyList<string> prompts, string dir, int index, int count, string model, string transcoders, Action<int, string> traceOne)
    {
        var plan = new ShardPlan(index, count).Checked();
        if (prompts.Count == 0) throw new MechanistException("the prompt file has no prompts");
        string manifestPath = Path.Combine(dir, ManifestName(index, count)), hash = Hash(prompts);
        var done = new SortedSet<int>();
        var fresh = new TraceManifest(model, transcoders, hash, index, count, prompts.Count, Array.Empty<int>(), false);
        if (ShardedJobs.Resume(Shards, dir, plan, fresh) is { } old)
            foreach (int k in old.Done) if (File.Exists(Path.Combine(dir, GraphName(k)))) done.Add(k);
        var mine = Enumerable.Range(0, prompts.Count).Where(k => plan.Takes(k)).ToList();
        TraceManifest Save(bool complete)
        {
            var m = new TraceManifest(model, transcoders, hash, index, count, prompts.Count, done.ToArray(), complete);
            AtomicFile.WriteText(manifestPath, JsonSerializer.Serialize(m, JsonFormat.Options));
            return m;
        }
        foreach (int k in mine.Where(k => !done.Contains(k)))
        {
            traceOne(k, Path.Combine(dir, GraphName(k)));
            // A graph's managed arrays (its rows, edges and pruning's buffers: ~100 MB at 3M edges) are garbage once it is written;
            // collected here, the next graph reuses their memory. Left to the (non-concurrent) collector, two or three graphs' worth
            // piled up: on the built-in model three prompts peaked at 760-920 MB against 635-650 MB collected, in no more time.
            GC.Collect();
            done.Add(k);
            Save(complete: false);
            ShardedJobs.PauseIfAsked(dir, plan);
        }
        return Save(complete: true);
    }

    /// <summary>
    /// Checks that the shard manifests in <paramref name="dir"/> form one complete batch (one model, transcoders, prompt list and
    /// shard plan; every shard present and complete; every prompt's graph there exactly once) and writes graph-metadata.json
    /// over all graphs and trace-manifest.json.
    /// </summary>
    public static TraceManifest Merge(string dir)
    {
        var shards = ShardedJobs.CheckComplete(Shards, dir).Select(s => (File: Path.GetFileName(s.Path), M: s.State)).ToList();
        var first = shards[0];
        var all = shards.SelectMany(s => s.M.Done).ToList();
        if (all.Count != all.Distinct().Count()) throw new MechanistException("a prompt was traced by two shards");
        var absent = Enumerable.Range(0, first.M.Prompts).Except(all).ToList();
        if (absent.Count > 0) throw new MechanistException($"prompt(s) {string.Join(", ", absent.Take(10))} have no graph");
        var graphs = Enumerable.Range(0, first.M.Prompts).Select(k => Path.Combine(dir, GraphName(k))).ToList();
        if (graphs.FirstOrDefault(g => !File.Exists(g)) is { } lost) throw new MechanistException($"{Path.GetFileName(lost)} is missing");
        GraphFile.UpdateIndex(graphs);
        var merged = first.M with { ShardIndex = -1, Done = Enumerable.Range(0, first.M.Prompts).ToArray(), Complete = true };
        AtomicFile.WriteText(Path.Combine(dir, "trace-manifest.json"), JsonSerializer.Serialize(merged, JsonFormat.Options));
        return merged;
    }
}
