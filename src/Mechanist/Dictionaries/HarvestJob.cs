using System.Security.Cryptography;
using System.Text.Json;
using Mechanist.Cluster;
using Mechanist.IO;
using Mechanist.Models;
using Mechanist.Reporting;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries;

/// <summary>One written chunk of activations.</summary>
/// <param name="File">File name inside the shard folder.</param>
/// <param name="Rows">Tokens (rows) in it.</param>
/// <param name="TextsEnd">Index (in the shard's own text sequence) just past the last text it holds.</param>
/// <param name="Bytes">The file's size when written (absent in manifests from before it was recorded).</param>
/// <param name="Sha256">SHA-256 of the file when written (absent in manifests from before it was recorded).</param>
public sealed record HarvestChunk(string File, long Rows, long TextsEnd, long? Bytes = null, string? Sha256 = null);

/// <summary>What a shard of a harvest holds; merged manifests list every shard's chunks.</summary>
/// <param name="Model">Model name.</param>
/// <param name="Hooks">Hook points harvested (one tensor each per chunk, [rows, d]), plus "token_ids" [rows].</param>
/// <param name="DType">Stored dtype (float32 or bfloat16).</param>
/// <param name="CorpusHash">SHA-256 of the corpus texts (all shards of one harvest share it).</param>
/// <param name="ShardIndex">This shard's index (−1 in a merged manifest).</param>
/// <param name="ShardCount">Shards in the plan.</param>
/// <param name="MaxTokens">Token budget of this shard.</param>
/// <param name="Tokens">Tokens written.</param>
/// <param name="Complete">Whether the shard finished (budget reached or texts exhausted).</param>
/// <param name="Chunks">Chunks, in order (paths relative to the harvest folder).</param>
public sealed record HarvestManifest(string Model, string[] Hooks, string DType, string CorpusHash, int ShardIndex, int ShardCount, long MaxTokens,
    long Tokens, bool Complete, HarvestChunk[] Chunks);

/// <summary>Settings of a harvest.</summary>
/// <param name="Hooks">Hook points to collect.</param>
/// <param name="MaxTokens">Token budget per shard.</param>
/// <param name="ShardIndex">This process's shard (texts i, i + N, i + 2N, ...).</param>
/// <param name="ShardCount">Shards in the plan.</param>
/// <param name="ChunkTokens">Tokens per chunk file (also the shuffle buffer).</param>
/// <param name="BFloat16">Store bf16 instead of fp32.</param>
/// <param name="Seed">Seed of the in-chunk shuffle.</param>
public sealed record HarvestOptions(string[] Hooks, long MaxTokens, int ShardIndex = 0, int ShardCount = 1, long ChunkTokens = 50_000, bool BFloat16 = false, int Seed = 0);

/// <summary>
/// Corpus-scale harvesting: streams a shard of the corpus through the model and writes activations in chunk files
/// (safetensors, rows shuffled within a chunk) with a manifest. Every chunk and the manifest are written atomically,
/// so a killed run resumes after its last complete chunk without duplicates or loss; shards merge with
/// <see cref="Merge"/>, which checks that they belong together.
/// </summary>
public static class HarvestJob
{
    /// <summary>The manifest file of shard i of N.</summary>
    public static string ManifestName(int index, int count) => $"manifest-{index}-of-{count}.json";

    /// <summary>A harvest as a sharded job: manifest-I-of-N.json per shard; one model, hook points, dtype, corpus and budget.</summary>
    public static readonly IShardKind<HarvestManifest> Shards = new HarvestShards();

    sealed class HarvestShards : IShardKind<HarvestManifest>
    {
        public string What => "harvest";
        public string FileName(ShardPlan plan) => ManifestName(plan.Index, plan.Count);
        public string FilePattern => "manifest-*-of-*.json";
        public HarvestManifest Read(string path) => ReadManifest(path);
        public ShardPlan PlanOf(HarvestManifest m) => new(m.ShardIndex, m.ShardCount);
        public bool IsComplete(HarvestManifest m) => m.Complete;
        public IEnumerable<(string Label, string Value)> Identity(HarvestManifest m) => new[]
        {
            ("model", m.Model), ("set of hook points", string.Join(",", m.Hooks)), ("dtype", m.DType), ("corpus", m.CorpusHash), ("token budget", m.MaxTokens.ToString()),
        };
    }

