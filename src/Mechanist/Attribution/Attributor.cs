using Mechanist.Dictionaries;
using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>What a node of an attribution graph is.</summary>
public enum NodeKind
{
    /// <summary>An active transcoder feature at (layer, position).</summary>
    Feature,
    /// <summary>The error (what the transcoder misses) of a layer at a position.</summary>
    Error,
    /// <summary>A prompt token's embedding.</summary>
    Token,
    /// <summary>A logit target at the last position.</summary>
    Logit,
}

/// <summary>One node.</summary>
/// <param name="Kind">Kind.</param>
/// <param name="Layer">Layer (−1 for tokens, L + 1 for logits, as circuit-tracer numbers them).</param>
/// <param name="Position">Position in the prompt.</param>
/// <param name="Index">Feature index, token id (tokens and logits), or −1 (errors).</param>
/// <param name="Activation">A feature's activation.</param>
/// <param name="Probability">A logit's probability.</param>
public sealed record GraphNode(NodeKind Kind, int Layer, int Position, long Index, double? Activation = null, double? Probability = null)
{
    /// <summary>circuit-tracer's node id: "{layer}_{feature}_{pos}", errors "{layer}_-1_{pos}", tokens "E_{id}_{pos}", logits "{L+1}_{id}_{pos}".</summary>
    public string Id => Kind switch
    {
        NodeKind.Token => $"E_{Index}_{Position}",
        _ => $"{Layer}_{Index}_{Position}",
    };
}

/// <summary>An unpruned attribution graph: nodes in circuit-tracer's order and the direct-effect edges.</summary>
/// <param name="TokenIds">The prompt.</param>
/// <param name="Nodes">Features (by layer, position, feature), errors (layer-major), tokens, logits (by probability).</param>
/// <param name="Edges">A[target, source], sparse: the source's direct effect on the target's readout.</param>
/// <remarks>All managed memory (no tensors): nothing to dispose.</remarks>
public sealed record AttributionGraph(long[] TokenIds, GraphNode[] Nodes, SparseAdjacency Edges)
{
    /// <summary>A graph from a dense [n, n] adjacency (its nonzero entries become the edges).</summary>
    public AttributionGraph(long[] tokenIds, GraphNode[] nodes, Tensor adjacency) : this(tokenIds, nodes, SparseAdjacency.FromDense(adjacency)) { }

    /// <summary>The dense [n, n] float32 adjacency (small graphs and tests; n² floats).</summary>
    public Tensor DenseAdjacency() => Edges.ToDense();
}

/// <summary>How to attribute.</summary>
/// <param name="MaxLogits">At most this many logit targets.</param>
/// <param name="LogitProbability">Take the most likely tokens until their cumulative probability reaches this.</param>
/// <param name="BatchSize">Target rows per backward pass (the prompt runs once as this many copies).</param>
/// <param name="Targets">Custom logit targets instead of the most likely tokens (see <see cref="LogitTarget"/>).</param>
/// <param name="MaxFeatureNodes">
/// Keep at most this many features: after the logit rows, features are visited in order of their influence estimated on
/// the rows computed so far, and only visited ones become nodes (circuit-tracer's max_feature_nodes). Null: every active feature.
/// </param>
/// <param name="MaxEdgesPerRow">
/// Keep at most this many edges per target row (the largest |A|); the rest are dropped as the row is computed, their
/// absolute mass recorded so normalisation still divides by the row's true total. Null: every nonzero edge.
/// </param>
/// <param name="Progress">Called after each backward pass with (rows done, rows planned).</param>
/// <param name="ZGradients">When given, each computed row's gradients with respect to every layer's <c>hook_z</c> are kept there (up to its budget) for head loadings.</param>
/// <param name="VisitChunk">
/// Under a feature budget, the features picked per influence estimate (at least <paramref name="BatchSize"/>; circuit-tracer
/// picks its backward batch, 256 by default). Their rows then run grouped by layer, so a pass stops at its rows' layer.
/// </param>
public sealed record AttributionOptions(int MaxLogits = 10, double LogitProbability = 0.95, int BatchSize = 32, IReadOnlyList<LogitTarget>? Targets = null,
    int? MaxFeatureNodes = null, int? MaxEdgesPerRow = null, Action<int, int>? Progress = null, ZGradientCache? ZGradients = null, int VisitChunk = 256);

