using Mechanist.Dictionaries;
using Mechanist.Hooks;
using Mechanist.Models;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>
/// The replacement model's backward pass written out. With patterns, norm scales and MLP outputs frozen, every readout is a linear
/// function of the residual stream, and one attribution row is a vector–Jacobian product of that map: per layer below the row's
/// target, the transposed attention OV path (W_O, the frozen pattern's mixing over positions, W_V) through the frozen norms, plus the
/// transcoders' skip terms; nothing above the target's layer, nothing past its position, no MLP. Unlike autograd over a retained forward
/// of B prompt copies, it needs only the clean run's patterns and scales (one copy of each), stops at each pass's last position
/// exactly and runs little but the floor's GEMMs. Gradients are laid out positions first, [positions, rows, d] (what the feature
/// columns' batched products over positions read directly); see <see cref="PassGradients"/>.
/// </summary>
internal sealed class FrozenBackward : IDisposable
{
    readonly HookedTransformer _model;
    readonly ICrossLayerDictionary _dictionary;
    readonly TranscoderInput _input;
    readonly TransformerConfig _cfg;
    readonly bool _attnOnly;
    readonly Tensor[] _mixing;                  // per layer the transposed pattern with the norms' frozen scales folded in, [heads, T(key), T(query)]
    readonly Tensor?[] _ln1, _ln2, _post;       // per layer frozen scales [T, 1, 1]
    readonly Tensor _final;                     // [T, 1, 1]
    readonly Tensor?[] _skipWeights;            // W_skip [d_out, d_in] where a layer's skip is a plain linear map
    readonly bool[] _hasSkip;

    FrozenBackward(ReplacementModel rm)
    {
        _model = rm.Model; _dictionary = rm.Dictionary; _input = rm.Input; _cfg = rm.Model.Config; _attnOnly = rm.IsAttentionOnly;
        var reg = _model.HookPoints; var clean = rm.Clean; int L = _cfg.NLayers;
        Tensor Scale(string name) => clean[name][0].to(ScalarType.Float32).unsqueeze(1);     // [1, T, 1] -> [T, 1, 1]
        Tensor ScaleOf(HookKind kind, int l) => Scale(reg.Name(kind, l));   // (For checked that every layer has it)
        _ln1 = Enumerable.Range(0, L).Select(l => _cfg.PreNorms ? ScaleOf(HookKind.Ln1Scale, l) : null).ToArray();
        _ln2 = Enumerable.Range(0, L).Select(l => _cfg.PreNorms && !_attnOnly ? ScaleOf(HookKind.Ln2Scale, l) : null).ToArray();
        _post = Enumerable.Range(0, L).Select(l => _cfg.PostNorms ? ScaleOf(HookKind.Ln1PostScale, l) : null).ToArray();
        // A norm with its scale frozen divides each position by its scale: ln1's at the key (where the mixing's output enters the
        // residual), the post-attention norm's at the query (where the output is read). Both folded into the mixing once.
        _mixing = Enumerable.Range(0, L).Select(l =>
        {
            using var scope = NewDisposeScope();
            var m = clean[reg.Name(HookKind.Pattern, l)][0].to(ScalarType.Float32).transpose(1, 2);          // [H, key, query]
            int T = (int)m.shape[1];
            if (_ln1[l] is { } s1) m = m.div(s1.view(1, T, 1));
            if (_post[l] is { } sp) m = m.div(sp.view(1, 1, T));
            return m.contiguous().MoveToOuterDisposeScope();
        }).ToArray();
        _final = Scale(HookNames.LnFinalScale);
        _outputMaps = new Tensor?[L]; _valueMaps = new Tensor?[L];
        _hasSkip = new bool[L]; _skipWeights = new Tensor?[L];
        if (!_attnOnly)
            for (int l = 0; l < L; l++)
            {
                using (var probe = zeros(1, _cfg.DModel, dtype: _model.DType, device: _model.Device))
                using (var y = _dictionary.Skip(l, probe)) _hasSkip[l] = y is not null;
                if (_hasSkip[l] && _dictionary is TranscoderSet set && set.Layers[l] is Transcoder { WSkip: { } w }) _skipWeights[l] = w;
            }
    }

