using System.Security.Cryptography;
using System.Text;
using Mechanist.IO;

namespace Mechanist.Cluster;

/// <summary>Shard <see cref="Index"/> of <see cref="Count"/>: the items i with i mod N = index (texts, prompts).</summary>
/// <param name="Index">This shard.</param>
/// <param name="Count">Shards in the plan.</param>
public readonly record struct ShardPlan(int Index, int Count)
{
    /// <summary>The whole job in one shard.</summary>
    public static ShardPlan Single => new(0, 1);

    /// <summary>Parses "i/N" (null or empty: the single shard); a clear error otherwise.</summary>
    public static ShardPlan Parse(string? spec)
    {
        if (string.IsNullOrEmpty(spec)) return Single;
        var parts = spec.Split('/');
        if (parts.Length == 2 && int.TryParse(parts[0], out int i) && int.TryParse(parts[1], out int n) && n >= 1 && i >= 0 && i < n) return new(i, n);
        throw new MechanistException($"--shard '{(spec.Length > 40 ? spec[..40] + "…" : spec)}': give i/N with 0 ≤ i < N, e.g. 0/4");
    }

    /// <summary>Checks the plan (an index within 0..N−1).</summary>
    public ShardPlan Checked() => Count >= 1 && Index >= 0 && Index < Count ? this
        : throw new MechanistException($"--shard {Index}/{Count}: the index must be within 0..{Count - 1}");

    /// <summary>Whether item <paramref name="i"/> of the whole list belongs to this shard.</summary>
    public bool Takes(long i) => i % Count == Index;

    /// <summary>This shard's items with their indices in the whole list.</summary>
    public IEnumerable<(T Item, long Index)> Select<T>(IEnumerable<T> all)
    {
        var plan = this;
        return all.Select((x, i) => (x, (long)i)).Where(x => plan.Takes(x.Item2));
    }
}

/// <summary>
/// One kind of sharded job (a harvest, a feature build, a microscope run, a batch trace): how a shard's state file is named and
/// read, and what must agree between the shards of one job (model, inputs' SHA-256, settings). The engine
/// (<see cref="ShardedJobs"/>) does the rest the same way for every kind: resume, completion, and the checks before a merge.
/// </summary>
/// <typeparam name="TState">A shard's state as its file holds it.</typeparam>
public interface IShardKind<TState>
{
    /// <summary>What one job is called in messages ("harvest", "build", ...).</summary>
    string What { get; }

    /// <summary>The state file of a shard.</summary>
    string FileName(ShardPlan plan);

    /// <summary>A glob matching every shard state file of a folder.</summary>
    string FilePattern { get; }

    /// <summary>Reads a state file; a clear error for a file that is not one.</summary>
    TState Read(string path);

    /// <summary>The shard plan a state belongs to.</summary>
    ShardPlan PlanOf(TState state);

    /// <summary>Whether the shard finished.</summary>
    bool IsComplete(TState state);

    /// <summary>What must agree between the shards of one job, labelled ("model", "corpus", ...), in the order checked.</summary>
    IEnumerable<(string Label, string Value)> Identity(TState state);
}