/// <summary>
/// A custom logit target: the token <paramref name="Token"/>'s demeaned logit, or, with <paramref name="Minus"/>, the logit
/// difference Token − Minus (the vocabulary mean cancels). Its influence weight is the token's probability, or 1 for a difference.
/// </summary>
/// <param name="Token">Token id.</param>
/// <param name="Minus">Token id subtracted, for a logit difference.</param>
/// <param name="Direction">
/// Any readout direction in the residual stream at the last position (d_model values), used as is: its row is every source's
/// direct effect on (final residual · direction). <paramref name="Token"/> then only labels the node; its influence weight is 1.
/// </param>
public sealed record LogitTarget(long Token, long? Minus = null, float[]? Direction = null);

/// <summary>
/// Attribution graphs as circuit tracing defines them: in the frozen replacement model, the direct effect of every
/// source (active feature, error, token) on every target readout (a feature's pre-activation without bias, or a logit
/// target's demeaned logit). Rows are computed by injected backward passes, many targets per pass.
/// </summary>
public static class Attributor
{
    static readonly TorchSharp.Scalar One = Tensors.Scalars.One;

    /// <summary>Builds the graph of <paramref name="rm"/>'s prompt.</summary>
    public static AttributionGraph Attribute(ReplacementModel rm, AttributionOptions? options = null)
    {
        options ??= new AttributionOptions();
        var model = rm.Model; var d = rm.Dictionary; var reg = model.HookPoints;
        int L = model.Config.NLayers, T = (int)rm.Tokens.shape[1];
        using var scope = NewDisposeScope();
        var ids = rm.Tokens[0].cpu().data<long>().ToArray();

        // Nodes: active features sorted by (layer, pos, feature) — nonzero() is row-major — then errors, tokens, logits.
        var active = rm.Activations.nonzero().cpu();                                  // [n_f, 3]
        int nf = (int)active.shape[0];
        // (TorchSharp cannot read an empty tensor into an array: an attention-only model has no features.)
        var af = nf == 0 ? Array.Empty<long>() : Tensors.TensorMemory.ToArray<long>(active);
        var actValues = nf == 0 ? Array.Empty<float>() : Tensors.TensorMemory.ToArray<float>(rm.Activations);
        int F = d.DDict;
        var nodes = new List<GraphNode>();
        for (int i = 0; i < nf; i++)
        {
            int l = (int)af[3 * i], p = (int)af[3 * i + 1]; long f = af[3 * i + 2];
            nodes.Add(new GraphNode(NodeKind.Feature, l, p, f, actValues[((long)l * T + p) * F + f]));
        }
        // An attention-only model has no MLPs: no features and no error nodes.
        int errorLayers = rm.IsAttentionOnly ? 0 : L;
        for (int l = 0; l < errorLayers; l++) for (int p = 0; p < T; p++) nodes.Add(new GraphNode(NodeKind.Error, l, p, -1));
        for (int p = 0; p < T; p++) nodes.Add(new GraphNode(NodeKind.Token, -1, p, ids[p]));
        var probs = rm.Logits[T - 1].softmax(-1);
        var wu = model.Weights.WU.to(ScalarType.Float32);
        Tensor demeaned;
        int k;
        if (options.Targets is { Count: > 0 } custom)
        {
            long vocab = probs.shape[0];
            foreach (var t in custom)
            {
                if (t.Token < 0 || t.Token >= vocab || t.Minus is { } m && (m < 0 || m >= vocab)) throw new MechanistException($"target token {t.Token} is outside the vocabulary (0..{vocab - 1})");
                if (t.Direction is { } dir && dir.Length != model.Config.DModel) throw new MechanistException($"a target direction needs {model.Config.DModel} values (d_model), not {dir.Length}");
            }
            k = custom.Count;
            var directions = custom.Select(t => Readout(wu, t)).ToArray();
            demeaned = stack(directions);
            foreach (var t in custom) nodes.Add(new GraphNode(NodeKind.Logit, L + 1, T - 1, t.Token, Probability: t.Minus is null && t.Direction is null ? probs[t.Token].item<float>() : 1.0));
        }
        else
        {
            var (topP, topI) = probs.topk(Math.Min(options.MaxLogits, (int)probs.shape[0]));
            var pList = topP.cpu().data<float>().ToArray(); var iList = topI.cpu().data<long>().ToArray();
            k = 0; double cum = 0;
            while (k < pList.Length) { cum += pList[k]; k++; if (cum >= options.LogitProbability) break; }
            for (int i = 0; i < k; i++) nodes.Add(new GraphNode(NodeKind.Logit, L + 1, T - 1, iList[i], Probability: pList[i]));
            demeaned = wu.index_select(0, topI[..k]) - wu.mean(new long[] { 0 });   // [k, d]
        }
        int n = nodes.Count, errorBase = nf, tokenBase = nf + errorLayers * T, logitBase = tokenBase + T;

        // Frozen forwards as B copies; every pass injects one target per copy. A causal model's activations before position P do not
        // depend on later tokens, so a pass whose targets all sit before P runs on a forward of the prompt's first P tokens: up to
        // four prefixes (as memory allows), each run once, when first needed.
        int B = Math.Max(1, Math.Min(options.BatchSize, nf + k));
        string[] inputs = Enumerable.Range(0, errorLayers).Select(l => SplicePoints.Under(reg.Name(HookKind.MlpOut, l), SplicePoints.Input)).ToArray();
        string[] outputs = Enumerable.Range(0, errorLayers).Select(l => reg.Name(HookKind.MlpOut, l)).ToArray();
        string embed = HookNames.Embed, unembedIn = HookNames.UnembedIn;
        // With a gradient cache, the same passes also reach every layer's hook_z (it lies on their path: no extra work but the copy).
        var zs = options.ZGradients is null ? Array.Empty<string>() : Enumerable.Range(0, L).Select(l => reg.Name(HookKind.Z, l)).ToArray();
        var retain = inputs.Concat(outputs).Concat(zs).Append(embed).Append(unembedIn).ToArray();
        // The backward written out where the model suits it (no retained forward, passes that stop at their last position); else autograd.
        using var frozen = FrozenBackward.For(rm);
        using var forwards = new PrefixForwards(length => RetainedForward.Run(model, length == T ? rm.Tokens : rm.Tokens[.., ..length], retain, B, rm.FrozenOptions()),
            T, PositionBuckets(model, B, T));
        var wrt = outputs.Append(embed).Concat(zs).ToArray();
        long zPositionBytes = 4L * L * model.Config.NHeads * model.Config.DHead;      // a row's hook_z gradients at one position

        // Per source layer, the features' positions, indices and activations (for gathering their columns).
        var grids = Enumerable.Range(0, L).Select(l => FeatureGrid.Of(nodes, nf, l, T, model.Device)).ToArray();
        var builder = new SparseAdjacency.Builder(n, options.MaxEdgesPerRow);
        int rowsDone = 0, rowsPlanned = k + Math.Min(options.MaxFeatureNodes ?? nf, nf);
        // Where a row's backward starts: a feature reads the residual at its own layer and position (nothing above or after
        // them reaches it), a logit at the top of the last position.
        int TopLayer(int node) => node < nf ? nodes[node].Layer : L;
        int LastPosition(int node) => node < nf ? nodes[node].Position : T - 1;
        // Rows for target nodes (feature indices below nf, or logit nodes), at most B per backward pass. Sorted by where they
        // start, a pass's rows share their top layer (the backward never runs above it) and nearby positions (the feature
        // columns are read only up to the last of them). Up to MaxGroupPasses consecutive passes run side by side a layer at a
        // time: at each layer the feature columns' products read all of their gradients there at once, so that a decoder row
        // read from memory serves the group's rows (up to 256), not one pass's 32.
        void ComputeRows(IReadOnlyList<int> unordered)
        {
            var targetNodes = unordered.OrderBy(x => frozen is null ? forwards.BucketFor(LastPosition(x) + 1) : 0).ThenBy(TopLayer).ThenBy(LastPosition).ThenBy(x => x).ToArray();
            var passes = new List<RowPass>();
            for (int start = 0; start < targetNodes.Length; start += B)
            {
                int rows = Math.Min(B, targetNodes.Length - start), top = 0, P = 0;
                for (int r = 0; r < rows; r++) { top = Math.Max(top, TopLayer(targetNodes[start + r])); P = Math.Max(P, LastPosition(targetNodes[start + r]) + 1); }
                passes.Add(new RowPass(start, rows, top, P, Math.Min(top, errorLayers)));
            }
            // (The autograd path runs its passes one at a time: each reads its own retained forward. Passes keep their rows' hook_z
            // gradients until the cache is full; the rest run without them.)
            for (int first = 0; first < passes.Count;)
            {
                bool keepZ = options.ZGradients is { } cache && cache.Fits(zPositionBytes);
                int perGroup = frozen is null ? 1 : MaxGroupPasses;
                var group = passes.GetRange(first, Math.Min(perGroup, passes.Count - first));
                ComputeGroup(targetNodes, group, keepZ);
                first += group.Count;
            }
        }

        void ComputeGroup(int[] targetNodes, List<RowPass> passes, bool keepZ)
        {
            using var groupScope = NewDisposeScope();
            int Pg = passes.Max(x => x.P), reachedG = passes.Max(x => x.Reached), Rg = passes.Sum(x => x.Rows);
            var offsets = new int[passes.Count];
            for (int i = 1; i < passes.Count; i++) offsets[i] = offsets[i - 1] + passes[i - 1].Rows;
            // Per source layer, Σ over the layers j its features write to of grad_j[p] · W_dec(l→j)[f] for every row of the group,
            // [Pg, slots, Rg] (the activations are applied per pass); per pass and layer reached, grad_l[p] · error[l, p], [P, rows].
            // (Slots before rows: the products' wider side is the rows, which the GEMM prefers as its columns.)
            var sums = new Tensor?[reachedG];
            for (int l = 0; l < reachedG; l++) if (grids[l] is { } grid && grid.FilledBefore[Pg] > 0) sums[l] = zeros(Pg, grid.Slots, Rg, device: model.Device);
            var errorColumns = passes.Select(x => new Tensor[x.Reached]).ToArray();
            var embeds = new (Tensor Gradient, Tensor Value)[passes.Count];
            // The group's gradients at one layer's output, [Pg, Rg, d]: each pass writes its rows up to its last position.
            var atLayer = reachedG == 0 ? null : empty(new long[] { Pg, Rg, model.Config.DModel }, ScalarType.Float32, model.Device);
            void Read(int i, int j, Tensor g)
            {
                var (_, rows, _, P, _) = passes[i];
                atLayer!.narrow(0, 0, P).narrow(1, offsets[i], rows).copy_(g);
                errorColumns[i][j] = bmm(g, rm.Errors[j][..P].unsqueeze(2)).squeeze(2);                // [P, rows]
            }
            List<(int Row, Tensor Slot)> ReserveZ(int[] targets, RowPass pass)
            {
                var kept = new List<(int, Tensor)>();
                var c = model.Config;
                for (int r = 0; r < pass.Rows; r++)
                {
                    int node = targets[pass.Start + r], positions = LastPosition(node) + 1;
                    if (options.ZGradients!.Fits(positions * zPositionBytes))
                        kept.Add((r, options.ZGradients.Reserve(nodes[node], new long[] { L, c.NHeads, positions, c.DHead }, model.Device)));
                }
                return kept;
            }
            void KeepZ(int i, Tensor[] z)
            {
                for (int r = 0; r < passes[i].Rows; r++)
                {
                    int node = targetNodes[passes[i].Start + r], positions = LastPosition(node) + 1;
                    if (options.ZGradients!.Fits(positions * zPositionBytes)) options.ZGradients.Keep(nodes[node], z.Select(x => x[r]).ToArray(), positions);
                }
            }
            var autograd = new List<Tensor>();                                                       // (not in the scope: freed below)
            try
            {
                if (frozen is not null)
                {
                    // The rows that keep their hook_z gradients have their place in the cache from the start, and each layer's are
                    // written there as the pass runs it (the group's passes never hold theirs: [rows, P, heads, d_head] a layer).
                    var slots = passes.Select(x => keepZ ? ReserveZ(targetNodes, x) : new List<(int Row, Tensor Slot)>()).ToArray();
                    var written = passes.Select(_ => new bool[L]).ToArray();
                    var states = passes.Select((x, i) =>
                    {
                        var features = new List<(int, GraphNode)>(); var logits = new List<(int, Tensor)>();
                        for (int r = 0; r < x.Rows; r++)
                        {
                            int t = targetNodes[x.Start + r];
                            if (t < nf) features.Add((r, nodes[t])); else logits.Add((r, demeaned[t - logitBase]));
                        }
                        return frozen.Start(x.Rows, x.Top, x.P, features, logits, slots[i].Count > 0, (layer, z) =>
                        {
                            foreach (var (r, slot) in slots[i]) using (var row = z[r]) ZGradientCache.WriteLayer(slot, layer, row);
                            written[i][layer] = true;
                        });
                    }).ToArray();
                    for (int j = states.Max(s => s.Layer); j >= 0; j--)
                    {
                        for (int i = 0; i < passes.Count; i++)
                        {
                            if (states[i].Layer != j) continue;
                            if (j < passes[i].Reached)
                                Read(i, j, states[i].Gradient ?? zeros(new long[] { passes[i].P, passes[i].Rows, model.Config.DModel }, ScalarType.Float32, model.Device));
                            states[i].Step();
                        }
                        if (j < reachedG) LayerColumns(j, passes, offsets, atLayer!, sums);
                    }
                    for (int i = 0; i < passes.Count; i++)
                    {
                        var grads = states[i].Finish();
                        embeds[i] = (grads.Embed, rm.Clean[embed][0, ..passes[i].P].to(ScalarType.Float32));
                        // Layers the pass never ran (above its top) carry no gradient.
                        for (int m = 0; m < L; m++)
                            if (!written[i][m]) foreach (var (_, slot) in slots[i]) using (var layer = slot[m]) layer.zero_();
                    }
                }
                else
                {
                    var (start, rows, _, P, reached) = passes[0];
                    var forward = forwards.For(forwards.BucketFor(P));                                // a prefix of at least P positions
                    var readouts = new ReadoutInjection(forward, d, inputs, unembedIn);
                    for (int r = 0; r < rows; r++)
                    {
                        int t = targetNodes[start + r];
                        if (t < nf) readouts.Feature(r, nodes[t]);
                        else readouts.Logit(r, T - 1, demeaned[t - logitBase]);
                    }
                    var all = forward.Gradients(readouts.Injections(), wrt);                          // L × [B, ≥P, d] (none without MLPs), embed, then hook_z
                    autograd.AddRange(all);
                    Tensor PositionsFirst(Tensor t) => t[..rows, ..P].to(ScalarType.Float32).permute(1, 0, 2);
                    for (int j = reached - 1; j >= 0; j--)
                    {
                        Read(0, j, PositionsFirst(all[j]));
                        LayerColumns(j, passes, offsets, atLayer!, sums);
                    }
                    embeds[0] = (PositionsFirst(all[errorLayers]), forward[embed][0].to(ScalarType.Float32));
                    if (keepZ) KeepZ(0, all[(errorLayers + 1)..]);
                }
                for (int i = 0; i < passes.Count; i++) AddRows(targetNodes, passes[i], offsets[i], sums, errorColumns[i], embeds[i]);
            }
            finally { foreach (var t in autograd) t.Dispose(); }
        }

        // Layer j's share of the feature columns: for each source layer l ≤ j whose features write to j, grad_j[p] · W_dec(l→j)[f]
        // over the group's rows that reach above j (a range: passes run by top layer) and past p, a few positions at a time (the
        // decoder rows gathered into a block that stays in the cache for the product that reads it). Rows inside the range whose
        // pass stops before p get products nobody reads.
        void LayerColumns(int j, List<RowPass> passes, int[] offsets, Tensor atLayer, Tensor?[] sums)
        {
            int Pg = (int)atLayer.shape[0];
            for (int l = 0; l <= j && l < sums.Length; l++)
            {
                if (sums[l] is not { } sum || !d.WritesTo(l, j)) continue;
                var grid = grids[l]!;
                int chunk = Math.Max(1, (int)(GatherBlockBytes / (4L * grid.Slots * d.DModel)));
                for (int p0 = 0; p0 < Pg; p0 += chunk)
                {
                    int lo = passes.FindIndex(x => x.Reached > j && x.P > p0), hi = passes.FindLastIndex(x => x.Reached > j && x.P > p0);
                    if (lo < 0) continue;
                    using var stepScope = NewDisposeScope();
                    int c = Math.Min(chunk, Pg - p0), rStart = offsets[lo], rCount = offsets[hi] + passes[hi].Rows - rStart;
                    var cells = grid.Features.narrow(0, (long)p0 * grid.Slots, (long)c * grid.Slots);
                    var dec = d.DecoderRows(l, j, cells).to(ScalarType.Float32).view(c, grid.Slots, -1);       // [c, slots, d]
                    var g = atLayer.narrow(0, p0, c).narrow(1, rStart, rCount);                               // [c, rows, d]
                    sum.narrow(0, p0, c).narrow(2, rStart, rCount).add_(bmm(dec, g.transpose(1, 2)), One);    // [c, slots, rows]
                }
            }
        }

        // A pass's rows into the builder: per source layer its features' columns (the sums times the activations), per layer
        // reached its errors', the tokens'.
        void AddRows(int[] targetNodes, RowPass pass, int offsetInGroup, Tensor?[] sums, Tensor[] errorColumns, (Tensor Gradient, Tensor Value) embeds)
        {
            using var passScope = NewDisposeScope();
            var (start, rows, _, P, reached) = pass;
            // A row's nonzero columns lie in runs of consecutive nodes: per source layer its features before P, per layer reached its
            // errors before P, the tokens before P (nothing else gets a gradient). The block holds just those runs side by side.
            var runs = new List<(int Start, int Length)>();
            var runLayers = new List<(int Layer, bool Feature)>();                                     // (the tokens' run: layer −1)
            for (int l = 0; l < reached; l++)
                if (grids[l] is { } present && present.FilledBefore[P] > 0) { runs.Add((present.FirstNode, (int)present.FilledBefore[P])); runLayers.Add((l, true)); }
            for (int l = 0; l < reached; l++) { runs.Add((errorBase + l * T, P)); runLayers.Add((l, false)); }
            runs.Add((tokenBase, P)); runLayers.Add((-1, false));
            int width = runs.Sum(x => x.Length), offset = 0;
            var block = empty(rows, width, ScalarType.Float32, device: model.Device);
            for (int l = 0; l < reached; l++)
            {
                if (grids[l] is not { } grid || grid.FilledBefore[P] == 0) continue;
                var sum = sums[l]!.narrow(0, 0, P).narrow(2, offsetInGroup, rows);                         // [P, slots, rows]
                var weighted = (sum * grid.Activations[..P].unsqueeze(2)).permute(2, 0, 1).reshape(rows, -1);  // [rows, P·slots]
                int filled = (int)grid.FilledBefore[P];
                block.narrow(1, offset, filled).copy_(weighted.index_select(1, grid.Filled[..filled]));
                offset += filled;
            }
            // Errors: grad_l[p] · error[l, p]; tokens: grad_embed[p] · the embedding added there.
            // (No gradient reaches the layers from the pass's top up, nor positions from P on: those columns stay empty.)
            for (int l = 0; l < reached; l++, offset += P) block.narrow(1, offset, P).copy_(errorColumns[l].t());
            block.narrow(1, offset, P).copy_(bmm(embeds.Gradient, embeds.Value[..P].unsqueeze(2)).squeeze(2).t());
            // The rows go into the builder straight from the block's memory. Each row keeps only its own reach: the pass's runs cut to
            // the layers below its own top and the positions up to its own (a prefix of each run: a layer's features run by
            // position); nothing beyond them gets a gradient from this row.
            var host = block.device_type == TorchSharp.DeviceType.CPU ? block : block.cpu();
            IntPtr data = Tensors.TensorMemory.DataPointer(host);
            Parallel.For(0, rows, r =>
            {
                int node = targetNodes[start + r], rowReached = Math.Min(TopLayer(node), errorLayers), rowP = LastPosition(node) + 1;
                var own = new (int Start, int Length)[runs.Count];
                int count = 0, total = 0;
                for (int i = 0; i < runs.Count; i++)
                {
                    var (layer, feature) = runLayers[i];
                    int length = layer >= rowReached ? 0 : feature ? (int)grids[layer]!.FilledBefore[rowP] : rowP;
                    own[i] = (runs[i].Start, length); total += length;
                }
                var values = GC.AllocateUninitializedArray<float>(total);
                int from = 0, to = 0;
                for (int i = 0; i < runs.Count; from += runs[i].Length, i++)
                {
                    if (own[i].Length == 0) continue;
                    unsafe { new ReadOnlySpan<float>((float*)data + (long)r * width + from, own[i].Length).CopyTo(values.AsSpan(to)); }
                    to += own[i].Length; own[count++] = own[i];
                }
                builder.AdoptRow(node, values, own[..count]);
            });
            GC.KeepAlive(host);
            rowsDone += rows;
            options.Progress?.Invoke(rowsDone, rowsPlanned);
        }

        var logitNodes = Enumerable.Range(logitBase, k).ToArray();
        ComputeRows(logitNodes);
        int budget = Math.Min(options.MaxFeatureNodes ?? nf, nf);
        if (budget >= nf)
        {
            ComputeRows(Enumerable.Range(0, nf).ToArray());
            return new AttributionGraph(ids, nodes.ToArray(), builder.Build());
        }
        // Visit features by their influence on the logits, estimated on the rows computed so far.
        var weights = nodes.Select(x => x.Kind == NodeKind.Logit ? x.Probability ?? 0 : 0).ToArray();
        // Every edge runs from a row to a lower layer (a feature reads the residual before its layer's MLP), so the rows from the
        // logits down through the layers are a topological order: the estimate is one pass over the rows so far.
        var downward = logitNodes.Concat(Enumerable.Range(0, nf).OrderByDescending(i => nodes[i].Layer).ThenBy(i => i)).ToArray();
        var visited = new bool[nf]; int count = 0;
        while (count < budget)
        {
            var influence = Pruning.Influence(builder, weights, downward);
            if (influence is null)
            {
                var soFar = builder.Build();
                influence = Pruning.Influence(soFar, Pruning.Normalize(soFar), weights);
            }
            var next = Enumerable.Range(0, nf).Where(i => !visited[i]).OrderByDescending(i => influence[i]).ThenBy(i => i).Take(Math.Min(Math.Max(B, options.VisitChunk), budget - count)).ToArray();
            foreach (int i in next) visited[i] = true;
            count += next.Length;
            ComputeRows(next);
        }
        var keep = Enumerable.Range(0, n).Where(i => i >= nf || visited[i]).ToArray();
        return new AttributionGraph(ids, keep.Select(i => nodes[i]).ToArray(), builder.Build(keep));
    }