    /// <summary>
    /// The written-out backward where the model suits it (causal, pre- or post-norm blocks, float32 compute, no hooks in place; BERT's
    /// post-LN blocks, BLOOM's embedding norm, float64/half runs and hooked runs stay on autograd), else null.
    /// </summary>
    public static FrozenBackward? For(ReplacementModel rm)
    {
        var c = rm.Model.Config;
        if (!c.Causal || c.PostLayerNorm || c.EmbeddingNorm || c.MlmHead || rm.Model.DType != ScalarType.Float32) return null;
        // Hooks in place (a pattern zeroed, a direction ablated) change the frozen map: those runs differentiate the hooked forward.
        if (rm.Model.HasActiveHooks) return null;
        var reg = rm.Model.HookPoints;
        bool Has(HookKind kind) => Enumerable.Range(0, c.NLayers).All(l => reg.Points.Any(p => p.Kind == kind && p.Layer == l));
        if (!reg.Points.Any(p => p.Name == HookNames.LnFinalScale) || !Has(HookKind.Pattern) || c.PreNorms && !Has(HookKind.Ln1Scale)
            || c.PreNorms && !rm.IsAttentionOnly && !Has(HookKind.Ln2Scale) || c.PostNorms && !Has(HookKind.Ln1PostScale)) return null;
        return new FrozenBackward(rm);
    }

    /// <summary>
    /// One pass of <paramref name="rows"/> rows whose targets sit below layer <paramref name="top"/> (the number of layers for logits)
    /// and before position <paramref name="positions"/>: features read at their layer's transcoder input, logits along a direction at
    /// the last position (then <paramref name="positions"/> is the prompt's length). The pass runs a layer at a time
    /// (<see cref="Pass.Step"/>), so that several passes can stop at the same layer and their gradients there be read together.
    /// </summary>
    /// <remarks>
    /// With <paramref name="withZ"/> the pass also computes the gradient at every layer's hook_z, [rows, P, heads, d_head]: held until
    /// <see cref="Pass.Finish"/> returns them, or, with <paramref name="zSink"/>, handed to it as each layer is run (a view valid during
    /// the call; layers the pass never runs are not handed over: their gradients are zero), so that nothing holds them all.
    /// </remarks>
    public Pass Start(int rows, int top, int positions, IReadOnlyList<(int Row, GraphNode Node)> features,
        IReadOnlyList<(int Row, Tensor Direction)> logits, bool withZ, Action<int, Tensor>? zSink = null) =>
        new(this, rows, top, positions, features, logits, withZ, zSink);

    /// <summary>
    /// A backward pass between layers. <see cref="Gradient"/> is the gradient at the output of layer <see cref="Layer"/> (its resid_post,
    /// where its MLP's output enters), [P, rows, d], or null while no readout has been reached; <see cref="Step"/> takes it through that
    /// layer to the one below. Tensors it hands out belong to the dispose scope current when they were made (the caller's).
    /// </summary>
    public sealed class Pass
    {
        readonly FrozenBackward _b;
        readonly int _rows, _top, _P;
        readonly Dictionary<int, (int Row, GraphNode Node)[]> _injected;
        readonly Tensor[]? _z;
        readonly Action<int, Tensor>? _zSink;
        // Where the gradient is nonzero before the first step: one position per row (the logits' last position; a feature's own,
        // injected at the first layer the pass runs through), so that step's first product runs over those rows alone. Null after.
        (long[] Positions, long[] Rows)? _fresh;

        /// <summary>The layer the next <see cref="Step"/> runs through (−1 once the embeddings are reached).</summary>
        public int Layer { get; private set; }

        /// <summary>The gradient at layer <see cref="Layer"/>'s output (at the embeddings once done), [P, rows, d]; null while zero.</summary>
        public Tensor? Gradient { get; private set; }

        internal Pass(FrozenBackward b, int rows, int top, int positions, IReadOnlyList<(int Row, GraphNode Node)> features,
            IReadOnlyList<(int Row, Tensor Direction)> logits, bool withZ, Action<int, Tensor>? zSink)
        {
            _b = b; _rows = rows; _top = top; _P = positions;
            int L = b._cfg.NLayers, d = b._cfg.DModel;
            _z = withZ && zSink is null ? new Tensor[L] : null;
            _zSink = withZ ? zSink : null;
            if (logits.Count > 0)
            {
                using var logitScope = NewDisposeScope();
                var u = zeros(new long[] { _P, rows, d }, ScalarType.Float32, b._model.Device);
                foreach (var (row, direction) in logits) u[_P - 1, row] = direction.to(ScalarType.Float32);
                Gradient = b.NormBackward(u, b._model.Weights.LnFinalW, b._model.Weights.LnFinalB, b._final, _P).MoveToOuterDisposeScope();
            }
            _injected = features.GroupBy(f => f.Node.Layer).ToDictionary(x => x.Key, x => x.ToArray());
            Layer = Math.Min(top, L - 1);
            if (logits.Count > 0 && features.Count == 0)
                _fresh = (logits.Select(_ => (long)(_P - 1)).ToArray(), logits.Select(x => (long)x.Row).ToArray());
            else if (logits.Count == 0 && _injected.TryGetValue(Layer, out var first))
                _fresh = (first.Select(x => (long)x.Node.Position).ToArray(), first.Select(x => (long)x.Row).ToArray());
        }

