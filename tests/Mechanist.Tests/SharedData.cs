using Mechanist.IO;
using Mechanist.Models;

namespace Mechanist.Tests;

/// <summary>Locates ../shared (reference data beside the repository) from the test's working folder.</summary>
public static class SharedData
{
    static readonly Lazy<string> Root = new(() =>
    {
        var env = Environment.GetEnvironmentVariable("MECHANIST_SHARED");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(env)) return env;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared");
            if (Directory.Exists(Path.Combine(candidate, "golden"))) return candidate;
        }
        throw new DirectoryNotFoundException("../shared (reference data) was not found above " + AppContext.BaseDirectory);
    });

    /// <summary>A path inside shared/.</summary>
    public static string PathOf(params string[] parts) => Path.Combine(new[] { Root.Value }.Concat(parts).ToArray());

    /// <summary>The repository root (folder holding Mechanist.sln).</summary>
    public static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Mechanist.sln"))) return dir.FullName;
            throw new DirectoryNotFoundException("repository root not found");
        }
    }

    /// <summary>
    /// Offline loading with the built-in word-level tokenizer (401 ids): the golden models ship without a tokenizer, and these ids fit
    /// their 512-token vocabularies.
    /// </summary>
    public static ModelOpenOptions WithToyTokenizer => new() { Offline = true, TokenizerPath = Path.Combine(RepoRoot, "models", "toy-4l", "tokenizer.json") };

    /// <summary>A golden model (offline; with the toy tokenizer when asked) and HF's reference tensors for it; the caller disposes both.</summary>
    public static (HookedTransformer Model, SafetensorsFile Reference) Golden(string arch, bool toyTokenizer = false)
    {
        string dir = PathOf("golden", "models", arch);
        var open = toyTokenizer ? WithToyTokenizer : new ModelOpenOptions { Offline = true };
        return (HookedTransformer.Load(dir, new LoadOptions { Open = open }), SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors")));
    }
}

/// <summary>A temporary folder removed at disposal.</summary>
public sealed class TempDir : IDisposable
{
    /// <summary>Creates it.</summary>
    public TempDir() => Directory.CreateDirectory(Path);

    /// <summary>Its path.</summary>
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "mechanist-test-" + Guid.NewGuid().ToString("N"));

    /// <summary>A file path inside it.</summary>
    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <inheritdoc/>
    public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
}
