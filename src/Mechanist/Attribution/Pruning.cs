namespace Mechanist.Attribution;

/// <summary>What pruning keeps, and every node's influence.</summary>
/// <param name="NodeMask">Kept nodes.</param>
/// <param name="EdgeKept">Per stored edge of the graph's <see cref="SparseAdjacency"/>, whether it is kept.</param>
/// <param name="Influence">Each node's influence on the logit targets (unpruned graph).</param>
/// <param name="CumulativeInfluence">circuit-tracer's JSON "influence": the cumulative share at the node's rank (smaller = more important).</param>
public sealed record PrunedGraph(bool[] NodeMask, bool[] EdgeKept, double[] Influence, double[] CumulativeInfluence) : IDisposable
{
    /// <summary>Number of kept edges.</summary>
    public long KeptEdges => EdgeKept.LongCount(k => k);

    /// <summary>The kept edges as a dense [n, n] bool tensor (small graphs and tests).</summary>
    public TorchSharp.torch.Tensor DenseEdgeMask(SparseAdjacency edges)
    {
        var mask = new bool[(long)edges.Size * edges.Size];
        for (int r = 0; r < edges.Size; r++)
            for (long e = edges.RowStart[r]; e < edges.RowStart[r + 1]; e++) mask[(long)r * edges.Size + edges.Column[e]] = EdgeKept[e];
        return TorchSharp.torch.tensor(mask, new long[] { edges.Size, edges.Size });
    }

    /// <inheritdoc/>
    public void Dispose() { }
}

/// <summary>A graph's replacement and completeness scores.</summary>
/// <param name="Replacement">Σ influence of tokens / (Σ of tokens + Σ of errors): how much reaches the logits through features rather than errors.</param>
/// <param name="Completeness">The influence-weighted share of each node's input that does not come from error nodes.</param>
public sealed record GraphScores(double Replacement, double Completeness);

/// <summary>
/// circuit-tracer's pruning and scores on a sparse graph: node influence as the power series of the row-normalised |A|
/// seeded with the logit probabilities, node and edge thresholds on cumulative shares (found by selection, not by sorting
/// the edges), clean-up to a fixed point, and the graph scores. Float64 throughout; time and memory linear in the edges.
/// Rows are normalised by their full Σ|A|, including edges dropped when the graph was built; on the pruned graph, by the
/// kept edges alone (as circuit-tracer normalises the masked matrix).
/// </summary>
public static class Pruning
{
    /// <summary>Per stored edge, |A| divided by its row's Σ|A| (dropped mass included; all-zero rows stay zero).</summary>
    public static double[] Normalize(SparseAdjacency a, bool[]? keepNode = null)
    {
        var normalized = new double[a.Count];
        NormalizeInto(a, keepNode, normalized);
        return normalized;
    }

    /// <summary><see cref="Normalize"/> written into <paramref name="normalized"/> (every entry: zero where an edge or its row is not kept).</summary>
    static void NormalizeInto(SparseAdjacency a, bool[]? keepNode, double[] normalized)
    {
        for (int r = 0; r < a.Size; r++)
        {
            long start = a.RowStart[r], end = a.RowStart[r + 1];
            if (keepNode is not null && !keepNode[r]) { Array.Clear(normalized, (int)start, (int)(end - start)); continue; }
            double sum = RowSum(a, r, keepNode);
            for (long e = start; e < end; e++)
                normalized[e] = keepNode is null || keepNode[a.Column[e]] ? Math.Abs(a.Value[e]) / sum : 0;
        }
    }

    /// <summary>
    /// The denominator of row <paramref name="r"/>'s normalised edges: its Σ|A| over the kept columns (with the mass dropped when the
    /// graph was built where nothing is masked), at least 1e-10.
    /// </summary>
    static double RowSum(SparseAdjacency a, int r, bool[]? keepNode)
    {
        double sum = keepNode is null ? a.DroppedAbs[r] : 0;
        for (long e = a.RowStart[r]; e < a.RowStart[r + 1]; e++)
            if (keepNode is null || keepNode[a.Column[e]]) sum += Math.Abs(a.Value[e]);
        return Math.Max(sum, 1e-10);
    }

    /// <summary>
    /// <see cref="Influence(SparseAdjacency, double[], double[])"/> of the normalised rows collected so far, in one pass over their
    /// edges instead of one per path length: <paramref name="order"/> lists the rows so that every edge runs to a node later in it (or
    /// to one without a row), as an attribution's logits then features from the top layer down do; each row's total is then complete
    /// when it is reached. Null when an edge breaks that order (the caller falls back to the path-length series).
    /// </summary>
    public static double[]? Influence(SparseAdjacency.Builder rows, double[] weights, IReadOnlyList<int> order)
    {
        var rank = new int[weights.Length];
        Array.Fill(rank, int.MaxValue);
        for (int i = 0; i < order.Count; i++) rank[order[i]] = i;
        var reached = (double[])weights.Clone();                              // w + w·Â + w·Â² + … as rows are passed
        foreach (int r in order)
        {
            if (rows.Row(r) is not { } row) continue;
            double sum = row.Dropped;
            foreach (float v in row.Vals) sum += Math.Abs(v);
            double scale = reached[r] / Math.Max(sum, 1e-10);
            int own = rank[r];
            foreach (var (c, v) in row)
            {
                if (rank[c] <= own) return null;
                reached[c] += scale * Math.Abs(v);
            }
        }
        for (int i = 0; i < reached.Length; i++) reached[i] -= weights[i];
        return reached;
    }