    /// <summary>Runs (or resumes) one shard; returns its manifest.</summary>
    public static HarvestManifest Run(HookedTransformer model, IReadOnlyList<string> texts, HarvestOptions o, string dir,
        IProgress<(long Tokens, long Max)>? progress = null, CancellationToken ct = default)
    {
        var plan = new ShardPlan(o.ShardIndex, o.ShardCount).Checked();
        if (o.Hooks.Length == 0) throw new MechanistException("name at least one hook point to harvest");
        foreach (var h in o.Hooks) model.HookPoints.Check(h);
        if (texts.Count == 0) throw new MechanistException("the corpus has no usable text");
        string manifestPath = Path.Combine(dir, ManifestName(o.ShardIndex, o.ShardCount));
        var shardTexts = plan.Select(texts).Select(x => x.Item).ToList();
        var fresh = new HarvestManifest(model.Name, o.Hooks, o.BFloat16 ? "bfloat16" : "float32", ShardedJobs.CorpusHash(texts), o.ShardIndex, o.ShardCount, o.MaxTokens, 0, false, Array.Empty<HarvestChunk>());
        var manifest = ShardedJobs.Resume(Shards, dir, plan, fresh) ?? fresh;
        if (manifest.Complete) return manifest;
        var chunks = manifest.Chunks.ToList();
        // A killed run leaves the temp file of the chunk it was writing (the manifest's is cleared on resume).
        AtomicFile.RemoveStaleTemps(Path.Combine(dir, $"shard-{o.ShardIndex}-of-{o.ShardCount}-chunk-{chunks.Count:D5}.safetensors"));
        long tokens = manifest.Tokens, textIndex = chunks.Count > 0 ? chunks[^1].TextsEnd : 0;
        var pendingIn = new List<string>();
        while (tokens < o.MaxTokens && textIndex < shardTexts.Count)
        {
            ct.ThrowIfCancellationRequested();
            // Texts for one chunk: whole texts only, so a resume restarts exactly at a text boundary.
            long budget = Math.Min(o.ChunkTokens, o.MaxTokens - tokens);
            var chunkTexts = new List<string>(); long estimate = 0; long end = textIndex;
            while (end < shardTexts.Count && estimate < budget)
            {
                chunkTexts.Add(shardTexts[(int)end]);
                estimate += Math.Max(0, model.Tokenizer!.Encode(shardTexts[(int)end]).Length - 1);
                end++;
            }
            // Whole texts: a chunk may run past the chunk size, never past the shard's budget.
            using var set = ActivationHarvest.CollectWithIds(model, chunkTexts, o.Hooks, o.MaxTokens - tokens, out var ids);
            using (ids)
            {
                string file = $"shard-{o.ShardIndex}-of-{o.ShardCount}-chunk-{chunks.Count:D5}.safetensors";
                WriteChunk(Path.Combine(dir, file), set, ids, o, chunks.Count);
                var (bytes, sha) = Fingerprint(Path.Combine(dir, file));
                chunks.Add(new HarvestChunk(file, set.Rows, end, bytes, sha));
                tokens += set.Rows;
            }
            textIndex = end;
            // Chunks differ a little in size: their freed blocks go back to the system rather than fragmenting the kept heap.
            Runtime.ProcessMemory.ReleaseFreedHeap();
            manifest = manifest with { Tokens = tokens, Chunks = chunks.ToArray() };
            AtomicFile.WriteText(manifestPath, JsonFormat.Serialize(manifest));
            progress?.Report((tokens, o.MaxTokens));
            ShardedJobs.PauseIfAsked(dir, plan, ct);
        }
        manifest = manifest with { Complete = true };
        AtomicFile.WriteText(manifestPath, JsonFormat.Serialize(manifest));
        return manifest;
    }

