using Mechanist.Dictionaries;
using Mechanist.Hooks;
using Mechanist.Models;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>One term of a QK attribution: the part of a head's score due to a query-side and a key-side component.</summary>
/// <param name="Query">Query-side component id (graph-file ids: <c>{l}_{f}_{p}</c>, <c>{l}_-1_{p}</c>, <c>E_{token}_{p}</c>, …), or
/// <see cref="QkAttribution.Bias"/> for the key-side component's term with the query side's constant (or <see cref="QkAttribution.Alibi"/>).</param>
/// <param name="Key">Key-side component id, or <see cref="QkAttribution.Bias"/> / <see cref="QkAttribution.Alibi"/>.</param>
/// <param name="Value">Its share of the pre-softmax score.</param>
public sealed record QkTerm(string Query, string Key, double Value);

/// <summary>A head's attention score between a query and a key position written as a sum over residual components.</summary>
/// <param name="Layer">Layer.</param>
/// <param name="Head">Query head.</param>
/// <param name="Query">Query position.</param>
/// <param name="Key">Key position.</param>
/// <param name="Score">The model's pre-softmax score (before any soft-cap, with ALiBi), recomputed from the clean residual stream.</param>
/// <param name="Softcapped">The score after the model's attention soft-cap (the score itself where there is none).</param>
/// <param name="Sum">The sum of every term (equals <paramref name="Score"/> up to rounding).</param>
/// <param name="Terms">The terms kept, largest |value| first.</param>
/// <param name="TermCount">Terms in all (pairs, one-sided terms, the constant).</param>
/// <param name="Rest">The sum of the terms not kept.</param>
public sealed record QkAttributionResult(int Layer, int Head, int Query, int Key, double Score, double Softcapped, double Sum, QkTerm[] Terms, int TermCount, double Rest);

/// <summary>The components of the residual stream entering one layer at one position: ids and vectors [n, d_model] (float64).</summary>
public sealed record ResidualComponents(string[] Ids, Tensor Vectors) : IDisposable
{
    /// <inheritdoc/>
    public void Dispose() => Vectors.Dispose();
}

/// <summary>
/// QK attribution ("Tracing Attention Computation Through Feature Interactions", Anthropic 2025): with the norm scales (and q/k-norm
/// scales) frozen at their clean values, the input of layer l at position p is a sum of components — the token embedding
/// <c>E_{token}_{p}</c>, a learned position embedding <c>P_{p}</c>, for every earlier layer each head's output <c>A_{l}_{h}_{p}</c> (clean
/// pattern) and the attention output bias <c>B_{l}</c>, and the MLP output: with transcoders, each active feature <c>{l}_{f}_{p}</c> (its
/// decoders into the layers below l, summed), <c>S_{l}_{p}</c> (b_dec plus the skip of the clean input) and the error <c>{l}_-1_{p}</c>;
/// without, the whole MLP output <c>M_{l}_{p}</c>. The query and key maps are then affine, so a head's score is exactly
/// Σ pairs + Σ query-side terms (with the key side's constant) + Σ key-side terms + a constant (+ ALiBi's position term).
/// Everything is computed in float64 from one clean run. Refused for post-LN models (BERT), where no such split exists.
/// </summary>
public sealed class QkAttribution : IDisposable
{
    /// <summary>The id of a side's constant (its biases: norm bias, b_Q or b_K) in a one-sided term.</summary>
    public const string Bias = "bias";

    /// <summary>The id of ALiBi's position term.</summary>
    public const string Alibi = "alibi";

    readonly HookedTransformer _model;
    readonly ReplacementModel? _rm;
    readonly ActivationCache _cache;
    readonly long[] _ids;
    readonly int _positions;
    readonly Float64Weights _f64 = new();
    // Per (layer, position, side): the component ids, their maps through the side's affine map without its constant [n, heads, dh],
    // and the constant [heads, dh]; many scores of one graph share a query or a key.
    readonly Dictionary<(int Layer, int Position, bool Query), (string[] Ids, Tensor Map, Tensor Constant)> _sides = new();