    /// <summary>w·Â + w·Â² + …, until a term is exactly zero (Â of an attribution graph is nilpotent).</summary>
    public static double[] Influence(SparseAdjacency a, double[] normalized, double[] weights)
    {
        int n = a.Size;
        var term = (double[])weights.Clone();
        var total = new double[n];
        for (int step = 0; step < n; step++)
        {
            var next = new double[n];
            bool any = false;
            for (int r = 0; r < n; r++)
            {
                double t = term[r];
                if (t == 0) continue;
                for (long e = a.RowStart[r]; e < a.RowStart[r + 1]; e++) next[a.Column[e]] += t * normalized[e];
            }
            for (int i = 0; i < n; i++) { total[i] += next[i]; any |= next[i] != 0; }
            if (!any) break;
            term = next;
        }
        return total;
    }

    /// <summary>The smallest value whose cumulative share (values sorted descending) reaches <paramref name="fraction"/>.</summary>
    public static double Threshold(IEnumerable<double> values, double fraction) => Selection.CumulativeThreshold(values.ToArray(), fraction);

    /// <summary>Prunes a graph: keep nodes holding <paramref name="nodeThreshold"/> of the influence (tokens and logits always), then edges holding <paramref name="edgeThreshold"/> of the edge scores.</summary>
    public static PrunedGraph Prune(AttributionGraph graph, double nodeThreshold = 0.8, double edgeThreshold = 0.98)
    {
        var a = graph.Edges;
        int n = a.Size;
        var weights = LogitWeights(graph);
        // Two edge-sized buffers in all (the normalised rows, then the pruned ones in their place; the edge scores): a graph's edges
        // run to millions, and fresh memory is paid a page fault per 4 KB.
        var normalized = Normalize(a);
        var influence = Influence(a, normalized, weights);
        double nodeCut = Threshold(influence, nodeThreshold);
        var nodeMask = new bool[n];
        for (int i = 0; i < n; i++) nodeMask[i] = influence[i] >= nodeCut || graph.Nodes[i].Kind is NodeKind.Token or NodeKind.Logit;

        NormalizeInto(a, nodeMask, normalized);
        var prunedInfluence = Influence(a, normalized, weights);
        double EdgeScore(int r, long e) => normalized[e] * (prunedInfluence[r] + weights[r]);
        var edgeScores = new double[a.Count];
        for (int r = 0; r < n; r++)
            for (long e = a.RowStart[r]; e < a.RowStart[r + 1]; e++) edgeScores[e] = EdgeScore(r, e);
        // The dense threshold runs over all n² scores; the ones not stored are zeros, which move no cumulative share. (The selection
        // reorders the scores; each edge's is computed again below.)
        double edgeCut = Selection.CumulativeThreshold(edgeScores, edgeThreshold);
        var edgeKept = new bool[a.Count];
        for (int r = 0; r < n; r++)
            for (long e = a.RowStart[r]; e < a.RowStart[r + 1]; e++) edgeKept[e] = EdgeScore(r, e) >= edgeCut && (edgeCut > 0 || a.Value[e] != 0);

        // Clean-up: features and errors need a kept outgoing edge, features a kept incoming one; repeat to a fixed point.
        while (true)
        {
            var hasOut = new bool[n]; var hasIn = new bool[n];
            for (int r = 0; r < n; r++)
                for (long e = a.RowStart[r]; e < a.RowStart[r + 1]; e++)
                {
                    if (!edgeKept[e]) continue;
                    if (!nodeMask[r] || !nodeMask[a.Column[e]]) { edgeKept[e] = false; continue; }
                    hasIn[r] = true; hasOut[a.Column[e]] = true;
                }
            bool changed = false;
            for (int i = 0; i < n; i++)
            {
                var kind = graph.Nodes[i].Kind;
                bool keep = nodeMask[i] && (kind is not (NodeKind.Feature or NodeKind.Error) || hasOut[i]) && (kind != NodeKind.Feature || hasIn[i]);
                if (keep != nodeMask[i]) { nodeMask[i] = keep; changed = true; }
            }
            if (!changed) break;
        }

        var order = Enumerable.Range(0, n).OrderByDescending(i => influence[i]).ToArray();
        double total = influence.Sum(), running = 0;
        var cumulative = new double[n];
        foreach (int i in order) { running += influence[i]; cumulative[i] = running / total; }
        return new PrunedGraph(nodeMask, edgeKept, influence, cumulative);
    }

    /// <summary>
    /// The replacement and completeness scores of the unpruned graph; pass its <see cref="PrunedGraph"/> to reuse the
    /// influence already computed there.
    /// </summary>
    public static GraphScores Scores(AttributionGraph graph, PrunedGraph? pruned = null)
    {
        var a = graph.Edges;
        var weights = LogitWeights(graph);
        var influence = pruned?.Influence ?? Influence(a, Normalize(a), weights);
        double tokens = 0, errors = 0, weighted = 0, scoredTotal = 0;
        for (int r = 0; r < a.Size; r++)
        {
            var kind = graph.Nodes[r].Kind;
            if (kind == NodeKind.Token) tokens += influence[r];
            if (kind == NodeKind.Error) errors += influence[r];
            // Each edge's normalised weight as Normalize gives it, computed here rather than held for every edge.
            double fromErrors = 0, sum = RowSum(a, r, null);
            for (long e = a.RowStart[r]; e < a.RowStart[r + 1]; e++)
                if (graph.Nodes[a.Column[e]].Kind == NodeKind.Error) fromErrors += Math.Abs(a.Value[e]) / sum;
            double scored = influence[r] + weights[r];
            weighted += (1 - fromErrors) * scored;
            scoredTotal += scored;
        }
        return new GraphScores(tokens / (tokens + errors), weighted / scoredTotal);
    }

    static double[] LogitWeights(AttributionGraph graph) =>
        graph.Nodes.Select(x => x.Kind == NodeKind.Logit ? x.Probability ?? 0 : 0).ToArray();
}