    /// <summary>
    /// The residual direction a logit target reads at the last position (float32 unembedding <paramref name="wu"/>): its own direction,
    /// the difference of two tokens' rows, or a token's row minus the vocabulary mean.
    /// </summary>
    public static Tensor Readout(Tensor wu, LogitTarget t) => t.Direction is { } dir ? tensor(dir, device: wu.device)
        : t.Minus is { } m ? wu[t.Token] - wu[m] : wu[t.Token] - wu.mean(new long[] { 0 });

    /// <summary>
    /// A layer's feature nodes on a [T, Slots] grid: slot s of position p holds one feature (padding: feature 0, activation 0).
    /// Filled cells and their node columns run in position order; <see cref="FilledBefore"/>[p] counts those before position p.
    /// </summary>
    /// <remarks>The filled cells' nodes are consecutive (nodes run by layer, then position): <see cref="FirstNode"/> and on.</remarks>
    sealed record FeatureGrid(int Slots, Tensor Features, Tensor Activations, Tensor Filled, int FirstNode, long[] FilledBefore)
    {
        public static FeatureGrid? Of(List<GraphNode> nodes, int nf, int layer, int T, Device device)
        {
            var byPos = Enumerable.Range(0, nf).Where(i => nodes[i].Layer == layer).GroupBy(i => nodes[i].Position).ToDictionary(g => g.Key, g => g.ToArray());
            if (byPos.Count == 0) return null;
            int slots = byPos.Values.Max(v => v.Length);
            var features = new long[T * slots]; var acts = new float[T * slots];
            var filled = new List<long>(); var columns = new List<long>(); var filledBefore = new long[T + 1];
            for (int p = 0; p < T; p++)
            {
                var members = byPos.GetValueOrDefault(p, Array.Empty<int>());
                for (int s = 0; s < members.Length; s++)
                {
                    int cell = p * slots + s;
                    features[cell] = nodes[members[s]].Index; acts[cell] = (float)nodes[members[s]].Activation!.Value;
                    filled.Add(cell); columns.Add(members[s]);
                }
                filledBefore[p + 1] = filled.Count;
            }
            for (int i = 1; i < columns.Count; i++)
                if (columns[i] != columns[0] + i) throw new InvalidOperationException("a layer's feature nodes are not consecutive in (position, feature) order");
            return new FeatureGrid(slots, tensor(features, device: device), tensor(acts, new long[] { T, slots }, device: device),
                tensor(filled.ToArray(), device: device), (int)columns[0], filledBefore);
        }
    }