    /// <summary>Runs the prompt [1, T] once; with <paramref name="replacement"/>, MLP outputs split into its features, S terms and errors.</summary>
    QkAttribution(HookedTransformer model, Tensor tokens, ReplacementModel? replacement)
    {
        var cfg = model.Config;
        if (cfg.PostLayerNorm) throw new MechanistException("QK attribution needs a pre-norm model (a post-LN block such as BERT's normalises the sum of its components; there is no linear split)");
        if (tokens.dim() != 2 || tokens.shape[0] != 1) throw new MechanistException("QK attribution takes one prompt [1, pos]");
        _model = model; _rm = replacement;
        _ids = tokens[0].cpu().data<long>().ToArray();
        _positions = _ids.Length;
        var reg = model.HookPoints;
        var names = new HashSet<string>();
        for (int l = 0; l < cfg.NLayers; l++)
        {
            names.Add(reg.Name(HookKind.ResidPre, l)); names.Add(reg.Name(HookKind.Z, l));
            if (cfg.PreNorms) names.Add(reg.Name(HookKind.Ln1Scale, l));
            if (cfg.PostNorms) names.Add(reg.Name(HookKind.Ln1PostScale, l));
            if (!cfg.AttnOnly) names.Add(reg.Name(HookKind.MlpOut, l));
        }
        if (reg.Has(HookKind.PosEmbed)) names.Add(reg.Name(HookKind.PosEmbed));
        using var _ = no_grad();
        var (logits, cache) = model.RunWithCache(tokens, names.Contains);
        logits.Dispose();
        _cache = cache;
    }

    /// <summary>QK attribution over an attention-only or any pre-norm model without transcoders (MLP outputs are single components).</summary>
    public static QkAttribution For(HookedTransformer model, Tensor tokens) => new(model, tokens, null);

    /// <summary>QK attribution in a replacement model: MLP outputs split into its features, S terms and error nodes, as its graph has them.</summary>
    public static QkAttribution For(ReplacementModel replacement) => new(replacement.Model, replacement.Tokens, replacement);

    /// <summary>Positions of the prompt.</summary>
    public int Positions => _positions;

    Tensor Row(HookKind kind, int layer, long position) => _cache[kind, layer][0, position].to(ScalarType.Float64);

