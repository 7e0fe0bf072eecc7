using Mechanist.Dictionaries;
using Mechanist.Hooks;
using Mechanist.Models;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>One head's share of an edge, at one destination of its hop.</summary>
/// <param name="Layer">Layer of the attention hop.</param>
/// <param name="Head">Query head.</param>
/// <param name="Query">The position the hop moves the path to (the head's query; its key is the source's position).</param>
/// <param name="Value">The part of the edge whose path first leaves the source's position through this head to this position.</param>
public sealed record HeadLoading(int Layer, int Head, int Query, double Value);

/// <summary>An edge split over the attention heads that carried it.</summary>
/// <param name="Target">Target node id.</param>
/// <param name="Source">Source node id.</param>
/// <param name="Edge">The edge's weight (the sum of the loadings, the same-position share and the rest).</param>
/// <param name="Heads">Heads with a non-zero loading, largest |value| first (the top ones when asked).</param>
/// <param name="SamePosition">The part carried by paths that never leave the source's position (zero when the target is elsewhere).</param>
/// <param name="Rest">The sum of the loadings not kept.</param>
public sealed record EdgeLoadings(string Target, string Source, double Edge, HeadLoading[] Heads, double SamePosition, double Rest);

/// <summary>
/// Head loadings: each edge u → v of an attribution graph split exactly by the (layer, head) of the first attention hop that moves
/// its path off u's position. In the frozen replacement model a path stays at u's position through the residual stream, the
/// transcoders' skip terms and the diagonal of each attention pattern, until some head h of some layer m moves it to p' ≠ p with
/// weight pattern_h[p', p]; from there the gradient of v's readout with respect to hook_z at (m, p', h) carries every continuation.
/// So loading(m, h) = Σ_{p' ≠ p} pattern_h[p', p] · ⟨∂v/∂z_h(m, p'), W_V N_m(r_u(m))⟩, where r_u(m) is what u has put into the
/// residual stream at p by staying paths when layer m reads it; the loadings of an edge between two positions sum to the edge.
/// </summary>
public static class HeadLoadings
{
    /// <summary>
/// Splits <paramref name="edges"/> (target node, source node, weight) of <paramref name="rm"/>'s graph by (layer, head, destination);
/// <paramref name="top"/> keeps that many loadings per edge (0: all), the rest summed.
/// </summary>
    public static List<EdgeLoadings> Compute(ReplacementModel rm, IReadOnlyList<(GraphNode Target, GraphNode Source, double Weight)> edges, int top = 0, int batch = 16)
    {
        var model = rm.Model; var cfg = model.Config; var reg = model.HookPoints;
        if (cfg.PostLayerNorm || cfg.EmbeddingNorm) throw new MechanistException("head loadings need a pre-norm model without an embedding norm");
        int L = cfg.NLayers, T = (int)rm.Tokens.shape[1], H = cfg.NHeads;
        var result = new List<EdgeLoadings>(edges.Count);
        if (edges.Count == 0) return result;
        using var scope = NewDisposeScope();
        string[] inputs = Enumerable.Range(0, L).Select(l => SplicePoints.Under(reg.Name(HookKind.MlpOut, l), SplicePoints.Input)).ToArray();
        string[] zs = Enumerable.Range(0, L).Select(l => reg.Name(HookKind.Z, l)).ToArray();
        string embed = HookNames.Embed, unembedIn = HookNames.UnembedIn;
        var targets = edges.Select(e => e.Target).Distinct().ToList();
        int B = Math.Max(1, Math.Min(batch, targets.Count));
        using var forward = RetainedForward.Run(model, rm.Tokens, inputs.Concat(zs).Append(embed).Append(unembedIn), B, rm.FrozenOptions());
        var embedValue = forward[embed][0].to(ScalarType.Float64);
        var patterns = Enumerable.Range(0, L).Select(l => rm.Clean[HookKind.Pattern, l][0].to(ScalarType.Float64)).ToArray();   // [H, T, T]
        var wu = model.Weights.WU.to(ScalarType.Float32);
        // ∂v/∂z for every target: [L][T, H, dh] (float64), one backward pass per batch of targets.
        var gz = new Dictionary<GraphNode, Tensor[]>();
        for (int start = 0; start < targets.Count; start += B)
        {
            int rows = Math.Min(B, targets.Count - start);
            var injections = new List<(Tensor, Tensor)>();
            var perLayer = new Tensor?[L]; Tensor? logitGrad = null;
            for (int r = 0; r < rows; r++)
            {
                var t = targets[start + r];
                if (t.Kind == NodeKind.Feature)
                {
                    var x = forward[inputs[t.Layer]];
                    perLayer[t.Layer] ??= zeros_like(x);
                    using var index = SafeOps.FullInt(new long[] { 1 }, t.Index);
                    perLayer[t.Layer]![r, t.Position] = rm.Dictionary.EncoderRows(t.Layer, index)[0].to(x.dtype);
                }
                else if (t.Kind == NodeKind.Logit)
                {
                    var u = forward[unembedIn];
                    logitGrad ??= zeros_like(u);
                    logitGrad[r, t.Position] = wu[t.Index].sub(wu.mean(new long[] { 0 })).to(u.dtype);
                }
                else throw new MechanistException($"an edge's target is a feature or a logit, not {t.Id}");
            }
            for (int l = 0; l < L; l++) if (perLayer[l] is { } g) injections.Add((forward[inputs[l]], g));
            if (logitGrad is not null) injections.Add((forward[unembedIn], logitGrad));
            var grads = forward.Gradients(injections, zs);
            for (int r = 0; r < rows; r++) gz[targets[start + r]] = grads.Select(g => g[r].to(ScalarType.Float64).DetachFromDisposeScope()).ToArray();
            foreach (var g in grads) g.Dispose();
        }
        var staying = new Dictionary<GraphNode, Tensor?[]>();
        foreach (var (target, source, weight) in edges)
        {
            if (!staying.TryGetValue(source, out var values)) staying[source] = values = StayingValues(rm, source, embedValue, patterns);
            var g = gz[target];
            int p = source.Position;
            var loadings = new List<HeadLoading>();
            for (int m = 0; m < L; m++)
            {
                if (values[m] is not { } v) continue;                                              // [Hkv, dh]
                var perHead = cfg.HeadsPerKvHead > 1 ? v.repeat_interleave(cfg.HeadsPerKvHead, 0) : v; // [H, dh]
                var s = einsum("thd,hd->ht", g[m], perHead);                                       // [H, T]: ⟨∂v/∂z_h(p'), v_h⟩
                var moved = patterns[m][.., .., p].mul(s);                                         // pattern_h[p', p] · s[h, p']
                var byQuery = moved.cpu().data<double>().ToArray();
                for (int h = 0; h < H; h++)
                    for (int q = 0; q < T; q++)
                        if (q != p && byQuery[h * T + q] != 0) loadings.Add(new HeadLoading(m, h, q, byQuery[h * T + q]));
            }
            double moving = loadings.Sum(x => x.Value);
            var ordered = loadings.OrderByDescending(x => Math.Abs(x.Value)).ToList();
            int kept = top <= 0 ? ordered.Count : Math.Min(top, ordered.Count);
            result.Add(new EdgeLoadings(target.Id, source.Id, weight, ordered.Take(kept).ToArray(),
                target.Position == source.Position ? weight - moving : 0, ordered.Skip(kept).Sum(x => x.Value)));
        }
        return result;
    }