    static void WriteChunk(string path, ActivationSet set, Tensor ids, HarvestOptions o, int chunkIndex)
    {
        using var scope = NewDisposeScope();
        // Shuffle rows within the chunk (a seeded buffer shuffle), the same permutation for every hook and the ids.
        using var generator = new Generator((ulong)(o.Seed * 7919 + o.ShardIndex * 104729 + chunkIndex));
        var perm = randperm(set.Rows, generator: generator);
        var tensors = new Dictionary<string, Tensor> { ["token_ids"] = ids.index_select(0, perm) };
        for (int h = 0; h < o.Hooks.Length; h++)
        {
            var rows = set.Inputs.select(1, h).index_select(0, perm);
            tensors[o.Hooks[h]] = (o.BFloat16 ? rows.to(ScalarType.BFloat16) : rows).contiguous();
        }
        SafetensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["producer"] = "mechanist harvest" });
    }

    /// <summary>Size and SHA-256 of a written chunk, recorded in the manifest and checked by <see cref="Merge"/>.</summary>
    static (long Bytes, string Sha256) Fingerprint(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return (stream.Length, Convert.ToHexString(SHA256.HashData(stream)).ToLowerInvariant());
    }

    /// <summary>
    /// Checks one chunk against its manifest: a plain file name inside the folder (no path, no link), its recorded size
    /// and (with <paramref name="checksum"/>) SHA-256, and a header whose tensors have the manifest's rows, hooks and dtype.
    /// </summary>
    static void VerifyChunk(string dir, HarvestManifest m, HarvestChunk c, bool checksum)
    {
        string where = $"shard {m.ShardIndex}: chunk '{(c.File.Length > 80 ? c.File[..80] + "…" : c.File)}'";
        if (string.IsNullOrEmpty(c.File) || c.File != Path.GetFileName(c.File) || c.File.Contains('/') || c.File.Contains('\\') || c.File is "." or "..")
            throw new MechanistException($"{where} is not a file name inside the harvest folder");
        if (c.Rows <= 0) throw new MechanistException($"{where} has {c.Rows} rows");
        string path = Path.Combine(dir, c.File);
        var info = new FileInfo(path);
        if (!info.Exists) throw new MechanistException($"{where} is missing");
        if (info.LinkTarget is not null) throw new MechanistException($"{where} is a symbolic link; a harvest holds its own files");
        if (c.Bytes is { } size && info.Length != size) throw new MechanistException($"{where} is {info.Length:N0} bytes but was written as {size:N0} (truncated or replaced)");
        if (checksum && c.Sha256 is { } sha && Fingerprint(path).Sha256 != sha) throw new MechanistException($"{where}: its SHA-256 differs from the one recorded when it was written (corrupt or replaced)");
        SafetensorsFile f;
        try { f = SafetensorsFile.Open(path); }
        catch (MechanistException e) { throw new MechanistException($"{where}: {e.Message}"); }
        using (f)
        {
            foreach (var name in m.Hooks.Append("token_ids"))
            {
                if (!f.Contains(name)) throw new MechanistException($"{where} has no tensor '{name}'");
                var shape = f.ShapeOf(name);
                if (shape.Length == 0 || shape[0] != c.Rows || (name == "token_ids" ? shape.Length != 1 : shape.Length != 2))
                    throw new MechanistException($"{where}: '{name}' is [{string.Join(", ", shape)}], the manifest says {c.Rows} rows");
            }
        }
    }

    /// <summary>Reads a manifest; a clear error for a corrupt one.</summary>
    public static HarvestManifest ReadManifest(string path)
    {
        try { return JsonSerializer.Deserialize<HarvestManifest>(File.ReadAllText(path), JsonFormat.Options) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new MechanistException($"{path}: not a harvest manifest ({e.Message})"); }
    }

    /// <summary>
    /// Checks that the shard manifests in <paramref name="dir"/> form one complete harvest (one model, hooks, dtype, corpus
    /// and shard plan; every shard present once and complete; every chunk file there) and writes manifest.json listing all chunks.
    /// </summary>
    public static HarvestManifest Merge(string dir)
    {
        var shards = ShardedJobs.CheckComplete(Shards, dir).Select(s => s.State).ToList();
        foreach (var m in shards)
        {
            if (m.Chunks.Sum(c => c.Rows) != m.Tokens) throw new MechanistException($"shard {m.ShardIndex}: its chunks hold {m.Chunks.Sum(c => c.Rows):N0} rows but the manifest says {m.Tokens:N0} tokens");
            foreach (var c in m.Chunks) VerifyChunk(dir, m, c, checksum: true);
        }
        var first = shards[0];
        var merged = first with
        {
            ShardIndex = -1, MaxTokens = shards.Sum(s => s.MaxTokens), Tokens = shards.Sum(s => s.Tokens), Complete = true,
            Chunks = shards.SelectMany(s => s.Chunks).ToArray(),
        };
        AtomicFile.WriteText(Path.Combine(dir, "manifest.json"), JsonFormat.Serialize(merged));
        return merged;
    }

    /// <summary>Loads a merged (or single-shard) harvest as training data: inputs from <paramref name="inputHooks"/>, targets from <paramref name="targetHooks"/>.</summary>
    public static ActivationSet Load(string dir, IReadOnlyList<string> inputHooks, IReadOnlyList<string> targetHooks, long maxTokens = long.MaxValue)
    {
        string path = Path.Combine(dir, "manifest.json");
        if (!File.Exists(path))
        {
            var single = Directory.Exists(dir) ? Directory.GetFiles(dir, "manifest-0-of-1.json") : Array.Empty<string>();
            path = single.Length == 1 ? single[0] : throw new MechanistException($"{dir}: no manifest.json (merge the shards first: mechanist harvest merge {dir})");
        }
        var m = ReadManifest(path);
        foreach (var c in m.Chunks) VerifyChunk(dir, m, c, checksum: false);
        foreach (var h in inputHooks.Concat(targetHooks))
            if (!m.Hooks.Contains(h)) throw new MechanistException($"{dir}: the harvest has no '{h}' (it has {string.Join(", ", m.Hooks)})");
        bool same = inputHooks.SequenceEqual(targetHooks);
        long total = Math.Min(m.Chunks.Sum(c => c.Rows), maxTokens);
        if (total <= 0) throw new MechanistException($"{dir}: the harvest has no rows");
        // Each side is allocated whole and filled a chunk at a time: no list of chunks concatenated at the end (which held twice the rows).
        Tensor? inputs = null, targets = null;
        try
        {
            long rows = 0;
            foreach (var c in m.Chunks)
            {
                if (rows >= total) break;
                using var f = SafetensorsFile.Open(Path.Combine(dir, c.File));
                long take = Math.Min(c.Rows, total - rows);
                inputs = Fill(inputs, f, inputHooks, rows, take, total);
                if (!same) targets = Fill(targets, f, targetHooks, rows, take, total);
                rows += take;
            }
            return new ActivationSet(inputs!, same ? inputs! : targets!, 0);
        }
        catch
        {
            inputs?.Dispose(); targets?.Dispose();
            throw;
        }
    }

    /// <summary>Copies rows [0, take) of every hook of a chunk into rows [at, at + take) of <paramref name="into"/> [total, hooks, d] (float32; allocated on first use).</summary>
    static Tensor Fill(Tensor? into, SafetensorsFile f, IReadOnlyList<string> hooks, long at, long take, long total)
    {
        for (int h = 0; h < hooks.Count; h++)
        {
            using var part = f.Read(hooks[h]);
            into ??= empty(new[] { total, hooks.Count, part.shape[1] }, ScalarType.Float32);
            using var rows = into.narrow(0, at, take);
            using var destination = rows.select(1, h);
            using var source = part.narrow(0, 0, take);
            destination.copy_(source);
        }
        return into!;
    }
}