    /// <summary>Every component of the residual stream entering <paramref name="layer"/> at <paramref name="position"/>; they sum to resid_pre.</summary>
    public ResidualComponents Components(int layer, int position)
    {
        var cfg = _model.Config;
        if (layer < 0 || layer >= cfg.NLayers) throw new MechanistException($"layer {layer} is outside 0..{cfg.NLayers - 1}");
        if (position < 0 || position >= _positions) throw new MechanistException($"position {position} is outside 0..{_positions - 1}");
        var ids = new List<string>(); var rows = new List<Tensor>();
        using var scope = NewDisposeScope();
        var reg = _model.HookPoints;
        // The embedding: the residual entering layer 0 without the learned position embedding (scaled or normalised as the model does).
        var resid0 = Row(HookKind.ResidPre, 0, position);
        if (reg.Has(HookKind.PosEmbed))
        {
            var pos = _cache[reg.Name(HookKind.PosEmbed)][0, position].to(ScalarType.Float64);
            ids.Add($"E_{_ids[position]}_{position}"); rows.Add(resid0.sub(pos));
            ids.Add($"P_{position}"); rows.Add(pos);
        }
        else { ids.Add($"E_{_ids[position]}_{position}"); rows.Add(resid0); }
        for (int l = 0; l < layer; l++)
        {
            var w = _model.Weights.Blocks[l];
            // Each head's output with the clean pattern, z_h · W_O of that head (and the post-attention norm, its scale frozen).
            var z = _cache[HookKind.Z, l][0, position].to(ScalarType.Float64);                                  // [H, dh]
            var wo = _f64.Of(w.Wo).view(cfg.DModel, cfg.NHeads, cfg.DHead).permute(1, 2, 0);      // [H, dh, d]
            var heads = einsum("hd,hdm->hm", z, wo);
            var bias = _f64.OfOptional(w.Bo);
            if (cfg.PostNorms)
            {
                var scale = _cache[HookKind.Ln1PostScale, l][0, position].to(ScalarType.Float64);              // [1]
                var post = PostNormFactor(w.PostAttnNormW);
                heads = heads.div(scale); bias = bias?.div(scale);
                if (post is not null) { heads = heads.mul(post); bias = bias?.mul(post); }
            }
            for (int h = 0; h < cfg.NHeads; h++) { ids.Add($"A_{l}_{h}_{position}"); rows.Add(heads[h]); }
            if (bias is not null) { ids.Add($"B_{l}"); rows.Add(bias); }
            if (cfg.AttnOnly) continue;
            var mlpOut = Row(HookKind.MlpOut, l, position);
            if (_rm is null) { ids.Add($"M_{l}_{position}"); rows.Add(mlpOut); continue; }
            // S = b_dec + the skip of the clean input; the error is what features and S leave of the true MLP output.
            var d = _rm.Dictionary;
            var s = d.DecoderBias(l).to(ScalarType.Float64).flatten();
            var input = _rm.Clean[SplicePoints.Under(reg.Name(HookKind.MlpOut, l), SplicePoints.Input)][0, position].unsqueeze(0);
            if (d.Skip(l, input) is { } skip) s = s.add(skip[0].to(ScalarType.Float64), Scalars.One);
            var error = mlpOut.sub(s);
            for (int source = 0; source <= l; source++)
            {
                if (!d.WritesTo(source, l)) continue;
                var (idx, acts) = Active(source, position);
                if (idx.shape[0] == 0) continue;
                error = error.sub(acts.unsqueeze(1).mul(d.DecoderRows(source, l, idx).to(ScalarType.Float64)).sum(0L));
            }
            ids.Add($"S_{l}_{position}"); rows.Add(s);
            ids.Add($"{l}_-1_{position}"); rows.Add(error);
        }
        if (_rm is not null)
            for (int source = 0; source < layer; source++)
            {
                // A feature's vector: its activation × its decoders into every layer below `layer` that it writes to, summed.
                var (idx, acts) = Active(source, position);
                if (idx.shape[0] == 0) continue;
                Tensor? sum = null;
                for (int target = source; target < layer; target++)
                    if (_rm.Dictionary.WritesTo(source, target))
                    {
                        var rowsT = _rm.Dictionary.DecoderRows(source, target, idx).to(ScalarType.Float64);
                        sum = sum is null ? rowsT : sum.add(rowsT, Scalars.One);
                    }
                if (sum is null) continue;
                var vectors = acts.unsqueeze(1).mul(sum);
                var features = idx.data<long>().ToArray();
                for (int k = 0; k < features.Length; k++) { ids.Add($"{source}_{features[k]}_{position}"); rows.Add(vectors[k]); }
            }
        return new ResidualComponents(ids.ToArray(), stack(rows.ToArray()).MoveToOuterDisposeScope());
    }

    /// <summary>The active features of a dictionary layer at a position (BOS zeroed, as the replacement model has them).</summary>
    (Tensor Index, Tensor Acts) Active(int layer, int position)
    {
        var a = _rm!.Activations[layer, position];
        var idx = a.nonzero().flatten();
        return (idx, a.index_select(0, idx).to(ScalarType.Float64));
    }

    Tensor? PostNormFactor(Tensor? weight) => weight is null ? null
        : _model.Config.Norm == NormKind.RmsNormPlusOne ? _f64.Of(weight).add(Scalars.One, Scalars.One) : _f64.Of(weight);