        /// <summary>Runs layer <see cref="Layer"/>'s transposed block: its readouts added, its skip terms, its attention's OV path.</summary>
        public void Step()
        {
            if (Layer < 0) throw new InvalidOperationException("the pass has reached the embeddings");
            var b = _b; var c = b._cfg; int j = Layer, P = _P, rows = _rows;
            var g = Gradient;
            Tensor? next;
            using (var layerScope = NewDisposeScope())
            {
                // The gradient at layer j's transcoder input: the skip term's transpose of the gradient above, plus this layer's readouts.
                Tensor? gx = null;
                if (!b._attnOnly && j < _top && g is not null && b._hasSkip[j]) gx = b.SkipBackward(j, g);
                _injected.TryGetValue(j, out var here);
                Tensor? gAttn, gPre;
                if (gx is null && here is not null && !c.ParallelResidual && !b._attnOnly && b.InputIsResidual && g is not null)
                {
                    // Readouts straight off the residual: added into the gradient in place (the caller has read it; nothing else holds it).
                    b.Inject(g, j, here);
                    gAttn = gPre = g;
                }
                else
                {
                    if (here is not null) gx = Sum(gx, b.Inject(zeros(new long[] { P, rows, c.DModel }, ScalarType.Float32, b._model.Device), j, here));
                    var gMlp = gx is null ? null : b.InputBackward(j, gx, P);
                    if (c.ParallelResidual || b._attnOnly) { gAttn = g; gPre = Sum(g, gMlp); }
                    else { gAttn = Sum(g, gMlp); gPre = gAttn; }
                }
                if (gAttn is not null)
                {
                    // The attention block's input gradient is added into gPre by its last product (gPre is this layer's own or g).
                    bool withZ = _z is not null || _zSink is not null;
                    var zj = b.AttentionBackward(j, gAttn, gPre!, rows, P, withZ, _fresh);
                    if (withZ)
                    {
                        var z = zj!.view(P, rows, c.NHeads, c.DHead).permute(1, 0, 2, 3);
                        if (_z is not null) _z[j] = z.MoveToOuterDisposeScope(); else _zSink!(j, z);
                    }
                }
                next = ReferenceEquals(gPre, g) ? gPre : gPre?.MoveToOuterDisposeScope();
            }
            if (g is not null && !ReferenceEquals(g, next)) g.Dispose();
            Gradient = next;
            Layer--;
            _fresh = null;
        }

        /// <summary>Runs the remaining layers and returns the gradients at the embeddings and (when asked for) at every hook_z.</summary>
        public PassGradients Finish()
        {
            while (Layer >= 0) Step();
            var c = _b._cfg;
            var embed = Gradient ?? zeros(new long[] { _P, _rows, c.DModel }, ScalarType.Float32, _b._model.Device);
            if (_z is not null)
                for (int j = 0; j < c.NLayers; j++) _z[j] ??= zeros(new long[] { _rows, _P, c.NHeads, c.DHead }, ScalarType.Float32, _b._model.Device);
            return new PassGradients(embed, _z);
        }
    }

    /// <summary>Whether the transcoders read the residual stream itself (no norm between it and their input).</summary>
    bool InputIsResidual => !_cfg.PreNorms || _input == TranscoderInput.Resid;

    /// <summary>Adds the readouts of layer <paramref name="layer"/>'s features into <paramref name="x"/> [P, rows, d_in]: each row's encoder row at its position.</summary>
    Tensor Inject(Tensor x, int layer, (int Row, GraphNode Node)[] here)
    {
        var device = _model.Device;
        var index = tensor(here.Select(h => h.Node.Index).ToArray(), device: device);
        var encoder = _dictionary.EncoderRows(layer, index).to(ScalarType.Float32, device);
        var pos = tensor(here.Select(h => (long)h.Node.Position).ToArray(), device: device);
        var row = tensor(here.Select(h => (long)h.Row).ToArray(), device: device);
        return x.index_put_(encoder, new[] { pos, row }, accumulate: true);
    }

