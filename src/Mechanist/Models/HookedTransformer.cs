using Mechanist.Tensors;
using Mechanist.Hooks;
using Mechanist.IO;
using Mechanist.Models.Architectures;
using Mechanist.Runtime;
using Mechanist.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Mechanist.Models;

/// <summary>How to load a model.</summary>
public sealed record LoadOptions
{
    /// <summary>Weight and activation dtype (float32 by default). bf16 weights on a CPU without bf16 matrix instructions compute in fp32 (see <see cref="ComputeInFloat32"/>).</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;

    /// <summary>
    /// For bf16 weights: keep them bf16 in memory but widen each layer's to fp32 just before use, with fp32 activations. Null (the
    /// default) decides from the CPU: on when it has no bf16 matrix instructions (<see cref="Runtime.CpuFeatures"/>), where bf16
    /// matrix products run several times slower than fp32; off on CUDA.
    /// </summary>
    public bool? ComputeInFloat32 { get; init; }

    /// <summary>Device ("cpu" or "cuda").</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>Where and how to find the model.</summary>
    public ModelOpenOptions Open { get; init; } = new();
}

/// <summary>
/// A decoder-only transformer with a TransformerLens hook point on every internal activation. One
/// implementation serves every architecture; the architecture files only map checkpoints onto
/// <see cref="TransformerConfig"/> and <see cref="TransformerWeights"/>.
/// </summary>
public sealed partial class HookedTransformer : IDisposable
{
    readonly BlockHookNames[] _blockNames;
    readonly HookRegistry _hookPoints;
    readonly Rotary? _rotary, _localRotary;
    readonly HookScopes _hookScopes;

    /// <summary>
    /// Builds a model from a configuration and its weights (ownership of the weights passes to the model). Activations take
    /// <paramref name="computeDType"/> (default: the weights' dtype); weights of another dtype are widened to it where used.
    /// </summary>
    public HookedTransformer(TransformerConfig config, TransformerWeights weights, TextTokenizer? tokenizer = null, string name = "model", ScalarType? computeDType = null)
    {
        TorchRuntime.EnsureLoaded();
        Config = config; Weights = weights; Tokenizer = tokenizer; Name = name;
        Device = weights.WE.device;
        StorageDType = weights.WE.dtype;
        DType = computeDType ?? StorageDType;
        _hookPoints = new HookRegistry(config);
        _hookScopes = new HookScopes(() => _hookPoints);
        _blockNames = Enumerable.Range(0, config.NLayers).Select(l => new BlockHookNames(l)).ToArray();
        if (config.Positional == PositionKind.Rotary) _rotary = new Rotary(config, Device);
        if (config.Positional == PositionKind.Rotary && config.LocalRopeTheta is { } local) _localRotary = new Rotary(config with { RopeTheta = local, RopeScaling = null }, Device);
    }

    /// <summary>The model's name (what the user passed as --model).</summary>
    public string Name { get; }

    /// <summary>The architecture-independent configuration.</summary>
    public TransformerConfig Config { get; }

    /// <summary>The weights.</summary>
    public TransformerWeights Weights { get; }

    /// <summary>The tokenizer, when the model ships one.</summary>
    public TextTokenizer? Tokenizer { get; }

    /// <summary>Where the weights live.</summary>
    public Device Device { get; }

    /// <summary>Activation dtype: what the forward computes in (the weights' dtype unless they are widened to it).</summary>
    public ScalarType DType { get; }

    /// <summary>The dtype the weights are kept in (differs from <see cref="DType"/> when bf16 weights compute in fp32).</summary>
    public ScalarType StorageDType { get; }

    /// <summary>A weight in the compute dtype: itself, or a widened copy (owned by the caller's dispose scope).</summary>
    public Tensor Computed(Tensor weight) => weight.dtype == DType ? weight : weight.to(DType);

    /// <summary>Every hook point of the model: names, kinds, layers, shapes, forward order.</summary>
    public HookRegistry HookPoints => _hookPoints;

    /// <summary>Loads a model folder, llama2.c file or cached hub model.</summary>
    public static HookedTransformer Load(string spec, LoadOptions? options = null)
    {
        options ??= new LoadOptions();
        TorchRuntime.EnsureLoaded();
        using var source = ModelSource.Open(spec, options.Open);
        var device = DeviceFor(options.Device);
        bool widen = options.DType == ScalarType.BFloat16
            && (options.ComputeInFloat32 ?? (device.type == DeviceType.CPU && !CpuFeatures.HasBFloat16MatrixInstructions));
        return FromSource(source, options.DType, device, widen ? ScalarType.Float32 : null);
    }

