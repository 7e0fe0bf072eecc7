namespace Mechanist.Attribution;

/// <summary>How much attention detail a graph file carries.</summary>
/// <param name="TopHeads">Head loadings kept per edge (the rest summed).</param>
/// <param name="TopPairs">QK terms kept per attention score (the rest summed).</param>
/// <param name="Threshold">A (layer, head, query, key) gets its QK terms when one of its loadings is at least this share of its edge's |weight|.</param>
/// <param name="MaxScores">At most this many attention scores are decomposed (the most loaded first).</param>
/// <param name="Batch">Targets per backward pass of the head loadings whose gradients the attribution did not keep (the prompt runs as this many copies).</param>
/// <param name="GradientBudgetMb">The attribution keeps its rows' gradients with respect to hook_z, up to this many MB, so head loadings reuse its backward passes.</param>
public sealed record GraphQkOptions(int TopHeads = 8, int TopPairs = 10, double Threshold = 0.1, int MaxScores = 200, int Batch = 8, int GradientBudgetMb = 1024);

/// <summary>
/// The attention part of an attribution graph: for each written edge between positions, its head loadings; for each
/// (layer, head, query, key) that carries a written edge, the QK terms of that score.
/// </summary>
/// <param name="Loadings">Keyed by (target id, source id).</param>
/// <param name="Scores">The decomposed attention scores, most loaded first.</param>
public sealed record GraphQk(IReadOnlyDictionary<(string Target, string Source), EdgeLoadings> Loadings, IReadOnlyList<QkAttributionResult> Scores)
{
    /// <summary>Computes both for the edges of <paramref name="graph"/> that its file writes (<see cref="GraphFile.WrittenEdges"/>).</summary>
    /// <remarks>
    /// <paramref name="targets"/>: the custom logit targets the graph was traced with, if any (its logit nodes in their order);
    /// <paramref name="gradients"/>: what the attribution kept of its rows' gradients (<see cref="AttributionOptions.ZGradients"/>).
    /// </remarks>
    public static GraphQk Build(ReplacementModel rm, AttributionGraph graph, PrunedGraph influence, bool pruned, GraphQkOptions? options = null,
        IReadOnlyList<LogitTarget>? targets = null, ZGradientCache? gradients = null)
    {
        options ??= new GraphQkOptions();
        var edges = GraphFile.WrittenEdges(graph, influence, pruned)
            .Select(e => (Target: graph.Nodes[e.Target], Source: graph.Nodes[e.Source], Weight: (double)e.Weight))
            .Where(e => e.Target.Position != e.Source.Position).ToList();
        var logits = graph.Nodes.Where(n => n.Kind == NodeKind.Logit).ToArray();
        var custom = targets is { Count: > 0 } && targets.Count == logits.Length ? logits.Zip(targets).ToDictionary(x => x.First, x => x.Second) : null;
        var loadings = HeadLoadings.Compute(rm, edges, options.TopHeads, options.Batch, custom, gradients);
        // The scores worth opening: (layer, head, query, key) whose loading is a real share of some edge, by their largest share.
        var wanted = new Dictionary<(int Layer, int Head, int Query, int Key), double>();
        for (int i = 0; i < edges.Count; i++)
        {
            double edge = Math.Abs(edges[i].Weight);
            if (edge == 0) continue;
            foreach (var h in loadings[i].Heads)
            {
                double share = Math.Abs(h.Value) / edge;
                if (share < options.Threshold) continue;
                var key = (h.Layer, h.Head, h.Query, edges[i].Source.Position);
                wanted[key] = Math.Max(wanted.GetValueOrDefault(key), Math.Abs(h.Value));
            }
        }
        var scores = new List<QkAttributionResult>();
        if (wanted.Count > 0)
        {
            using var qk = QkAttribution.For(rm);
            foreach (var (k, _) in wanted.OrderByDescending(kv => kv.Value).Take(options.MaxScores))
                scores.Add(qk.Compute(k.Layer, k.Head, k.Query, k.Key, options.TopPairs));
        }
        return new GraphQk(loadings.ToDictionary(l => (l.Target, l.Source)), scores);
    }
}