    /// <summary>The transpose of layer <paramref name="layer"/>'s skip term (a linear map of the transcoder's input) applied to <paramref name="g"/>.</summary>
    Tensor SkipBackward(int layer, Tensor g)
    {
        if (_skipWeights[layer] is { } w) return matmul(g, w.to(ScalarType.Float32));
        // Another dictionary's skip: its transpose through autograd (the map is linear, so the point it is taken at does not matter).
        using var grad = enable_grad();
        var x = zeros(g.shape, ScalarType.Float32, g.device).requires_grad_(true);
        var y = _dictionary.Skip(layer, x)!;
        return TorchSharp.torch.autograd.grad(new[] { y }, new[] { x }, new[] { g.to(y.dtype) })[0].to(ScalarType.Float32).detach();
    }

    /// <summary>From the transcoder's input back to the residual stream the MLP reads (through ln2 with its frozen scale, unless it reads the residual).</summary>
    Tensor InputBackward(int layer, Tensor gx, int P)
    {
        if (!_cfg.PreNorms || _input == TranscoderInput.Resid) return gx;
        var w = _model.Weights.Blocks[layer];
        return _input == TranscoderInput.Normalized ? NormBackward(gx, null, null, _ln2[layer]!, P) : NormBackward(gx, w.Ln2W, w.Ln2B, _ln2[layer]!, P);
    }

    /// <summary>
    /// The attention block's transpose from its output's gradient [P, rows, d] to its input's (the residual stream before ln1), added
    /// into <paramref name="into"/> [P, rows, d] by the last product; returns the gradient at hook_z [P, rows, heads · d_head] when
    /// asked for.
    /// </summary>
    /// <remarks>
    /// The frozen norms are folded in: their scales into the mixing (<see cref="_mixing"/>), their weights and LayerNorm's centring
    /// into W_O (the post-attention norm, before it) and W_V (ln1, after it): two GEMMs and the mixing, no pass over the gradients
    /// between them. Where only <paramref name="nonzero"/>'s cells of <paramref name="ga"/> can be nonzero, the first GEMM runs over
    /// them alone. <paramref name="into"/> may be <paramref name="ga"/> itself: it is read by the first product, written by the last.
    /// The gradient at hook_z, when asked for, is divided by the post-attention norm's scale there (the mixing holds it).
    /// </remarks>
    Tensor? AttentionBackward(int layer, Tensor ga, Tensor into, int rows, int P, bool withZ, (long[] Positions, long[] Rows)? nonzero)
    {
        var c = _cfg;
        int H = c.NHeads, KV = c.NKvHeads, dh = c.DHead;
        Tensor z;
        if (nonzero is var (positions, rowIndices))
        {
            // Only these (position, row) cells are nonzero: the product over them alone, scattered into zeros.
            var at = new[] { tensor(positions, device: ga.device), tensor(rowIndices, device: ga.device) };
            z = zeros(new long[] { P, rows, (long)H * dh }, ScalarType.Float32, ga.device).index_put_(matmul(ga.index(at), OutputMap(layer)), at);
        }
        else z = matmul(ga, OutputMap(layer));                                                    // [P, rows, H·dh]
        var perHead = z.view(P, rows, H, dh).permute(2, 0, 1, 3).reshape(H, P, (long)rows * dh);  // [H, P(query), rows·dh]
        var mixing = _mixing[layer].narrow(1, 0, P).narrow(2, 0, P);                              // [H, P(key), P(query)]
        var v = bmm(mixing, perHead);                                                             // [H, P(key), rows·dh]
        var vRows = v.view(H, P, rows, dh).permute(1, 2, 0, 3);                                   // [P, rows, H, dh]
        if (KV != H) vRows = vRows.reshape(P, rows, KV, H / KV, dh).sum(3);                       // heads sharing a key-value head
        var flat = vRows.reshape((long)P * rows, (long)KV * dh);
        if (into.is_contiguous()) into.view((long)P * rows, c.DModel).addmm_(flat, ValueMap(layer), 1, 1);
        else into.add_(matmul(flat, ValueMap(layer)).view(P, rows, c.DModel), Scalars.One);
        return !withZ ? null : _post[layer] is { } sp ? z.div(sp.narrow(0, 0, P)) : z;
    }