    /// <summary>Builds a model from an opened source; weights in <paramref name="dtype"/>, activations in <paramref name="computeDType"/> (default the same).</summary>
    public static HookedTransformer FromSource(ModelSource source, ScalarType dtype, Device device, ScalarType? computeDType = null)
    {
        TorchRuntime.EnsureLoaded();
        var arch = ArchitectureRegistry.For(source.Config);
        var cfg = arch.ReadConfig(source.Config);
        Validate(cfg, source.Config);
        var reader = new WeightReader(source.Weights, source.Location, dtype, device);
        using var scope = NewDisposeScope();
        var weights = arch.LoadWeights(reader, cfg);
        reader.EnsureAllUsed();
        foreach (var (_, t) in weights.Named()) t.DetachFromDisposeScope();
        return new HookedTransformer(cfg, weights, source.Tokenizer, source.Name, computeDType);
    }

    static void Validate(TransformerConfig cfg, ModelConfig source)
    {
        if (cfg.NHeads % cfg.NKvHeads != 0) throw source.Bad("num_key_value_heads", $"{cfg.NKvHeads} does not divide {cfg.NHeads} heads");
        if (cfg.Positional == PositionKind.Rotary && (cfg.RotaryDim <= 0 || cfg.RotaryDim % 2 != 0 || cfg.RotaryDim > cfg.DHead))
            throw source.Bad("rotary", $"dimension {cfg.RotaryDim} must be even and within d_head {cfg.DHead}");
    }

    /// <summary>Parses "cpu" / "cuda" / "cuda:1", with a clear error when CUDA is not available.</summary>
    public static Device DeviceFor(string device)
    {
        TorchRuntime.EnsureLoaded();
        if (device.StartsWith("cuda", StringComparison.OrdinalIgnoreCase) && !cuda.is_available())
            throw new MechanistException("--device cuda: CUDA is not available (this build uses TorchSharp-cpu; see README for the CUDA package)");
        try { return torch.device(device); }
        catch (Exception e) { throw new MechanistException($"unknown device '{device}': {e.Message}"); }
    }

    /// <summary>Parses float32 / bfloat16 / float16.</summary>
    public static ScalarType DTypeFor(string dtype) => dtype.ToLowerInvariant() switch
    {
        "float32" or "fp32" or "f32" => ScalarType.Float32,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        "float16" or "fp16" or "half" => ScalarType.Float16,
        _ => throw new MechanistException($"unknown dtype '{dtype}' (use float32, bfloat16 or float16)"),
    };

    /// <summary>The hook points of a run with these options (the model's, plus what its splices add).</summary>
    public HookRegistry HookPointsFor(RunOptions options) =>
        options.Splices.Count == 0 ? _hookPoints : _hookPoints.With(options.Splices.SelectMany(sp => sp.AddedPoints(_hookPoints)));

    /// <summary>Adds a hook that stays until <see cref="ResetHooks"/> (TransformerLens's permanent hooks).</summary>
    public void AddPermanentHook(HookFilter filter, ForwardHook hook) => _hookScopes.AddPermanent(filter, hook);

    /// <summary>Removes all permanent hooks.</summary>
    public void ResetHooks() => _hookScopes.Reset();

    /// <summary>
    /// Hooks active until the returned handle is disposed (<c>using var _ = model.Hooks(...)</c>). They are
    /// visible only to runs in the same async flow, so concurrent callers never see each other's hooks.
    /// </summary>
    public IDisposable Hooks(params ForwardHookSpec[] hooks) => _hookScopes.Add(hooks);

    /// <summary>Whether permanent or scoped hooks (visible to this async flow) would take part in a run now.</summary>
    public bool HasActiveHooks => _hookScopes.Active().Count > 0;

    /// <summary>The forward hooks of a run (permanent, scoped, then the run's own), every exact name checked.</summary>
    List<ForwardHookSpec> ActiveForwardHooks(RunOptions o, HookRegistry points)
    {
        var all = _hookScopes.Active();
        foreach (var h in o.Hooks) if (h.Filter.ExactName is { } n) CheckFires(points, n, o, "hook point");
        foreach (var h in o.BackwardHooks) if (h.Filter.ExactName is { } n) CheckFires(points, n, o, "backward hook point");
        all.AddRange(o.Hooks);
        return all;
    }

    static void CheckFires(HookRegistry points, string name, RunOptions o, string what)
    {
        points.Check(name, what);
        if (points.Find(name)!.NeedsAttnResult && !o.UseAttnResult)
            throw new MechanistException($"'{name}' fires only in runs with per-head results (RunOptions.UseAttnResult, --attn-result)");
    }

    ForwardState NewState(RunOptions o, ActivationCache? cache, bool keepGraph, Func<string, bool>? cacheFilter = null)
    {
        var points = HookPointsFor(o);
        return new ForwardState(ActiveForwardHooks(o, points), o.BackwardHooks, cache, keepGraph)
        {
            CacheFilter = cacheFilter ?? (_ => true),
            Splices = o.Splices.Select(sp => sp.Start(this)).ToList(),
        };
    }

