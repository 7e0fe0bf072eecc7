using Mechanist.Tensors;
using Mechanist.IO;
using Mechanist.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Mechanist.Hooks;

/// <summary>
/// Activations recorded at hook points during one run (and their gradients, named "NAME_grad", when
/// recorded with backward). Owns its tensors: dispose it when done. Mirrors TransformerLens's
/// ActivationCache: lookup by name or (kind, layer), accumulated and decomposed residual streams,
/// per-head results, norm scaling of stacks and logit attributions.
/// </summary>
public sealed class ActivationCache : IDisposable
{
    readonly Dictionary<string, Tensor> _tensors = new();
    readonly Dictionary<string, Func<Tensor>> _lazy = new();
    readonly List<string> _order = new();
    readonly List<Tensor> _owned = new();

    readonly HookedTransformer? _model;

    /// <summary>Creates an empty cache for <paramref name="model"/>.</summary>
    public ActivationCache(HookedTransformer model) : this(model.HookPoints, model.Name) => _model = model;

    /// <summary>Creates an empty cache for a model with these hook points (an encoder-decoder's cache).</summary>
    public ActivationCache(HookRegistry registry, string modelName) { Registry = registry; ModelName = modelName; }

    /// <summary>The hook points of the model the activations come from.</summary>
    public HookRegistry Registry { get; }

    /// <summary>The model's name.</summary>
    public string ModelName { get; }

    /// <summary>The decoder-only (or encoder) model the activations come from; residual decompositions and logit attributions need it.</summary>
    public HookedTransformer Model => _model ?? throw new MechanistException(
        $"{ModelName} is an encoder-decoder: residual stacks, decompositions and logit attributions of this cache need a decoder-only or encoder model");

    /// <summary>Cached names, in recording order.</summary>
    public IReadOnlyCollection<string> Names => _order;

    /// <summary>Bytes held now: stored activations and the inputs kept for lazily computed ones (not yet computed values excluded).</summary>
    public long StoredBytes
    {
        get
        {
            lock (_lazy)
                return _tensors.Values.Concat(_owned).Distinct().Sum(t => t.numel() * t.element_size());
        }
    }

    /// <summary>Whether a name is cached.</summary>
    public bool Contains(string name) => _tensors.ContainsKey(name) || _lazy.ContainsKey(name);

    /// <summary>The activation at a hook point.</summary>
    public Tensor this[string name] => _tensors.TryGetValue(name, out var t) ? t : Materialize(name) ??
        throw new MechanistException($"'{name}' is not in the cache" + (Registry.Contains(name.EndsWith("_grad") ? name[..^5] : name) ? " (it was not selected when running)" : "; 'mechanist hooks' lists hook point names"));

    /// <summary>The activation of a kind at a layer ("resid_pre", "pattern", "q", "post", ...).</summary>
    public Tensor this[string kind, int layer] => this[HookNames.Act(kind, layer)];

    /// <summary>The activation of a kind at a layer.</summary>
    public Tensor this[HookKind kind, int layer] => this[Registry.Name(kind, layer)];

    /// <summary>The activation of a kind at a layer of one stack (an encoder-decoder's encoder or decoder).</summary>
    public Tensor this[HookStack stack, HookKind kind, int layer] => this[Registry.Name(stack, kind, layer)];

    internal void Store(string name, Tensor t)
    {
        lock (_lazy)
        {
            if (_tensors.Remove(name, out var old)) old.Dispose();
            else if (!_lazy.Remove(name)) _order.Add(name);
            _tensors[name] = t.DetachFromDisposeScope();
        }
    }

    /// <summary>
    /// Records a value computed on first access (attention scores and patterns of a fused-attention run are rebuilt
    /// from the cached queries and keys only when read). <paramref name="inputs"/> are kept until the cache is disposed.
    /// </summary>
    internal void StoreLazy(string name, Func<Tensor> compute, params Tensor[] inputs)
    {
        lock (_lazy)
        {
            foreach (var t in inputs) _owned.Add(t.DetachFromDisposeScope());
            if (_tensors.Remove(name, out var old)) old.Dispose();
            else if (!_lazy.ContainsKey(name)) _order.Add(name);
            _lazy[name] = compute;
        }
    }

    Tensor? Materialize(string name)
    {
        lock (_lazy)
        {
            if (_tensors.TryGetValue(name, out var done)) return done;
            if (!_lazy.Remove(name, out var compute)) return null;
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var t = compute().MoveToOuterDisposeScope();
            _tensors[name] = t.DetachFromDisposeScope();
            return t;
        }
    }