    /// <summary>
    /// Queries (or keys) of layer <paramref name="layer"/> at <paramref name="position"/> for residual vectors X [n, d_model]: the frozen
    /// input norm, W_Q (W_K) with its bias, the frozen q/k norm and the rotation of the position — affine in X. [n, heads, d_head].
    /// </summary>
    public Tensor Project(int layer, int position, Tensor x, bool query)
    {
        var cfg = _model.Config; var w = _model.Weights.Blocks[layer];
        using var scope = NewDisposeScope();
        var flat = Flat(layer, position, x, query);
        int heads = query ? cfg.NHeads : cfg.NKvHeads;
        var norm = query ? w.QNormW : w.KNormW;
        if (cfg.QkNorm)
        {
            // The q/k norm with its clean scale (from the clean residual), frozen like every other norm scale.
            using var clean = Flat(layer, position, Row(HookKind.ResidPre, layer, position).unsqueeze(0), query);
            var cleanHeads = cfg.QkNormAcrossHeads ? clean : clean.view(1, heads, cfg.DHead);
            var rms = cleanHeads.Square().mean(new long[] { -1 }, keepdim: true).add(Scalars.Of(cfg.NormEps), Scalars.One).sqrt();
            if (cfg.QkNormAcrossHeads) flat = flat.div(rms).mul(_f64.Of(norm!));
            else flat = flat.view(-1, heads, cfg.DHead).div(rms).mul(_f64.Of(norm!)).view(-1, heads * cfg.DHead);
        }
        var rotated = _model.RotateAt(layer, position, flat.view(1, -1, heads, cfg.DHead));
        return rotated[0].MoveToOuterDisposeScope();
    }

    Tensor Flat(int layer, int position, Tensor x, bool query)
    {
        var cfg = _model.Config; var w = _model.Weights.Blocks[layer];
        var xn = x;
        if (cfg.PreNorms)
        {
            if (cfg.Norm is NormKind.LayerNorm or NormKind.LayerNormNoAffine) xn = xn.sub(xn.mean(new long[] { -1 }, keepdim: true));
            xn = xn.div(_cache[HookKind.Ln1Scale, layer][0, position].to(ScalarType.Float64));
            var weight = _f64.OfOptional(w.Ln1W); var bias = _f64.OfOptional(w.Ln1B);
            if (cfg.Norm == NormKind.RmsNormPlusOne) { if (weight is not null) xn = xn.mul(weight.add(Scalars.One, Scalars.One)); }
            else if (cfg.Norm != NormKind.LayerNormNoAffine)
            {
                if (weight is not null) xn = xn.mul(weight);
                if (bias is not null && cfg.Norm == NormKind.LayerNorm) xn = xn.add(bias, Scalars.One);
            }
        }
        var matrix = _f64.Of(query ? w.Wq : w.Wk);
        var b = _f64.OfOptional(query ? w.Bq : w.Bk);
        var flat = xn.matmul(matrix.t());
        return b is null ? flat : flat.add(b, Scalars.One);
    }