    /// <summary>Tokenizes a prompt with the model's tokenizer into a [1, pos] tensor.</summary>
    public Tensor ToTokens(string text, bool? prependBos = null)
    {
        var tok = Tokenizer ?? throw new MechanistException($"{Name} has no tokenizer; pass token ids instead");
        var ids = tok.Encode(text, prependBos);
        if (ids.Length == 0) throw new MechanistException("the prompt has no tokens");
        return tensor(ids.Select(i => (long)i).ToArray(), new long[] { 1, ids.Length }, ScalarType.Int64, Device);
    }

    /// <summary>Token strings of a prompt (with BOS when it is prepended).</summary>
    public string[] ToStrTokens(string text, bool? prependBos = null) =>
        (Tokenizer ?? throw new MechanistException($"{Name} has no tokenizer")).ToStrTokens(Tokenizer.Encode(text, prependBos));

    /// <summary>Runs the model and returns logits [batch, pos, vocab] (or the residual stream when stopping early).</summary>
    public Tensor Run(Tensor tokens, RunOptions? options = null)
    {
        options ??= new RunOptions();
        return Execute(tokens, options, NewState(options, null, false));
    }

    /// <summary>Runs with extra forward (and backward) hooks for this run only.</summary>
    public Tensor RunWithHooks(Tensor tokens, IEnumerable<ForwardHookSpec> forward, IEnumerable<BackwardHookSpec>? backward = null, RunOptions? options = null)
    {
        options ??= new RunOptions();
        options = options with
        {
            Hooks = options.Hooks.Concat(forward).ToList(),
            BackwardHooks = options.BackwardHooks.Concat(backward ?? Array.Empty<BackwardHookSpec>()).ToList(),
            EnableGrad = options.EnableGrad || backward != null && backward.Any(),
        };
        return Run(tokens, options);
    }

    /// <summary>
    /// Runs and caches activations at the hook points <paramref name="names"/> selects (all when null).
    /// The cache owns its tensors (detached, on the model's device); dispose it when done.
    /// </summary>
    public (Tensor Logits, ActivationCache Cache) RunWithCache(Tensor tokens, Func<string, bool>? names = null, RunOptions? options = null)
    {
        options ??= new RunOptions();
        var cache = new ActivationCache(this);
        try { return (Execute(tokens, options, NewState(options, cache, false, names)), cache); }
        catch { cache.Dispose(); throw; }
    }

    /// <summary>
    /// Runs forward with gradients, calls <paramref name="metric"/> on the logits to get a scalar,
    /// runs backward, and caches both activations and their gradients (named "NAME_grad", as in
    /// TransformerLens's incl_bwd). Returns the metric's value.
    /// </summary>
    public (double Metric, ActivationCache Cache) RunWithCacheAndGrad(Tensor tokens, Func<Tensor, Tensor> metric,
        Func<string, bool>? names = null, RunOptions? options = null)
    {
        options = (options ?? new RunOptions()) with { EnableGrad = true };
        var cache = new ActivationCache(this);
        try
        {
            var state = NewState(options, cache, true, names);
            using var scope = NewDisposeScope();
            using var grad = enable_grad();
            var logits = Execute(tokens, options, state);
            var value = metric(logits);
            if (value.numel() != 1) throw new MechanistException("the metric must return a scalar");
            value.backward();
            cache.CollectGradients(state.GradSources);
            return (value.to(ScalarType.Float64).item<double>(), cache);
        }
        catch { cache.Dispose(); throw; }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Weights.Dispose();
        _rotary?.Dispose();
        _localRotary?.Dispose();
    }
}

public sealed partial class HookedTransformer
{
    /// <summary>
    /// For each token, the direction in the normalized residual stream whose dot product gives its
    /// logit (up to constant biases): the unembedding row times the final norm's weight.
    /// </summary>
    public Tensor UnembedDirections(long[] tokens)
    {
        using var scope = NewDisposeScope();
        var ids = tensor(tokens, ScalarType.Int64, Device);
        var rows = Weights.WU.index_select(0, ids).to(ScalarType.Float32);
        // After weight processing the final norm's weight is folded into W_U and is gone (null).
        var gain = Weights.LnFinalW is not { } w || Config.Norm == NormKind.LayerNormNoAffine ? null
            : Config.Norm == NormKind.RmsNormPlusOne ? w.to(ScalarType.Float32).Add(1.0)
            : w.to(ScalarType.Float32);
        return (gain is null ? rows : rows * gain).MoveToOuterDisposeScope();
    }
}