    /// <summary>One backward pass: its rows (targetNodes[Start..]), the highest top layer and last position + 1 among them, the MLP layers it reaches.</summary>
    readonly record struct RowPass(int Start, int Rows, int Top, int P, int Reached);

    /// <summary>At most this many passes run side by side (8 × 32 rows: circuit-tracer's visit batch of 256).</summary>
    const int MaxGroupPasses = 8;

    /// <summary>The most bytes of decoder rows gathered for one product (a block that stays in the cache between the gather and the product).</summary>
    const long GatherBlockBytes = 16L << 20;

    /// <summary>
    /// How many prefixes of a <paramref name="T"/>-token prompt get their own frozen forward of <paramref name="copies"/> copies: 4, 2 or 1
    /// (only the whole prompt), the most whose retained graphs together (about 2.5 and 1.5 whole ones: per copy and layer, two
    /// [heads, T, T] and six [T, d] tensors) fit in a quarter of the memory this process may take, at most 8 GB. One for a model that is
    /// not causal (its positions see later tokens) and for short prompts.
    /// </summary>
    internal static int PositionBuckets(HookedTransformer model, int copies, int T)
    {
        var c = model.Config;
        if (!c.Causal || T < 8) return 1;
        double bytes = 4.0 * copies * c.NLayers * (2.0 * c.NHeads * T * T + 6.0 * T * c.DModel);
        double budget = Math.Min(8e9, Runtime.ProcessMemory.Allowed() / 4.0);
        foreach (int k in new[] { 4, 2 }) if ((k + 1) / 2.0 * bytes <= budget) return k;
        return 1;
    }

    /// <summary>Frozen forwards of the prompt's first ⌈T·(b+1)/k⌉ tokens, b = 0..k−1, each run when first asked for.</summary>
    sealed class PrefixForwards(Func<int, RetainedForward> run, int T, int buckets) : IDisposable
    {
        readonly RetainedForward?[] _runs = new RetainedForward?[buckets];

        /// <summary>The positions of prefix <paramref name="b"/>.</summary>
        public int LengthOf(int b) => (int)Math.Ceiling((double)T * (b + 1) / buckets);

        /// <summary>The shortest prefix holding the first <paramref name="positions"/> positions.</summary>
        public int BucketFor(int positions)
        {
            for (int b = 0; b < buckets; b++) if (LengthOf(b) >= positions) return b;
            return buckets - 1;
        }

        /// <summary>Prefix <paramref name="b"/>'s forward (run now if it has not been).</summary>
        public RetainedForward For(int b) => _runs[b] ??= run(LengthOf(b));

        public void Dispose() { foreach (var r in _runs) r?.Dispose(); }
    }

}

