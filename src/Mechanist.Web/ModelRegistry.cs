using System.Collections.Concurrent;
using Mechanist.Analysis;
using Mechanist.Microscope;
using Mechanist.Models;

namespace Mechanist.Web;

/// <summary>
/// The models the server was started with, by name; requests can name only these (no path in a
/// request ever reaches the disk). Per-model results that do not depend on the prompt are cached.
/// </summary>
public sealed class ModelRegistry : IDisposable
{
    readonly Dictionary<string, HookedTransformer> _models;
    readonly ConcurrentDictionary<string, Lazy<HeadDetectionResult>> _heads = new();
    readonly ConcurrentDictionary<string, Lazy<MicroscopeBaseline>> _baselines = new();
    readonly ConcurrentDictionary<string, Lazy<Dictionaries.Formats.TranscoderBundle>> _transcoders = new();
    IReadOnlyDictionary<string, string> _transcoderDirs = new Dictionary<string, string>();

    /// <summary>Transcoder folders by model name (set once at start).</summary>
    public IReadOnlyDictionary<string, string> TranscoderDirs { get => _transcoderDirs; init => _transcoderDirs = value; }

    /// <summary>The transcoders of a model, loaded once; a clear error when the server has none for it.</summary>
    public Dictionaries.Formats.TranscoderBundle Transcoders(string name, HookedTransformer model) =>
        _transcoders.GetOrAdd(name, n => new Lazy<Dictionaries.Formats.TranscoderBundle>(() =>
            _transcoderDirs.TryGetValue(n, out var dir) ? Dictionaries.Formats.CircuitTracerFormat.Load(dir, model.Device)
            : throw new MechanistException($"no transcoders for '{n}': start the workbench with --transcoders (built-in models bring their CLT)"))).Value;

    /// <summary>Registers loaded models (the registry owns and disposes them).</summary>
    public ModelRegistry(IEnumerable<HookedTransformer> models)
    {
        _models = new Dictionary<string, HookedTransformer>(StringComparer.Ordinal);
        foreach (var m in models)
        {
            string name = DisplayName(m);
            while (_models.ContainsKey(name)) name += "'";
            _models[name] = m;
        }
        if (_models.Count == 0) throw new MechanistException("the workbench needs at least one model");
    }

    /// <summary>A short name for a model: its folder or file name.</summary>
    public static string DisplayName(HookedTransformer m)
    {
        string trimmed = m.Name.TrimEnd('/', '\\');
        return File.Exists(trimmed) ? Path.GetFileNameWithoutExtension(trimmed) : Path.GetFileName(trimmed) is { Length: > 0 } n ? n : trimmed;
    }

    /// <summary>Model names.</summary>
    public IEnumerable<string> Names => _models.Keys;

    /// <summary>The model of a name; a clear error for anything else.</summary>
    public HookedTransformer Get(string? name)
    {
        if (string.IsNullOrEmpty(name)) return _models.Values.First();
        return _models.TryGetValue(name, out var m) ? m
            : throw new MechanistException($"unknown model '{(name.Length > 80 ? name[..80] + "…" : name)}'; this server has: {string.Join(", ", _models.Keys)}");
    }

    /// <summary>Head detection with the one default parameter set (as <c>mechanist heads</c>), computed once per model.</summary>
    public HeadDetectionResult Heads(string name, HookedTransformer model) =>
        _heads.GetOrAdd(name, _ => new Lazy<HeadDetectionResult>(() => HeadDetector.Run(model))).Value;

    /// <summary>Linear fits of the model's own corpus, computed once per model, for per-token nonlinearity of any prompt.</summary>
    public MicroscopeBaseline Baseline(string name, HookedTransformer model) =>
        _baselines.GetOrAdd(name, _ => new Lazy<MicroscopeBaseline>(() => MicroscopeBaseline.Build(model))).Value;

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var b in _baselines.Values.Where(v => v.IsValueCreated)) b.Value.Dispose();
        foreach (var t in _transcoders.Values.Where(v => v.IsValueCreated)) t.Value.Dispose();
        foreach (var m in _models.Values) m.Dispose();
    }
}