    internal void CollectGradients(Dictionary<string, Tensor> sources)
    {
        foreach (var (name, t) in sources)
            if (t.grad is { } g) Store(name + "_grad", g.DetachedClone());
        // One tensor can sit at two hook points (resid_post of a block is resid_pre of the next).
        foreach (var t in new HashSet<Tensor>(sources.Values, ReferenceEqualityComparer.Instance)) t.Dispose();
        sources.Clear();
    }

    /// <summary>
    /// The residual stream entering each layer up to <paramref name="layer"/> (default: all, plus the final
    /// residual) as [components, batch, pos, d_model] with labels "0_pre", "0_mid", ..., "final_post".
    /// </summary>
    public (Tensor Stack, string[] Labels) AccumulatedResid(int? layer = null, bool includeMid = false, bool applyLn = false)
    {
        int n = Model.Config.NLayers, upTo = layer ?? n;
        var parts = new List<Tensor>(); var labels = new List<string>();
        for (int l = 0; l < Math.Min(upTo, n); l++)
        {
            parts.Add(this[HookKind.ResidPre, l]); labels.Add($"{l}_pre");
            if (includeMid && !Model.Config.ParallelResidual && !Model.Config.AttnOnly) { parts.Add(this[HookKind.ResidMid, l]); labels.Add($"{l}_mid"); }
        }
        if (upTo >= n) { parts.Add(this[HookKind.ResidPost, n - 1]); labels.Add("final_post"); }
        var stack = stack_(parts);
        return (applyLn ? ApplyLnToStack(stack, layer) : stack, labels.ToArray());
    }

    /// <summary>
    /// The residual stream entering <paramref name="layer"/> (default: the unembedding) split into the
    /// outputs that wrote it: embed, pos_embed, each attention and MLP output. The parts sum to it.
    /// </summary>
    public (Tensor Stack, string[] Labels) DecomposeResid(int? layer = null, bool mlpInput = false, bool applyLn = false, bool includeEmbeds = true)
    {
        int n = Model.Config.NLayers, upTo = layer ?? n;
        if (Model.Config.PostLayerNorm)
            throw new MechanistException($"{Model.Name} normalises its residual stream after every block (post-LN, as BERT): the stream is not a sum of the components' outputs, so it does not decompose");
        var parts = new List<Tensor>(); var labels = new List<string>();
        if (includeEmbeds && Model.Config.EmbeddingNorm)
        {
            // The embedding is normalised before the first block (BLOOM): what the blocks add to is block 0's input.
            parts.Add(this[HookKind.ResidPre, 0]); labels.Add("embed");
        }
        else if (includeEmbeds)
        {
            parts.Add(this[HookNames.Embed]); labels.Add("embed");
            if (Contains(HookNames.PosEmbed)) { parts.Add(this[HookNames.PosEmbed]); labels.Add("pos_embed"); }
        }
        for (int l = 0; l < upTo; l++)
        {
            parts.Add(this[HookKind.AttnOut, l]); labels.Add($"{l}_attn_out");
            if (Model.Config.AttnOnly) continue;
            parts.Add(this[HookKind.MlpOut, l]); labels.Add($"{l}_mlp_out");
        }
        if (mlpInput && upTo < n) { parts.Add(this[HookKind.AttnOut, upTo]); labels.Add($"{upTo}_attn_out"); }
        var stack = stack_(parts);
        return (applyLn ? ApplyLnToStack(stack, layer, mlpInput) : stack, labels.ToArray());
    }

    /// <summary>
    /// Each head's output written to the residual stream, for layers below <paramref name="layer"/>:
    /// [layers·heads, batch, pos, d_model], labels "L{l}H{h}". Uses attn.hook_result when cached, else
    /// computes it from attn.hook_z and W_O (biases excluded, as in TransformerLens).
    /// </summary>
    public (Tensor Stack, string[] Labels) StackHeadResults(int? layer = null, bool applyLn = false)
    {
        var cfg = Model.Config;
        int upTo = layer ?? cfg.NLayers;
        var parts = new List<Tensor>(); var labels = new List<string>();
        for (int l = 0; l < upTo; l++)
        {
            Tensor result;
            if (Contains(HookNames.Act(HookKind.Result, l))) result = this[HookKind.Result, l];
            else
            {
                var wo = Model.Computed(Model.Weights.Blocks[l].Wo).view(cfg.DModel, cfg.NHeads, cfg.DHead).permute(1, 2, 0);
                result = einsum("bphd,hdm->bphm", this[HookKind.Z, l], wo);
            }
            // Through a post-attention norm (Gemma-2/3, OLMo-2) with its scale frozen, the heads still add up to hook_attn_out.
            if (cfg.PostNorms) result = FreezePostNorm(result.permute(2, 0, 1, 3), l, mlp: false).permute(1, 2, 0, 3);
            for (int h = 0; h < cfg.NHeads; h++) { parts.Add(result.select(2, h)); labels.Add($"L{l}H{h}"); }
        }
        var stack = stack_(parts);
        return (applyLn ? ApplyLnToStack(stack, layer) : stack, labels.ToArray());
    }