    /// <summary>
    /// For each layer m, the values W_V N_m(r) (per key-value head, [Hkv, dh], float64) that the source's staying residual r puts at its
    /// position, or null before the source has written anything.
    /// </summary>
    static Tensor?[] StayingValues(ReplacementModel rm, GraphNode source, Tensor embedValue, Tensor[] patterns)
    {
        var model = rm.Model; var cfg = model.Config; var d = rm.Dictionary; var reg = model.HookPoints;
        int L = cfg.NLayers, p = source.Position;
        var values = new Tensor?[L];
        // What the source writes after layer j's MLP (features: their decoders; errors: the error vector), float64.
        Tensor? Write(int j) => source.Kind switch
        {
            NodeKind.Feature when j >= source.Layer && d.WritesTo(source.Layer, j) =>
                d.DecoderRows(source.Layer, j, SafeOps.FullInt(new long[] { 1 }, source.Index))[0].to(ScalarType.Float64)
                    .mul(rm.Activations[source.Layer, p, source.Index].to(ScalarType.Float64)),
            NodeKind.Error when j == source.Layer => rm.Errors[j, p].to(ScalarType.Float64),
            _ => null,
        };
        Tensor? r = source.Kind == NodeKind.Token ? embedValue[p] : null;
        for (int m = 0; m < L; m++)
        {
            var w = model.Weights.Blocks[m];
            Tensor? attn = null;
            if (r is not null)
            {
                // The attention input's linear part at p: the frozen norm without its bias, then W_V without its bias.
                var xn = Normalize(cfg, r, rm.Clean[HookKind.Ln1Scale, m][0, p], cfg.PreNorms ? w.Ln1W : null, cfg.PreNorms);
                var v = xn.matmul(w.Wv.to(ScalarType.Float64).t()).view(cfg.NKvHeads, cfg.DHead);
                values[m] = v;
                // What the pattern's diagonal keeps at p: Σ_h pattern_h[p, p] · W_O^h v_h (post-attention norm with its frozen scale).
                var perHead = cfg.HeadsPerKvHead > 1 ? v.repeat_interleave(cfg.HeadsPerKvHead, 0) : v;
                var wo = w.Wo.to(ScalarType.Float64).view(cfg.DModel, cfg.NHeads, cfg.DHead);
                attn = einsum("h,hd,mhd->m", patterns[m][.., p, p], perHead, wo);
                if (cfg.PostNorms) attn = PostNorm(cfg, attn, rm.Clean[HookKind.Ln1PostScale, m][0, p], w.PostAttnNormW);
            }
            if (cfg.AttnOnly) { if (attn is not null) r = r!.add(attn, Scalars.One); continue; }
            var mid = r is null ? attn : attn is null ? r : r.add(attn, Scalars.One);
            var mlpReads = cfg.ParallelResidual ? r : mid;
            Tensor? skip = null;
            if (mlpReads is not null)
            {
                var x = rm.Input switch
                {
                    TranscoderInput.Resid => mlpReads,
                    TranscoderInput.Normalized => Normalize(cfg, mlpReads, rm.Clean[HookKind.Ln2Scale, m][0, p], null, true),
                    _ => Normalize(cfg, mlpReads, rm.Clean[HookKind.Ln2Scale, m][0, p], w.Ln2W, cfg.PreNorms),
                };
                var x32 = x.to(ScalarType.Float32).unsqueeze(0);
                if (d.Skip(m, x32) is { } s) skip = s[0].to(ScalarType.Float64).sub(d.Skip(m, zeros_like(x32))![0].to(ScalarType.Float64));
            }
            r = mid;
            if (skip is not null) r = r!.add(skip, Scalars.One);
            if (Write(m) is { } written) r = r is null ? written : r.add(written, Scalars.One);
        }
        return values;
    }

    /// <summary>A frozen norm's linear part: centred for LayerNorm, divided by the clean scale, times the weight (its bias dropped).</summary>
    static Tensor Normalize(TransformerConfig cfg, Tensor x, Tensor scale, Tensor? weight, bool normed)
    {
        if (!normed) return x;
        var xn = cfg.Norm is NormKind.LayerNorm or NormKind.LayerNormNoAffine ? x.sub(x.mean(new long[] { -1 }, keepdim: true)) : x;
        xn = xn.div(scale.to(ScalarType.Float64));
        if (weight is null) return xn;
        var w = weight.to(ScalarType.Float64);
        return cfg.Norm == NormKind.RmsNormPlusOne ? xn.mul(w.add(Scalars.One, Scalars.One)) : cfg.Norm == NormKind.LayerNormNoAffine ? xn : xn.mul(w);
    }

    static Tensor PostNorm(TransformerConfig cfg, Tensor x, Tensor scale, Tensor? weight)
    {
        var y = x.div(scale.to(ScalarType.Float64));
        if (weight is null) return y;
        var w = weight.to(ScalarType.Float64);
        return y.mul(cfg.Norm == NormKind.RmsNormPlusOne ? w.add(Scalars.One, Scalars.One) : w);
    }
}