    /// <summary>
    /// A folded map, computed once per backward where the weights are kept in the compute dtype (a few d × d copies); where they are
    /// stored narrower (bf16 widened per use) it is folded anew each time, so that the backward does not keep a widened copy of them.
    /// </summary>
    Tensor Cached(Tensor?[] cache, int layer, Func<int, Tensor> fold)
    {
        if (_model.StorageDType != _model.DType) return fold(layer);
        if (cache[layer] is null)
        {
            using var scope = NewDisposeScope();
            cache[layer] = fold(layer).contiguous().alias().DetachFromDisposeScope();     // (an alias: the fold may be the weight itself)
        }
        return cache[layer]!;
    }

    /// <summary>The folded maps (<see cref="Cached"/>), freed with this backward.</summary>
    readonly Tensor?[] _outputMaps, _valueMaps;

    /// <summary>Frees the folded maps.</summary>
    public void Dispose()
    {
        foreach (var t in _outputMaps.Concat(_valueMaps)) t?.Dispose();
    }

    /// <summary>W_O [d, H·dh] with the post-attention norm's weight (and centring, for LayerNorms) folded in before it.</summary>
    Tensor OutputMap(int layer) => Cached(_outputMaps, layer, FoldOutputMap);

    /// <summary>W_V [KV·dh, d] with ln1's weight and centring (for LayerNorms) folded in after it.</summary>
    Tensor ValueMap(int layer) => Cached(_valueMaps, layer, FoldValueMap);

    Tensor FoldOutputMap(int layer)
    {
        var w = _model.Weights.Blocks[layer];
        var wo = _model.Computed(w.Wo).to(ScalarType.Float32);
        if (!_cfg.PostNorms) return wo;
        if (Centres) wo = wo.sub(wo.mean(new long[] { 0 }, keepdim: true));                      // C · W_O
        return EffectiveWeight(w.PostAttnNormW, null) is { } e ? wo.mul(e.unsqueeze(1)) : wo;   // diag(w) · C · W_O
    }

    Tensor FoldValueMap(int layer)
    {
        var w = _model.Weights.Blocks[layer];
        var wv = _model.Computed(w.Wv).to(ScalarType.Float32);
        if (!_cfg.PreNorms) return wv;
        if (EffectiveWeight(w.Ln1W, w.Ln1B) is { } e) wv = wv.mul(e);                           // W_V · diag(w)
        return Centres ? wv.sub(wv.mean(new long[] { -1 }, keepdim: true)) : wv;                  // W_V · diag(w) · C
    }

    /// <summary>Whether the model's norms centre (LayerNorms; RMSNorms do not).</summary>
    bool Centres => _cfg.Norm is NormKind.LayerNorm or NormKind.LayerNormNoAffine;

    /// <summary>
    /// The transpose of a norm with its scale frozen: y = w · centre(x) / s (+ b) gives x̄ = centre(w · ȳ / s), the centring for
    /// LayerNorms only (it is its own transpose); w is 1 + weight for Gemma's RMSNorm, absent where folded or not learned.
    /// </summary>
    Tensor NormBackward(Tensor g, Tensor? weight, Tensor? bias, Tensor scale, int P)
    {
        var x = EffectiveWeight(weight, bias) is { } effective ? g.mul(effective) : g;
        x = x.div(scale.narrow(0, 0, P));
        if (Centres) x = x.sub(x.mean(new long[] { -1 }, keepdim: true));
        return x;
    }

    /// <summary>A norm's multiplier as float32: 1 + weight for Gemma's RMSNorm, the weight otherwise; null where folded, not learned or absent.</summary>
    Tensor? EffectiveWeight(Tensor? weight, Tensor? bias) => weight is null && bias is null ? null : _cfg.Norm switch
    {
        NormKind.RmsNormPlusOne => _model.Computed(weight!).to(ScalarType.Float32).add(Scalars.One, Scalars.One),
        NormKind.LayerNormNoAffine => null,
        _ => weight is null ? null : _model.Computed(weight).to(ScalarType.Float32),
    };

    static Tensor? Sum(Tensor? a, Tensor? b) => a is null ? b : b is null ? a : a.add(b, Scalars.One);
}

/// <summary>What one attribution pass's backward reaches at its end.</summary>
/// <param name="Embed">The gradient at the embeddings, [P, rows, d].</param>
/// <param name="Z">Per layer the gradient at hook_z, [rows, P, heads, d_head] (when asked for).</param>
internal sealed record PassGradients(Tensor Embed, Tensor[]? Z);