    /// <summary>
    /// Parts [..., batch, pos, d_model] of layer <paramref name="layer"/>'s attention (or MLP) output taken through the norm that
    /// follows it in models with post-norms (Gemma-2/3, OLMo-2), linearly: the norm's cached scale is frozen and its weight applied,
    /// so parts that sum to the sub-layer's raw output sum to <c>hook_attn_out</c> (<c>hook_mlp_out</c>). Unchanged without post-norms.
    /// </summary>
    public Tensor FreezePostNorm(Tensor parts, int layer, bool mlp)
    {
        var cfg = Model.Config;
        if (!cfg.PostNorms) return parts;
        var scale = this[mlp ? HookKind.Ln2PostScale : HookKind.Ln1PostScale, layer]; // [batch, pos, 1]
        var x = cfg.Norm is NormKind.LayerNorm or NormKind.LayerNormNoAffine ? parts - parts.mean(new long[] { -1 }, keepdim: true) : parts;
        x = x / scale.to(x.dtype);
        var w = mlp ? Model.Weights.Blocks[layer].PostMlpNormW : Model.Weights.Blocks[layer].PostAttnNormW;
        if (w is null) return x;
        return cfg.Norm == NormKind.RmsNormPlusOne ? x * w.to(x.dtype).Add(1L) : x * w.to(x.dtype);
    }

    /// <summary>
    /// Applies the norm that reads the residual at <paramref name="layer"/> (default: the final norm) to a
    /// stack of residual components, using the cached scale: centred (LayerNorm) and divided by the scale.
    /// Weights are not applied (fold them into the direction, as <see cref="LogitAttrs"/> does). When the stack
    /// holds a single position, pass it as <paramref name="position"/> so the matching scale is used.
    /// </summary>
    public Tensor ApplyLnToStack(Tensor stack, int? layer = null, bool mlpInput = false, int? position = null)
    {
        int n = Model.Config.NLayers;
        string scaleName = layer is null || layer >= n ? HookNames.LnFinalScale
            : HookNames.Act(mlpInput ? HookKind.Ln2Scale : HookKind.Ln1Scale, layer.Value);
        var scale = this[scaleName];
        if (position is { } p) scale = scale[.., p..(p + 1)];
        var centred = Model.Config.Norm is NormKind.LayerNorm or NormKind.LayerNormNoAffine ? stack - stack.mean(new long[] { -1 }, keepdim: true) : stack;
        return centred / scale;
    }

    /// <summary>
    /// Direct logit attribution: each component's contribution to the logit of <paramref name="tokens"/>
    /// (minus that of <paramref name="incorrectTokens"/> when given). <paramref name="stack"/> is
    /// [components, batch, d_model] already divided by the final norm scale (see <see cref="ApplyLnToStack"/>);
    /// the final norm's weight is folded into the unembedding direction here.
    /// </summary>
    public Tensor LogitAttrs(Tensor stack, long[] tokens, long[]? incorrectTokens = null)
    {
        var direction = Model.UnembedDirections(tokens);
        if (incorrectTokens != null) direction = direction - Model.UnembedDirections(incorrectTokens);
        return (stack * direction.to(stack.dtype)).sum(-1);
    }

    /// <summary>Writes every cached tensor (fp32) to a safetensors file, atomically.</summary>
    public void Save(string path, IReadOnlyDictionary<string, Tensor>? extra = null)
    {
        using var scope = NewDisposeScope();
        var all = _order.Select(n => new KeyValuePair<string, Tensor>(n, this[n].to(ScalarType.Float32).cpu()))
            .Concat((extra ?? new Dictionary<string, Tensor>()).Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.to(ScalarType.Float32).cpu())));
        SafetensorsWriter.Write(path, all, new Dictionary<string, string> { ["model"] = ModelName, ["producer"] = "mechanist" });
    }

    static Tensor stack_(List<Tensor> parts) =>
        parts.Count > 0 ? stack(parts) : throw new MechanistException("nothing to stack: choose a later layer");

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in _tensors.Values.Concat(_owned)) t.Dispose();
        _tensors.Clear(); _owned.Clear(); _lazy.Clear(); _order.Clear();
    }
}
