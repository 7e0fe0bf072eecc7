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
/// <param name="SamePosition">
/// For an edge within one position, the part carried by paths that pass through no attention head at all (the residual stream and the
/// transcoders' skip terms); its heads are then those whose pattern's diagonal first carried the rest. Zero when the target is elsewhere.
/// </param>
/// <param name="Rest">The sum of the loadings not kept.</param>
public sealed record EdgeLoadings(string Target, string Source, double Edge, HeadLoading[] Heads, double SamePosition, double Rest);

/// <summary>
/// Head loadings: each edge u → v of an attribution graph split exactly by the (layer, head) of the first attention hop that moves
/// its path off u's position. In the frozen replacement model a path stays at u's position through the residual stream, the
/// transcoders' skip terms and the diagonal of each attention pattern, until some head h of some layer m moves it to p' ≠ p with
/// weight pattern_h[p', p]; from there the gradient of v's readout with respect to hook_z at (m, p', h) carries every continuation.
/// So loading(m, h) = Σ_{p' ≠ p} pattern_h[p', p] · ⟨∂v/∂z_h(m, p'), W_V N_m(r_u(m))⟩, where r_u(m) is what u has put into the
/// residual stream at p by staying paths when layer m reads it; the loadings of an edge between two positions sum to the edge.
/// An edge within one position never leaves it: it splits by the first head whose diagonal carried it,
/// pattern_h[p, p] · ⟨∂v/∂z_h(m, p), W_V N_m(r⁰_u(m))⟩ with r⁰ what u put there through no attention head, and what no head carried.
/// </summary>
public static class HeadLoadings
{
    /// <summary>
    /// Splits <paramref name="edges"/> (target node, source node, weight) of <paramref name="rm"/>'s graph by (layer, head), naming each
    /// loading's main destination; <paramref name="logitTargets"/> says what a logit node reads when the graph was traced with custom
    /// targets (default: its token's row minus the vocabulary mean);
    /// <paramref name="top"/> keeps that many loadings per edge (0: all), the rest summed; <paramref name="batch"/> targets share a backward pass;
    /// targets whose gradients the attribution kept in <paramref name="gradients"/> need none.
    /// </summary>
    public static List<EdgeLoadings> Compute(ReplacementModel rm, IReadOnlyList<(GraphNode Target, GraphNode Source, double Weight)> edges, int top = 0, int batch = 16,
        IReadOnlyDictionary<GraphNode, LogitTarget>? logitTargets = null, ZGradientCache? gradients = null)
    {
        var model = rm.Model; var cfg = model.Config; var reg = model.HookPoints;
        if (cfg.PostLayerNorm || cfg.EmbeddingNorm) throw new MechanistException("head loadings need a pre-norm model without an embedding norm");
        int L = cfg.NLayers, T = (int)rm.Tokens.shape[1], H = cfg.NHeads;
        if (edges.Count == 0) return new List<EdgeLoadings>();
        using var scope = NewDisposeScope();
        using var f64 = new Float64Weights();
        string[] inputs = Enumerable.Range(0, rm.IsAttentionOnly ? 0 : L).Select(l => SplicePoints.Under(reg.Name(HookKind.MlpOut, l), SplicePoints.Input)).ToArray();
        string[] zs = Enumerable.Range(0, L).Select(l => reg.Name(HookKind.Z, l)).ToArray();
        string embed = HookNames.Embed, unembedIn = HookNames.UnembedIn;
        var targets = edges.Select(e => e.Target).Distinct().ToList();
        var missing = targets.Where(t => gradients is null || !gradients.TryGet(t, out _)).ToList();
        int B = Math.Max(1, Math.Min(batch, missing.Count));
        // The targets whose gradients were not kept run the written-out backward where the model suits it, else a retained forward
        // (autograd); the embedding alone needs no gradients.
        using var frozen = missing.Count == 0 ? null : FrozenBackward.For(rm);
        using var forward = missing.Count == 0 || frozen is not null ? null : RetainedForward.Run(model, rm.Tokens, inputs.Concat(zs).Append(embed).Append(unembedIn), B, rm.FrozenOptions());
        var embedValue = forward is not null ? forward[embed][0].to(ScalarType.Float64) : Embedding(model, rm.Tokens);
        var patterns = Enumerable.Range(0, L).Select(l => rm.Clean[HookKind.Pattern, l][0].to(ScalarType.Float32)).ToArray();   // [H, T, T]
        var diagonals = patterns.Select(x => x.diagonal(0, 1, 2)).ToArray();                                                      // [H, T]
        // The staying values of the sources of edges between positions, all at once: per layer [S, H, dh] (key-value heads repeated for
        // their query heads); for the sources of edges within one position, the values of what reached the layer through no attention head.
        var (sourceIndex, values) = SourceValues(across: true);
        var (localIndex, direct) = SourceValues(across: false);
        (Dictionary<GraphNode, int> Index, Tensor[]? Values) SourceValues(bool across)
        {
            var nodes = edges.Where(e => (e.Target.Position != e.Source.Position) == across).Select(e => e.Source).Distinct().ToArray();
            return (nodes.Select((n, i) => (n, i)).ToDictionary(x => x.n, x => x.i),
                nodes.Length == 0 ? null : StayingValues(rm, nodes, embedValue, patterns, f64, throughDiagonals: across));
        }
        // Every layer's heads side by side (index layer·H + head), so that a target's split runs over all of them at once.
        int LH = L * H, dh = cfg.DHead;
        var diagonalsAll = stack(diagonals, 0).reshape(LH, T);                                                     // [L·H, T]
        // Every pattern by key, [L·H, key, query] (a copy the size of the patterns): a source's column is then one row.
        var byKey = stack(patterns, 0).reshape(LH, T, T).transpose(1, 2).contiguous();
        var valuesAll = values is null ? null : stack(values, 1).to(ScalarType.Float32).reshape(-1, LH, dh);       // [S, L·H, dh]
        var directAll = direct is null ? null : stack(direct, 1).to(ScalarType.Float32).reshape(-1, LH, dh);
        var wu = model.Weights.WU.to(ScalarType.Float32);
        var byTarget = edges.Select((e, i) => (e, i)).GroupBy(x => x.e.Target).ToDictionary(g => g.Key, g => g.ToList());
        var answers = new EdgeLoadings?[edges.Count];
        foreach (var t in targets)
            if (gradients is not null && gradients.TryGet(t, out var kept)) SplitAll(byTarget[t], kept);
        // ∂v/∂z for a batch of the other targets (one backward pass); their edges are split before the next batch.
        if (frozen is not null)
        {
            // Batches of targets by where their backward starts (layer, then position): each stops at its top layer and last position.
            var ordered = missing.OrderBy(t => t.Kind == NodeKind.Logit ? L : t.Layer).ThenBy(t => t.Position).ToList();
            for (int start = 0; start < ordered.Count; start += B)
            {
                using var batchScope = NewDisposeScope();
                var batchTargets = ordered.GetRange(start, Math.Min(B, ordered.Count - start));
                var features = new List<(int, GraphNode)>(); var logits = new List<(int, Tensor)>();
                int topLayer = 0, positions = 0;
                for (int r = 0; r < batchTargets.Count; r++)
                {
                    var t = batchTargets[r];
                    if (t.Kind == NodeKind.Feature) { features.Add((r, t)); topLayer = Math.Max(topLayer, t.Layer); positions = Math.Max(positions, t.Position + 1); }
                    else if (t.Kind == NodeKind.Logit)
                    {
                        logits.Add((r, Attributor.Readout(wu, logitTargets?.GetValueOrDefault(t) ?? new LogitTarget(t.Index))));
                        topLayer = L; positions = T;                                  // (a logit reads the last position)
                    }
                    else throw new MechanistException($"an edge's target is a feature or a logit, not {t.Id}");
                }
                var z = frozen.Start(batchTargets.Count, topLayer, positions, features, logits, withZ: true).Finish().Z!;   // L × [rows, P, H, dh]
                for (int r = 0; r < batchTargets.Count; r++)
                    using (var whole = ZGradientCache.Whole(z.Select(x => x[r]).ToArray(), Reach(batchTargets[r]))) SplitAll(byTarget[batchTargets[r]], whole);
            }
        }
        else for (int start = 0; start < missing.Count; start += B)
        {
            using var batchScope = NewDisposeScope();
            int rows = Math.Min(B, missing.Count - start);
            var readouts = new ReadoutInjection(forward!, rm.Dictionary, inputs, unembedIn);
            for (int r = 0; r < rows; r++)
            {
                var t = missing[start + r];
                if (t.Kind == NodeKind.Feature) readouts.Feature(r, t);
                else if (t.Kind == NodeKind.Logit) readouts.Logit(r, t.Position, Attributor.Readout(wu, logitTargets?.GetValueOrDefault(t) ?? new LogitTarget(t.Index)));
                else throw new MechanistException($"an edge's target is a feature or a logit, not {t.Id}");
            }
            var grads = forward!.Gradients(readouts.Injections(), zs);
            for (int r = 0; r < rows; r++)
                using (var whole = ZGradientCache.Whole(grads.Select(x => x[r]).ToArray(), Reach(missing[start + r]))) SplitAll(byTarget[missing[start + r]], whole);
            foreach (var g in grads) g.Dispose();
        }
        return answers.Select(a => a!).ToList();

        // The positions a target's gradients reach: its own and those before it (a logit reads the last).
        int Reach(GraphNode t) => t.Kind == NodeKind.Logit ? T : t.Position + 1;

        // Every edge into one target at once, over every layer's heads together (g: ∂v/∂z [L, H, P, dh], P reaching the target's
        // position). For a source s at p_s and a head (layer·H + h), the terms pattern_h[p', p_s] ⟨∂v/∂z_h(p'), v_h(s)⟩ over the queries
        // p' ≠ p_s up to the target's: their sum is the loading, the largest |term| of a kept loading names its main destination.
        // Within the target's position p a source's loading is the diagonal's pattern_h[p, p] ⟨∂v/∂z_h(p), v⁰_h(s)⟩, its destination p.
        void SplitAll(List<((GraphNode Target, GraphNode Source, double Weight) Edge, int At)> list, Tensor g)
        {
            using var targetScope = NewDisposeScope();
            var mine = list.Select(x => x.Edge.Source).ToArray();
            int Q = list[0].Edge.Target.Position + 1, S = mine.Length, k = top <= 0 ? LH : Math.Min(top, LH);
            bool[] same = mine.Select(n => n.Position == Q - 1).ToArray();
            var gq = g.narrow(2, 0, Q).reshape(LH, Q, dh);                                               // [L·H, Q, dh]
            var sums = new double[S];
            var picked = new double[S * k];
            var where = new long[S * k];
            var destination = new int[S * k];
            // A block of sources' loadings [n, L·H] into the arrays above (each source's top k, largest |value| first).
            void Keep(int[] rows, Tensor blockLoads)
            {
                var (_, index) = blockLoads.abs().topk(k, 1);
                var blockSums = blockLoads.sum(1).to(ScalarType.Float64).cpu().data<double>().ToArray();
                var blockPicked = blockLoads.gather(1, index).to(ScalarType.Float64).cpu().data<double>().ToArray();
                var blockWhere = index.cpu().data<long>().ToArray();
                for (int r = 0; r < rows.Length; r++)
                {
                    sums[rows[r]] = blockSums[r];
                    Array.Copy(blockPicked, (long)r * k, picked, (long)rows[r] * k, k);
                    Array.Copy(blockWhere, (long)r * k, where, (long)rows[r] * k, k);
                }
            }
            var across = Enumerable.Range(0, S).Where(i => !same[i]).ToArray();
            if (across.Length > 0)
            {
                var keyList = across.Select(i => mine[i].Position).Distinct().ToArray();
                var slot = keyList.Select((p, i) => (p, i)).ToDictionary(x => x.p, x => (long)x.i);
                var keys = tensor(keyList.Select(p => (long)p).ToArray());
                // pattern_h[p', key] per (layer·H + h, key, p'), zero at p' = key: [L·H, U, Q].
                var columns = byKey.index_select(1, keys).narrow(2, 0, Q).mul(SafeOps.Arange(Q).view(1, 1, Q).ne(keys.view(1, -1, 1)).to(ScalarType.Float32));
                // In blocks of sources whose terms [L·H, n, Q] stay within a few MB.
                int block = (int)Math.Max(1, (16L << 20) / (4L * LH * Q));
                for (int start = 0; start < across.Length; start += block)
                {
                    using var blockScope = NewDisposeScope();
                    var part = across.AsSpan(start, Math.Min(block, across.Length - start)).ToArray();
                    int n = part.Length;
                    var v = valuesAll!.index_select(0, tensor(part.Select(i => (long)sourceIndex[mine[i]]).ToArray())).permute(1, 0, 2).contiguous();   // [L·H, n, dh]
                    var terms = v.bmm(gq.transpose(1, 2)).mul_(columns.index_select(1, tensor(part.Select(i => slot[mine[i].Position]).ToArray())));     // [L·H, n, Q]
                    Keep(part, terms.sum(-1L).t());
                    // Destinations of the kept loadings only: the largest |term| of each (head, source) row.
                    var rows = new long[n * k];
                    for (int r = 0; r < n; r++) for (int j = 0; j < k; j++) rows[r * k + j] = where[(long)part[r] * k + j] * n + r;
                    var best = terms.view(LH * n, Q).index_select(0, tensor(rows)).abs_().argmax(-1L).cpu().data<long>().ToArray();
                    for (int r = 0; r < n; r++) for (int j = 0; j < k; j++) destination[part[r] * k + j] = (int)best[r * k + j];
                }
            }
            var within = Enumerable.Range(0, S).Where(i => same[i]).ToArray();
            if (within.Length > 0)
            {
                var gp = gq.select(1, Q - 1).mul(diagonalsAll.select(1, Q - 1).unsqueeze(-1));            // [L·H, dh]
                var rowsOf = tensor(within.Select(i => (long)localIndex[mine[i]]).ToArray());
                Keep(within, directAll!.index_select(0, rowsOf).mul(gp.unsqueeze(0)).sum(-1L));
                foreach (int i in within) Array.Fill(destination, Q - 1, i * k, k);
            }
            for (int i = 0; i < list.Count; i++)
            {
                var (target, source, weight) = list[i].Edge;
                var heads = new List<HeadLoading>(k);
                for (int j = 0; j < k; j++)
                {
                    double value = picked[i * k + j];
                    if (value == 0) continue;
                    int at = (int)where[i * k + j];
                    heads.Add(new HeadLoading(at / H, at % H, destination[i * k + j], value));
                }
                double listed = heads.Sum(x => x.Value);
                answers[list[i].At] = new EdgeLoadings(target.Id, source.Id, weight, heads.ToArray(), same[i] ? weight - sums[i] : 0, sums[i] - listed);
            }
        }
    }

