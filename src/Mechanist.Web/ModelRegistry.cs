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
    readonly Dictionary<string, HookedEncoderDecoder> _encoderDecoders;
    readonly List<string> _order = new();
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

    /// <summary>Registers loaded decoder-only or encoder models (the registry owns and disposes them).</summary>
    public ModelRegistry(IEnumerable<HookedTransformer> models) : this(models.Select(m => (ServedModel)m)) { }

    /// <summary>Registers loaded models of any kind, in the order given (the first is the default; the registry owns and disposes them).</summary>
    public ModelRegistry(IEnumerable<ServedModel> models)
    {
        _models = new Dictionary<string, HookedTransformer>(StringComparer.Ordinal);
        _encoderDecoders = new Dictionary<string, HookedEncoderDecoder>(StringComparer.Ordinal);
        string Unique(string name)
        {
            while (_models.ContainsKey(name) || _encoderDecoders.ContainsKey(name)) name += "'";
            _order.Add(name);
            return name;
        }
        foreach (var m in models)
            if (m.EncoderDecoder is { } ed) _encoderDecoders[Unique(DisplayName(ed.Name))] = ed;
            else _models[Unique(DisplayName(m.Transformer!))] = m.Transformer!;
        if (_order.Count == 0) throw new MechanistException("the workbench needs at least one model");
    }

    /// <summary>A short name for a model: its folder or file name.</summary>
    public static string DisplayName(HookedTransformer m) => DisplayName(m.Name);

    /// <summary>A short name for a model path: its folder or file name.</summary>
    public static string DisplayName(string modelName)
    {
        string trimmed = modelName.TrimEnd('/', '\\');
        return File.Exists(trimmed) ? Path.GetFileNameWithoutExtension(trimmed) : Path.GetFileName(trimmed) is { Length: > 0 } n ? n : trimmed;
    }

    /// <summary>Model names, in the order they were given.</summary>
    public IEnumerable<string> Names => _order;

    /// <summary>The name a request means: its own, or the first model's when empty.</summary>
    public string Resolve(string? name) => string.IsNullOrEmpty(name) ? _order[0] : name;

    /// <summary>What a served model is (shape, hook points, kind).</summary>
    public ModelSummary Summary(string name) =>
        _encoderDecoders.TryGetValue(name, out var ed) ? ModelSummary.Of(ed, name) : ModelSummary.Of(Get(name), name);

    /// <summary>The encoder-decoder of a name, or null when the name is another kind of model (or unknown).</summary>
    public HookedEncoderDecoder? EncoderDecoder(string? name) => _encoderDecoders.GetValueOrDefault(Resolve(name));

    /// <summary>The views an encoder-decoder has in the workbench.</summary>
    public const string EncoderDecoderViews = "Models, Prompt, Attention, Logit lens and Patching";

    /// <summary>The decoder-only or encoder model of a name; a clear error for an encoder-decoder or anything else.</summary>
    public HookedTransformer Get(string? name)
    {
        name = Resolve(name);
        if (_models.TryGetValue(name, out var m)) return m;
        if (_encoderDecoders.ContainsKey(name))
            throw new MechanistException($"'{name}' is an encoder-decoder model (t5): this view needs a decoder-only or encoder model; an encoder-decoder has the {EncoderDecoderViews} views");
        throw new MechanistException($"unknown model '{(name.Length > 80 ? name[..80] + "…" : name)}'; this server has: {string.Join(", ", _order)}");
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
        foreach (var m in _encoderDecoders.Values) m.Dispose();
    }
}

/// <summary>A model the workbench serves: a decoder-only or encoder transformer, or an encoder-decoder.</summary>
public sealed class ServedModel
{
    ServedModel(HookedTransformer? transformer, HookedEncoderDecoder? encoderDecoder) { Transformer = transformer; EncoderDecoder = encoderDecoder; }

    /// <summary>The decoder-only or encoder model, or null.</summary>
    public HookedTransformer? Transformer { get; }
    /// <summary>The encoder-decoder, or null.</summary>
    public HookedEncoderDecoder? EncoderDecoder { get; }

    /// <summary>Disposes whichever model this is.</summary>
    public void Dispose() { Transformer?.Dispose(); EncoderDecoder?.Dispose(); }

    /// <summary>A decoder-only or encoder model.</summary>
    public static implicit operator ServedModel(HookedTransformer m) => new(m ?? throw new ArgumentNullException(nameof(m)), null);
    /// <summary>An encoder-decoder.</summary>
    public static implicit operator ServedModel(HookedEncoderDecoder m) => new(null, m ?? throw new ArgumentNullException(nameof(m)));
}
