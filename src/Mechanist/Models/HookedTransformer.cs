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
    /// <summary>Weight and activation dtype (float32 by default).</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;

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
    readonly Rotary? _rotary;
    readonly List<ForwardHookSpec> _permanentHooks = new();
    readonly AsyncLocal<ScopedHooks?> _scopedHooks = new();

    /// <summary>Builds a model from a configuration and its weights (ownership of the weights passes to the model).</summary>
    public HookedTransformer(TransformerConfig config, TransformerWeights weights, TextTokenizer? tokenizer = null, string name = "model")
    {
        TorchRuntime.EnsureLoaded();
        Config = config; Weights = weights; Tokenizer = tokenizer; Name = name;
        Device = weights.WE.device;
        DType = weights.WE.dtype;
        _blockNames = Enumerable.Range(0, config.NLayers).Select(l => new BlockHookNames(l)).ToArray();
        if (config.Positional == PositionKind.Rotary) _rotary = new Rotary(config, Device);
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

    /// <summary>Weight dtype.</summary>
    public ScalarType DType { get; }

    /// <summary>
    /// Use libtorch's fused attention when nothing reads the scores or the pattern (on by default; about 40%
    /// faster at 1,024 tokens). Its results differ from the unfused path by float rounding (~1e-6), so a run
    /// that caches patterns and one that does not are equal to that precision, not bit for bit; turn it
    /// off for bit-identical comparisons.
    /// </summary>
    public bool FusedAttention { get; set; } = true;

    /// <summary>Compute per-head outputs at <c>attn.hook_result</c> (costs memory; TransformerLens's use_attn_result).</summary>
    public bool UseAttnResult { get; set; }

    /// <summary>Loads a model folder, llama2.c file or cached hub model.</summary>
    public static HookedTransformer Load(string spec, LoadOptions? options = null)
    {
        options ??= new LoadOptions();
        TorchRuntime.EnsureLoaded();
        using var source = ModelSource.Open(spec, options.Open);
        return FromSource(source, options.DType, DeviceFor(options.Device));
    }

    /// <summary>Builds a model from an opened source.</summary>
    public static HookedTransformer FromSource(ModelSource source, ScalarType dtype, Device device)
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
        return new HookedTransformer(cfg, weights, source.Tokenizer, source.Name);
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

    /// <summary>Every hook point name, in forward order.</summary>
    public IReadOnlyList<string> HookPointNames()
    {
        var names = new List<string> { HookNames.Embed };
        if (Config.Positional == PositionKind.Learned) names.Add(HookNames.PosEmbed);
        foreach (var n in _blockNames)
        {
            names.AddRange(new[] { n.ResidPre, n.Ln1Scale, n.Ln1Normalized, n.Q, n.K, n.V });
            if (Config.Positional == PositionKind.Rotary) names.AddRange(new[] { n.RotQ, n.RotK });
            names.AddRange(new[] { n.AttnScores, n.Pattern, n.Z });
            if (UseAttnResult) names.Add(n.Result);
            if (Config.PostNorms) names.AddRange(new[] { n.Ln1PostScale, n.Ln1PostNormalized });
            names.Add(n.AttnOut);
            if (Config.AttnOnly) { names.Add(n.ResidPost); continue; }
            if (!Config.ParallelResidual) names.Add(n.ResidMid);
            names.AddRange(new[] { n.Ln2Scale, n.Ln2Normalized, n.MlpPre });
            if (Config.GatedMlp) names.Add(n.MlpPreLinear);
            names.Add(n.MlpPost);
            if (Config.PostNorms) names.AddRange(new[] { n.Ln2PostScale, n.Ln2PostNormalized });
            names.AddRange(new[] { n.MlpOut, n.ResidPost });
        }
        names.AddRange(new[] { HookNames.LnFinalScale, HookNames.LnFinalNormalized, HookNames.UnembedIn, HookNames.UnembedOut });
        return names;
    }

    /// <summary>Hook names with their shapes for a [batch, pos] input ("batch"/"pos" symbolic).</summary>
    public IReadOnlyList<(string Name, string Shape)> HookPointShapes()
    {
        string d = Config.DModel.ToString(), h = Config.NHeads.ToString(), kv = Config.NKvHeads.ToString(), dh = Config.DHead.ToString();
        string Shape(string name)
        {
            string leaf = name[(name.LastIndexOf('.') + 1)..];
            string parent = name.Contains('.') ? name[..name.LastIndexOf('.')] : "";
            return leaf switch
            {
                "hook_scale" => "[batch, pos, 1]",
                "hook_q" or "hook_rot_q" or "hook_z" => $"[batch, pos, {h}, {dh}]",
                "hook_k" or "hook_v" or "hook_rot_k" => $"[batch, pos, {kv}, {dh}]",
                "hook_attn_scores" or "hook_pattern" => $"[batch, {h}, pos, pos]",
                "hook_result" => $"[batch, pos, {h}, {d}]",
                "hook_pre" or "hook_pre_linear" or "hook_post" => $"[batch, pos, {Config.DMlp}]",
                "hook_out" when parent == "unembed" => $"[batch, pos, {Config.VocabSize}]",
                _ => $"[batch, pos, {d}]",
            };
        }
        return HookPointNames().Select(n => (n, Shape(n))).ToList();
    }

    /// <summary>Throws an error that suggests the closest names when <paramref name="name"/> is not a hook point.</summary>
    public void CheckHookName(string name)
    {
        var names = HookPointNames();
        if (names.Contains(name)) return;
        var closest = names.OrderBy(n => Levenshtein(n, name)).Take(3);
        throw new MechanistException($"unknown hook point '{name}'; did you mean {string.Join(", ", closest.Select(c => $"'{c}'"))}? ('mechanist hooks' lists them all)");
    }

    static int Levenshtein(string a, string b)
    {
        var d = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) d[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            int prev = d[0]; d[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int tmp = d[j];
                d[j] = Math.Min(Math.Min(d[j] + 1, d[j - 1] + 1), prev + (a[i - 1] == b[j - 1] ? 0 : 1));
                prev = tmp;
            }
        }
        return d[b.Length];
    }

    /// <summary>Adds a hook that stays until <see cref="ResetHooks"/> (TransformerLens's permanent hooks).</summary>
    public void AddPermanentHook(HookFilter filter, ForwardHook hook)
    {
        if (filter.ExactName is { } n) CheckHookName(n);
        lock (_permanentHooks) _permanentHooks.Add(new ForwardHookSpec(filter, hook));
    }

    /// <summary>Removes all permanent hooks.</summary>
    public void ResetHooks() { lock (_permanentHooks) _permanentHooks.Clear(); }

    /// <summary>
    /// Hooks active until the returned handle is disposed (<c>using var _ = model.Hooks(...)</c>). They are
    /// visible only to runs in the same async flow, so concurrent callers never see each other's hooks.
    /// </summary>
    public IDisposable Hooks(params ForwardHookSpec[] hooks)
    {
        foreach (var h in hooks) if (h.Filter.ExactName is { } n) CheckHookName(n);
        var scoped = new ScopedHooks(hooks, _scopedHooks.Value, this);
        _scopedHooks.Value = scoped;
        return scoped;
    }

    sealed class ScopedHooks(IReadOnlyList<ForwardHookSpec> hooks, ScopedHooks? parent, HookedTransformer owner) : IDisposable
    {
        public IReadOnlyList<ForwardHookSpec> Hooks { get; } = hooks;
        public ScopedHooks? Parent { get; } = parent;
        public void Dispose() { if (owner._scopedHooks.Value == this) owner._scopedHooks.Value = Parent; }
    }

    List<ForwardHookSpec> ActiveForwardHooks(RunOptions o)
    {
        var all = new List<ForwardHookSpec>();
        lock (_permanentHooks) all.AddRange(_permanentHooks);
        var scopes = new Stack<ScopedHooks>();
        for (var s = _scopedHooks.Value; s != null; s = s.Parent) scopes.Push(s);
        foreach (var s in scopes) all.AddRange(s.Hooks);
        foreach (var h in o.Hooks) if (h.Filter.ExactName is { } n) CheckHookName(n);
        all.AddRange(o.Hooks);
        return all;
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
        var state = new ForwardState(ActiveForwardHooks(options), options.BackwardHooks, null, false);
        return Execute(tokens, options, state);
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
        var state = new ForwardState(ActiveForwardHooks(options), options.BackwardHooks, cache, false) { CacheFilter = names ?? (_ => true) };
        try { return (Execute(tokens, options, state), cache); }
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
        var state = new ForwardState(ActiveForwardHooks(options), options.BackwardHooks, cache, true) { CacheFilter = names ?? (_ => true) };
        try
        {
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
        var gain = Config.Norm switch
        {
            NormKind.RmsNormPlusOne => 1.0f + Weights.LnFinalW!.to(ScalarType.Float32),
            NormKind.LayerNormNoAffine => null,
            _ => Weights.LnFinalW?.to(ScalarType.Float32),
        };
        return (gain is null ? rows : rows * gain).MoveToOuterDisposeScope();
    }
}