    /// <summary>
    /// The score of head <paramref name="head"/> of <paramref name="layer"/> from <paramref name="query"/> to <paramref name="key"/> as a sum of
    /// terms; <paramref name="top"/> keeps the largest |value| terms (0: all), the rest summed in <see cref="QkAttributionResult.Rest"/>.
    /// </summary>
    public QkAttributionResult Compute(int layer, int head, int query, int key, int top = 0)
    {
        var cfg = _model.Config;
        if (head < 0 || head >= cfg.NHeads) throw new MechanistException($"head {head} is outside 0..{cfg.NHeads - 1}");
        if (query < 0 || query >= _positions || key < 0 || key >= _positions) throw new MechanistException($"positions must be within 0..{_positions - 1}");
        if (cfg.Causal && key > query) throw new MechanistException($"key position {key} is after query position {query}: a causal model masks it");
        if (cfg.UsesSlidingWindow(layer) && query - key >= cfg.SlidingWindow) throw new MechanistException($"key position {key} is outside layer {layer}'s sliding window of {cfg.SlidingWindow} from query {query}");
        using var scope = NewDisposeScope();
        int kvHead = head / cfg.HeadsPerKvHead;
        var qs = Side(layer, query, true); var ks = Side(layer, key, false);
        var constQ = qs.Constant[head]; var constK = ks.Constant[kvHead];
        var mapQ = qs.Map[.., head];     // [nq, dh]
        var mapK = ks.Map[.., kvHead];   // [nk, dh]
        var scale = Scalars.Of(cfg.AttnScale);
        var pairs = mapQ.matmul(mapK.t()).mul(scale).cpu().data<double>().ToArray();
        var querySide = mapQ.matmul(constK).mul(scale).cpu().data<double>().ToArray();
        var keySide = mapK.matmul(constQ).mul(scale).cpu().data<double>().ToArray();
        double constant = constQ.dot(constK).mul(scale).item<double>();
        var terms = new List<QkTerm>(pairs.Length + querySide.Length + keySide.Length + 2);
        for (int a = 0; a < qs.Ids.Length; a++)
            for (int b = 0; b < ks.Ids.Length; b++) terms.Add(new QkTerm(qs.Ids[a], ks.Ids[b], pairs[a * ks.Ids.Length + b]));
        for (int a = 0; a < qs.Ids.Length; a++) terms.Add(new QkTerm(qs.Ids[a], Bias, querySide[a]));
        for (int b = 0; b < ks.Ids.Length; b++) terms.Add(new QkTerm(Bias, ks.Ids[b], keySide[b]));
        terms.Add(new QkTerm(Bias, Bias, constant));
        // ALiBi's position term is added after the soft-cap (as the model does), so it stays outside the capped part.
        double position = _model.AlibiRow(key + 1) is { } alibi ? alibi[head, key].to(ScalarType.Float64).item<double>() : 0;
        if (_model.Config.Positional == PositionKind.Alibi) terms.Add(new QkTerm(Alibi, Alibi, position));
        // The score itself, from the clean residual stream through the same maps.
        var q = Project(layer, query, Row(HookKind.ResidPre, layer, query).unsqueeze(0), true)[0, head];
        var k = Project(layer, key, Row(HookKind.ResidPre, layer, key).unsqueeze(0), false)[0, kvHead];
        double raw = q.dot(k).mul(scale).item<double>();
        double score = raw + position;
        double softcapped = cfg.AttnSoftcap is { } cap ? cap * Math.Tanh(raw / cap) + position : score;
        double sum = terms.Sum(t => t.Value);
        var ordered = terms.OrderByDescending(t => Math.Abs(t.Value)).ToList();
        int kept = top <= 0 ? ordered.Count : Math.Min(top, ordered.Count);
        return new QkAttributionResult(layer, head, query, key, score, softcapped, sum, ordered.Take(kept).ToArray(), ordered.Count, ordered.Skip(kept).Sum(t => t.Value));
    }

    /// <summary>One side of a score at (layer, position): component ids, their maps without the side's constant, and the constant (cached).</summary>
    (string[] Ids, Tensor Map, Tensor Constant) Side(int layer, int position, bool query)
    {
        if (_sides.TryGetValue((layer, position, query), out var side)) return side;
        using var scope = NewDisposeScope();
        using var components = Components(layer, position);
        var zero = zeros(1, _model.Config.DModel, ScalarType.Float64, components.Vectors.device);
        var constant = Project(layer, position, zero, query)[0];
        var map = Project(layer, position, components.Vectors, query).sub(constant);
        side = (components.Ids, map.DetachFromDisposeScope(), constant.DetachFromDisposeScope());
        _sides[(layer, position, query)] = side;
        return side;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _cache.Dispose(); _f64.Dispose();
        foreach (var (_, map, constant) in _sides.Values) { map.Dispose(); constant.Dispose(); }
    }
}