    /// <summary>What each token adds at hook_embed [T, d] (float64), from a run that stops before the first block.</summary>
    static Tensor Embedding(HookedTransformer model, Tensor tokens)
    {
        Tensor? embed = null;
        var keep = new ForwardHookSpec(HookFilter.Named(HookNames.Embed), (x, _) => { embed = x[0].to(ScalarType.Float64).clone().DetachFromDisposeScope(); return null; });
        using (NewDisposeScope()) model.Run(tokens, new RunOptions { StopAtLayer = 0, Hooks = new[] { keep } });
        if (embed is null) throw new MechanistException("the model did not fire hook_embed");
        using (embed) return embed.clone();
    }

    /// <summary>
    /// For each layer m, the values W_V N_m(r_s) [S, H, dh] (float64; key-value heads repeated for their query heads) that each source's
    /// staying residual r_s puts at its position: zero before the source has written anything. All sources advance together, layer by
    /// layer. Without <paramref name="throughDiagonals"/>, r_s holds only what reached the position through no attention head.
    /// </summary>
    static Tensor[] StayingValues(ReplacementModel rm, GraphNode[] sources, Tensor embedValue, Tensor[] patterns, Float64Weights f64, bool throughDiagonals)
    {
        var model = rm.Model; var cfg = model.Config; var d = rm.Dictionary;
        int L = cfg.NLayers, S = sources.Length, D = cfg.DModel, H = cfg.NHeads, T = (int)rm.Tokens.shape[1];
        long F = rm.Activations.shape[2];
        using var positions = tensor(sources.Select(n => (long)n.Position).ToArray());
        var r = zeros(S, D, ScalarType.Float64);
        var tokenRows = Enumerable.Range(0, S).Where(i => sources[i].Kind == NodeKind.Token).ToArray();
        if (tokenRows.Length > 0)
        {
            using var rows = tensor(tokenRows.Select(i => (long)i).ToArray());
            using var at = tensor(tokenRows.Select(i => (long)sources[i].Position).ToArray());
            r.index_copy_(0, rows, embedValue.index_select(0, at));
        }
        // Feature sources by layer (rows, feature ids, activations) and error sources by layer (rows, positions): each written with one index_add.
        var featureRows = Enumerable.Range(0, L).Select(l => Enumerable.Range(0, S).Where(i => sources[i].Kind == NodeKind.Feature && sources[i].Layer == l).ToArray()).ToArray();
        var errorRows = Enumerable.Range(0, L).Select(l => Enumerable.Range(0, S).Where(i => sources[i].Kind == NodeKind.Error && sources[i].Layer == l).ToArray()).ToArray();
        var flatActivations = rm.Activations.reshape(-1);
        Tensor Rows(int[] list) => tensor(list.Select(i => (long)i).ToArray());
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
            var mid = r;
            if (throughDiagonals)
            {
                var diagonal = patterns[m].diagonal(0, 1, 2).t().index_select(0, positions).to(ScalarType.Float64);                   // [S, H]
                var attn = v.mul(diagonal.unsqueeze(-1)).reshape(S, H * cfg.DHead).matmul(f64.Of(w.Wo).t());    // [S, d]
                if (cfg.PostNorms) attn = PostNorm(cfg, attn, ScaleAt(HookKind.Ln1PostScale, m), w.PostAttnNormW, f64);
                mid = r.add(attn, Scalars.One);
            }
            if (cfg.AttnOnly) { r = mid; continue; }
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
            for (int l = 0; l <= m; l++)
            {
                if (featureRows[l].Length == 0 || !d.WritesTo(l, m)) continue;
                var list = featureRows[l];
                using var rows = Rows(list);
                using var ids = tensor(list.Select(i => sources[i].Index).ToArray());
                using var flat = tensor(list.Select(i => ((long)l * T + sources[i].Position) * F + sources[i].Index).ToArray());
                var written = d.DecoderRows(l, m, ids).to(ScalarType.Float64).mul(flatActivations.index_select(0, flat).to(ScalarType.Float64).unsqueeze(-1));
                r = r.IndexAddInPlace(0, rows, written);
            }
            if (errorRows[m].Length > 0)
            {
                using var rows = Rows(errorRows[m]);
                using var at = tensor(errorRows[m].Select(i => (long)sources[i].Position).ToArray());
                r = r.IndexAddInPlace(0, rows, rm.Errors[m].index_select(0, at).to(ScalarType.Float64));
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
