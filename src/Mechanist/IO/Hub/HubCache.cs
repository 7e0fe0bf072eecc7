using System.Text.RegularExpressions;

namespace Mechanist.IO.Hub;

/// <summary>
/// The Hugging Face hub cache layout, shared with the Python client:
/// <c>$HF_HUB_CACHE</c> or <c>$HF_HOME/hub</c> or <c>~/.cache/huggingface/hub</c>, holding
/// <c>models--org--name/{blobs,snapshots/&lt;commit&gt;,refs/&lt;revision&gt;}</c>.
/// </summary>
public sealed partial class HubCache
{
    /// <summary>Uses the given cache folder.</summary>
    public HubCache(string root) => Root = root;

    /// <summary>The cache folder.</summary>
    public string Root { get; }

    /// <summary>The cache folder the environment selects, as the Python client does.</summary>
    public static HubCache FromEnvironment()
    {
        string? hubCache = Environment.GetEnvironmentVariable("HF_HUB_CACHE") ?? Environment.GetEnvironmentVariable("HUGGINGFACE_HUB_CACHE");
        if (!string.IsNullOrEmpty(hubCache)) return new HubCache(hubCache);
        string? home = Environment.GetEnvironmentVariable("HF_HOME");
        if (string.IsNullOrEmpty(home))
        {
            string xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x
                : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
            home = Path.Combine(xdg, "huggingface");
        }
        return new HubCache(Path.Combine(home, "hub"));
    }

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")]
    private static partial Regex RepoIdPattern();

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitPattern();

    /// <summary>Whether a string is a valid hub repository id ("gpt2", "Qwen/Qwen2.5-0.5B").</summary>
    public static bool IsRepoId(string s) => RepoIdPattern().IsMatch(s) && !s.Contains("..") && !s.EndsWith(".git");

    /// <summary>Whether a revision is a full commit hash.</summary>
    public static bool IsCommit(string revision) => CommitPattern().IsMatch(revision);

    /// <summary>The folder of one repository in the cache.</summary>
    public string RepoFolder(string repoId)
    {
        if (!IsRepoId(repoId)) throw new MechanistException($"'{repoId}' is not a valid hub repository id");
        return Path.Combine(Root, "models--" + repoId.Replace("/", "--"));
    }

    /// <summary>The commit a revision points to in the cache, or null.</summary>
    public string? ResolveCommit(string repoId, string revision)
    {
        if (IsCommit(revision)) return revision;
        if (revision.Contains('/') || revision.Contains("..")) throw new MechanistException($"revision '{revision}' is not valid");
        string refFile = Path.Combine(RepoFolder(repoId), "refs", revision);
        return File.Exists(refFile) ? File.ReadAllText(refFile).Trim() : null;
    }

    /// <summary>The snapshot folder of a revision, or null when it is not cached.</summary>
    public string? SnapshotFolder(string repoId, string revision = "main")
    {
        string? commit = ResolveCommit(repoId, revision);
        if (commit == null) return null;
        string dir = Path.Combine(RepoFolder(repoId), "snapshots", commit);
        return Directory.Exists(dir) ? dir : null;
    }
}
