using Mechanist.Dictionaries;
using Mechanist.Hooks;
using Mechanist.Models;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>One head's share of an edge.</summary>
/// <param name="Layer">Layer of the attention hop.</param>
/// <param name="Head">Query head.</param>
/// <param name="Query">The destination carrying the largest part of it (the head's query position; its key is the source's position).</param>
/// <param name="Value">The part of the edge whose path first leaves the source's position through this head (to any other position).</param>
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
    /// Splits <paramref name="edges"/> (target node, source node, weight) of <paramref name="rm"/>'s graph by (layer, head), naming each
    /// loading's main destination; <paramref name="logitTargets"/> says what a logit node reads when the graph was traced with custom
    /// targets (default: its token's row minus the vocabulary mean);
    /// <paramref name="top"/> keeps that many loadings per edge (0: all), the rest summed; <paramref name="batch"/> targets share a backward pass.
    /// </summary>
    public static List<EdgeLoadings> Compute(ReplacementModel rm, IReadOnlyList<(GraphNode Target, GraphNode Source, double Weight)> edges, int top = 0, int batch = 16,
        IReadOnlyDictionary<GraphNode, LogitTarget>? logitTargets = null)
    {
        var model = rm.Model; var cfg = model.Config; var reg = model.HookPoints;
        if (cfg.PostLayerNorm || cfg.EmbeddingNorm) throw new MechanistException("head loadings need a pre-norm model without an embedding norm");
        int L = cfg.NLayers, T = (int)rm.Tokens.shape[1], H = cfg.NHeads;
        if (edges.Count == 0) return new List<EdgeLoadings>();
        using var scope = NewDisposeScope();
        using var f64 = new Float64Weights();
        string[] inputs = Enumerable.Range(0, L).Select(l => SplicePoints.Under(reg.Name(HookKind.MlpOut, l), SplicePoints.Input)).ToArray();
        string[] zs = Enumerable.Range(0, L).Select(l => reg.Name(HookKind.Z, l)).ToArray();
        string embed = HookNames.Embed, unembedIn = HookNames.UnembedIn;
        var targets = edges.Select(e => e.Target).Distinct().ToList();
        int B = Math.Max(1, Math.Min(batch, targets.Count));
        using var forward = RetainedForward.Run(model, rm.Tokens, inputs.Concat(zs).Append(embed).Append(unembedIn), B, rm.FrozenOptions());
        var patterns = Enumerable.Range(0, L).Select(l => rm.Clean[HookKind.Pattern, l][0].to(ScalarType.Float32)).ToArray();   // [H, T, T]
        // Row h·T + p: the pattern's column at key p of head h, pattern_h[·, p] (what each query takes from p).
        var keyColumns = patterns.Select(x => x.permute(0, 2, 1).contiguous().view(H * T, T)).ToArray();
        // Every source's staying values, all sources at once: per layer [S, H, dh] (key-value heads repeated for their query heads).
        var sources = edges.Select(e => e.Source).Distinct().ToArray();
        var sourceIndex = sources.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => x.i);
        var values = StayingValues(rm, sources, forward[embed][0].to(ScalarType.Float64), patterns, f64);
        var wu = model.Weights.WU.to(ScalarType.Float32);
        var byTarget = edges.Select((e, i) => (e, i)).GroupBy(x => x.e.Target).ToDictionary(g => g.Key, g => g.ToList());
        var answers = new EdgeLoadings?[edges.Count];
        // ∂v/∂z for a batch of targets ([L][T, H, dh] each, one backward pass); their edges are split before the next batch.
        for (int start = 0; start < targets.Count; start += B)
        {
            using var batchScope = NewDisposeScope();
            int rows = Math.Min(B, targets.Count - start);
            var readouts = new ReadoutInjection(forward, rm.Dictionary, inputs, unembedIn);
            for (int r = 0; r < rows; r++)
            {
                var t = targets[start + r];
                if (t.Kind == NodeKind.Feature) readouts.Feature(r, t);
                else if (t.Kind == NodeKind.Logit) readouts.Logit(r, t.Position, Attributor.Readout(wu, logitTargets?.GetValueOrDefault(t) ?? new LogitTarget(t.Index)));
                else throw new MechanistException($"an edge's target is a feature or a logit, not {t.Id}");
            }
            var grads = forward.Gradients(readouts.Injections(), zs);
            for (int r = 0; r < rows; r++) SplitAll(byTarget[targets[start + r]], grads.Select(x => x[r].to(ScalarType.Float32)).ToArray());
            foreach (var g in grads) g.Dispose();
        }
        return answers.Select(a => a!).ToList();

        // Every edge into one target at once: per layer, its sources' staying values [S, H, dh] against ∂v/∂z [T, H, dh], weighted
        // by the pattern's column at each source's position.
        void SplitAll(List<((GraphNode Target, GraphNode Source, double Weight) Edge, int At)> list, Tensor[] g)
        {
            using var targetScope = NewDisposeScope();
            var mine = list.Select(x => x.Edge.Source).ToArray();
            using var rowsOf = tensor(mine.Select(n => (long)sourceIndex[n]).ToArray());
            using var keys = tensor(mine.Select(n => (long)n.Position).ToArray());
            // Per layer, what every position p would send off itself through head h: M[h, p] = Σ_{p' ≠ p} pattern_h[p', p] ∂v/∂z_h(p')
            // ([H, T, dh], one batched GEMM), so a source's loading is M[h, p_s] · v_h(s); the destination that carries most of it
            // is found afterwards, for the kept loadings only.
            var loads = new Tensor[L];
            for (int m = 0; m < L; m++)
            {
                var gm = g[m];                                                                         // [T, H, dh]
                var sent = einsum("hqk,qhd->hkd", patterns[m], gm);                                  // [H, T(key), dh]
                var self = patterns[m].diagonal(0, 1, 2).unsqueeze(-1).mul(gm.permute(1, 0, 2));       // the diagonal's share [H, T, dh]
                var off = sent.sub(self).index_select(1, keys).permute(1, 0, 2);                       // [S, H, dh]
                var v = values[m].index_select(0, rowsOf).to(off.dtype);                               // [S, H, dh]
                loads[m] = off.mul(v).sum(-1L);                                                        // [S, H]
            }
            var moved = stack(loads, 1).reshape(mine.Length, -1);                                      // [S, L·H]
            var sums = moved.sum(1).to(ScalarType.Float64).cpu().data<double>().ToArray();
            int width = L * H, k = top <= 0 ? width : Math.Min(top, width);
            var (_, topIndex) = moved.abs().topk(k, 1);
            var picked = moved.gather(1, topIndex).to(ScalarType.Float64).cpu().data<double>().ToArray();
            var where = topIndex.cpu().data<long>().ToArray();
            // The main destination of each kept (source, layer, head): argmax over p' ≠ p_s of |pattern_h[p', p_s] ⟨∂v/∂z_h(p'), v_h⟩|,
            // one batch per layer.
            var destination = new int[mine.Length * k];
            for (int m = 0; m < L; m++)
            {
                var items = Enumerable.Range(0, mine.Length * k).Where(x => picked[x] != 0 && where[x] / H == m).ToArray();
                if (items.Length == 0) continue;
                using var layerScope = NewDisposeScope();
                using var heads = tensor(items.Select(x => where[x] % H).ToArray());
                using var at = tensor(items.Select(x => (long)mine[x / k].Position).ToArray());
                using var rows = tensor(items.Select(x => (long)sourceIndex[mine[x / k]]).ToArray());
                var v = values[m].index_select(0, rows).gather(1, heads.view(-1, 1, 1).expand(-1, 1, values[m].shape[2])).squeeze(1).to(g[m].dtype);   // [K, dh]
                var gk = g[m].index_select(1, heads).permute(1, 0, 2);                                                                                   // [K, T, dh]
                var dots = gk.matmul(v.unsqueeze(-1)).squeeze(-1);                                                                                       // [K, T]
                var column = keyColumns[m].index_select(0, heads.mul(SafeOps.FullInt(new long[] { 1 }, T)).add(at, Scalars.Int(1)));                   // pattern_h[p', p_s] [K, T]
                var each = column.mul(dots).abs().masked_fill(SafeOps.Arange(T).view(1, T).eq(at.view(-1, 1)), Scalars.Of(-1.0));
                var best = each.argmax(1L).cpu().data<long>().ToArray();
                for (int x = 0; x < items.Length; x++) destination[items[x]] = (int)best[x];
            }
            for (int i = 0; i < list.Count; i++)
            {
                var (target, source, weight) = list[i].Edge;
                var kept = new List<HeadLoading>(k);
                for (int j = 0; j < k; j++)
                {
                    double value = picked[i * k + j];
                    if (value == 0) continue;
                    int at = (int)where[i * k + j];
                    kept.Add(new HeadLoading(at / H, at % H, destination[i * k + j], value));
                }
                double listed = kept.Sum(x => x.Value);
                answers[list[i].At] = new EdgeLoadings(target.Id, source.Id, weight, kept.ToArray(),
                    target.Position == source.Position ? weight - sums[i] : 0, sums[i] - listed);
            }
        }
    }

    /// <summary>
    /// For each layer m, the values W_V N_m(r_s) [S, H, dh] (float64; key-value heads repeated for their query heads) that each source's
    /// staying residual r_s puts at its position: zero before the source has written anything. All sources advance together, layer by layer.
    /// </summary>
    static Tensor[] StayingValues(ReplacementModel rm, GraphNode[] sources, Tensor embedValue, Tensor[] patterns, Float64Weights f64)
    {
        var model = rm.Model; var cfg = model.Config; var d = rm.Dictionary;
        int L = cfg.NLayers, S = sources.Length, D = cfg.DModel, H = cfg.NHeads;
        using var positions = tensor(sources.Select(n => (long)n.Position).ToArray());
        var r = zeros(S, D, ScalarType.Float64);
        for (int i = 0; i < S; i++) if (sources[i].Kind == NodeKind.Token) r[i] = embedValue[sources[i].Position];
        var values = new Tensor[L];
        Tensor ScaleAt(HookKind kind, int m) => rm.Clean[kind, m][0].to(ScalarType.Float64).index_select(0, positions);    // [S, 1]
        for (int m = 0; m < L; m++)
        {
            var w = model.Weights.Blocks[m];
            // The attention input's linear part at each source's position: the frozen norm without its bias, then W_V without its bias.
            var xn = cfg.PreNorms ? Normalize(cfg, r, ScaleAt(HookKind.Ln1Scale, m), w.Ln1W, f64) : r;
            var v = xn.matmul(f64.Of(w.Wv).t()).view(S, cfg.NKvHeads, cfg.DHead);
            if (cfg.HeadsPerKvHead > 1) v = v.repeat_interleave(cfg.HeadsPerKvHead, 1);
            values[m] = v;
            // What the pattern's diagonal keeps at the position: Σ_h pattern_h[p, p] · W_O^h v_h (post-attention norm, its scale frozen).
            var diagonal = patterns[m].diagonal(0, 1, 2).t().index_select(0, positions).to(ScalarType.Float64);                       // [S, H]
            var attn = v.mul(diagonal.unsqueeze(-1)).reshape(S, H * cfg.DHead).matmul(f64.Of(w.Wo).t());        // [S, d]
            if (cfg.PostNorms) attn = PostNorm(cfg, attn, ScaleAt(HookKind.Ln1PostScale, m), w.PostAttnNormW, f64);
            if (cfg.AttnOnly) { r = r.add(attn, Scalars.One); continue; }
            var mid = r.add(attn, Scalars.One);
            var reads = cfg.ParallelResidual ? r : mid;
            var x = rm.Input switch
            {
                TranscoderInput.Resid => reads,
                TranscoderInput.Normalized => Normalize(cfg, reads, ScaleAt(HookKind.Ln2Scale, m), null, f64),
                _ => Normalize(cfg, reads, ScaleAt(HookKind.Ln2Scale, m), w.Ln2W, f64),
            };
            r = mid;
            var x32 = x.to(ScalarType.Float32);
            if (d.Skip(m, x32) is { } skip) r = r.add(skip.to(ScalarType.Float64).sub(d.Skip(m, zeros_like(x32))!.to(ScalarType.Float64)), Scalars.One);
            // What each source writes after this layer's MLP: a feature its decoder into this layer times its activation; an error its vector.
            for (int i = 0; i < S; i++)
            {
                var n = sources[i];
                if (n.Kind == NodeKind.Feature && m >= n.Layer && d.WritesTo(n.Layer, m))
                {
                    using var index = SafeOps.FullInt(new long[] { 1 }, n.Index);
                    r[i] = r[i].add(d.DecoderRows(n.Layer, m, index)[0].to(ScalarType.Float64).mul(rm.Activations[n.Layer, n.Position, n.Index].to(ScalarType.Float64)), Scalars.One);
                }
                else if (n.Kind == NodeKind.Error && m == n.Layer) r[i] = r[i].add(rm.Errors[m, n.Position].to(ScalarType.Float64), Scalars.One);
            }
        }
        return values;
    }

    /// <summary>A frozen norm's linear part, row by row: centred for LayerNorm, divided by each row's clean scale [S, 1], times the weight (its bias dropped).</summary>
    static Tensor Normalize(TransformerConfig cfg, Tensor x, Tensor scale, Tensor? weight, Float64Weights f64)
    {
        var xn = cfg.Norm is NormKind.LayerNorm or NormKind.LayerNormNoAffine ? x.sub(x.mean(new long[] { -1 }, keepdim: true)) : x;
        xn = xn.div(scale);
        if (weight is null || cfg.Norm == NormKind.LayerNormNoAffine) return xn;
        return cfg.Norm == NormKind.RmsNormPlusOne ? xn.mul(f64.Of(weight).add(Scalars.One, Scalars.One)) : xn.mul(f64.Of(weight));
    }

    static Tensor PostNorm(TransformerConfig cfg, Tensor x, Tensor scale, Tensor? weight, Float64Weights f64)
    {
        var y = x.div(scale);
        if (weight is null) return y;
        return y.mul(cfg.Norm == NormKind.RmsNormPlusOne ? f64.Of(weight).add(Scalars.One, Scalars.One) : f64.Of(weight));
    }
}