/// <summary>
/// The sharded-job engine: a shard resumes from its state file (refusing a folder that holds another job), a killed run's
/// temp files are cleared, a shard can be held between commits by a pause file, <c>slurm submit</c> asks which shards are
/// complete, and a merge first checks that the shards form one complete job, naming the missing, foreign, renamed or
/// unfinished shard.
/// </summary>
public static class ShardedJobs
{
    /// <summary>
    /// Opens shard <paramref name="plan"/> of a job in <paramref name="dir"/>: its existing state (checked to be the same job as
    /// <paramref name="fresh"/>), or null for a new shard. Temp files a killed run left are removed.
    /// </summary>
    public static TState? Resume<TState>(IShardKind<TState> kind, string dir, ShardPlan plan, TState fresh) where TState : class
    {
        plan.Checked();
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, kind.FileName(plan));
        AtomicFile.RemoveStaleTemps(path);
        if (!File.Exists(path)) return null;
        var existing = kind.Read(path);
        if (kind.PlanOf(existing) != plan) throw new MechanistException($"{path}: this folder holds another {kind.What} (its shard plan differs); use a new folder");
        foreach (var ((label, was), (_, now)) in kind.Identity(existing).Zip(kind.Identity(fresh)))
            if (was != now) throw new MechanistException($"{path}: this folder holds another {kind.What} ({label} differs); use a new folder");
        return existing;
    }

    /// <summary>The shards of an N-shard plan in <paramref name="dir"/> whose state says complete (what <c>slurm submit</c> skips).</summary>
    public static List<int> CompleteShards<TState>(IShardKind<TState> kind, string dir, int count) =>
        Enumerable.Range(0, count).Where(i => Path.Combine(dir, kind.FileName(new ShardPlan(i, count))) is var p && File.Exists(p) && kind.IsComplete(kind.Read(p))).ToList();

    /// <summary>
    /// Checks that the shard states in <paramref name="dir"/> form one complete job: one identity and plan, every shard present
    /// under its own name (so once), and complete. Returns them by shard index with their paths.
    /// </summary>
    public static List<(string Path, TState State)> CheckComplete<TState>(IShardKind<TState> kind, string dir)
    {
        if (!Directory.Exists(dir)) throw new MechanistException($"{dir}: {kind.What} folder not found");
        var files = Directory.GetFiles(dir, kind.FilePattern).Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new MechanistException($"{dir}: no shard files ({kind.FileName(new ShardPlan(0, 1)).Replace("-0-of-1", "-I-of-N")})");
        var shards = files.Select(f => (Path: f, State: kind.Read(f))).ToList();
        var first = shards[0]; string firstName = Path.GetFileName(first.Path);
        var firstIdentity = kind.Identity(first.State).ToList();
        var firstPlan = kind.PlanOf(first.State);
        foreach (var (path, state) in shards)
        {
            string name = Path.GetFileName(path);
            foreach (var ((label, value), (_, expected)) in kind.Identity(state).Zip(firstIdentity))
                if (value != expected) throw new MechanistException($"{name} comes from another {label} than {firstName}");
            var plan = kind.PlanOf(state);
            if (plan.Count != firstPlan.Count) throw new MechanistException($"{name} belongs to a plan of {plan.Count} shards, {firstName} to one of {firstPlan.Count}");
            if (plan.Index < 0 || plan.Index >= plan.Count) throw new MechanistException($"{name}: shard index {plan.Index} is outside its plan of {plan.Count}");
            if (name != kind.FileName(plan)) throw new MechanistException($"{name} holds shard {plan.Index} of {plan.Count}: renamed or copied?");
            if (!kind.IsComplete(state)) throw new MechanistException($"shard {plan.Index} of {plan.Count} is not complete (resume it with the same command)");
        }
        var missing = Enumerable.Range(0, firstPlan.Count).Except(shards.Select(s => kind.PlanOf(s.State).Index)).ToList();
        if (missing.Count > 0) throw new MechanistException($"shard(s) {string.Join(", ", missing)} of {firstPlan.Count} are missing");
        return shards.OrderBy(s => kind.PlanOf(s.State).Index).ToList();
    }

    /// <summary>
    /// Called after each commit of a shard's state: while a pause file <c>pause-I-of-N</c> exists in <paramref name="dir"/>, the
    /// shard waits there (its state on disk complete and consistent), so an operator (or a test) can hold a task at a known point,
    /// inspect or kill it; deleting the file lets it go on.
    /// </summary>
    public static void PauseIfAsked(string dir, ShardPlan plan, CancellationToken ct = default)
    {
        string pause = Path.Combine(dir, PauseFileName(plan));
        while (File.Exists(pause))
        {
            ct.ThrowIfCancellationRequested();
            Thread.Sleep(100);
        }
    }

    /// <summary>The pause file of a shard (see <see cref="PauseIfAsked"/>).</summary>
    public static string PauseFileName(ShardPlan plan) => $"pause-{plan.Index}-of-{plan.Count}";

    /// <summary>SHA-256 over texts (each length-prefixed): the identity of a corpus.</summary>
    public static string CorpusHash(IEnumerable<string> texts)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var t in texts)
        {
            var bytes = Encoding.UTF8.GetBytes(t);
            sha.AppendData(BitConverter.GetBytes(bytes.Length));
            sha.AppendData(bytes);
        }
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();
    }
}
