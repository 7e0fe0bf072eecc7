using Mechanist.Reporting;

namespace Mechanist.Attribution;

/// <summary>A PNG of a pruned attribution graph: tokens along the bottom, features and errors by layer, logits on top.</summary>
public static class GraphPicture
{
    /// <summary>
    /// Draws the kept nodes (features orange, errors grey, tokens green, logits purple; size by influence rank) and the
    /// <paramref name="maxEdges"/> strongest kept edges. <paramref name="featureLabel"/> names features worth labelling (null: none).
    /// </summary>
    public static void Write(string path, AttributionGraph graph, PrunedGraph pruned, string[] tokenLabels, Func<long, string> tokenText, string title,
        Func<GraphNode, string?>? featureLabel = null, int maxEdges = 120)
    {
        int layers = graph.Nodes.Where(n => n.Kind is NodeKind.Feature or NodeKind.Error).Select(n => n.Layer).DefaultIfEmpty(0).Max() + 1;
        var kept = Enumerable.Range(0, graph.Nodes.Length).Where(i => pruned.NodeMask[i]).ToList();
        var index = new Dictionary<int, int>();
        var markers = new List<Plots.GraphMarker>();
        foreach (var cell in kept.GroupBy(i => (Row(graph.Nodes[i], layers), graph.Nodes[i].Position)))
        {
            var members = cell.OrderBy(i => pruned.CumulativeInfluence[i]).ToList();
            for (int j = 0; j < members.Count; j++)
            {
                int i = members[j]; var n = graph.Nodes[i];
                double x = n.Position + (members.Count == 1 ? 0 : (j - (members.Count - 1) / 2.0) * Math.Min(0.8 / members.Count, 0.12));
                double size = 6 + 14 * (1 - Math.Clamp(pruned.CumulativeInfluence[i], 0, 1));
                string label = n.Kind switch
                {
                    NodeKind.Logit => tokenText(n.Index),
                    NodeKind.Feature => featureLabel?.Invoke(n) ?? "",
                    _ => "",
                };
                index[i] = markers.Count;
                markers.Add(new Plots.GraphMarker(x, cell.Key.Item1, label, size, n.Kind switch { NodeKind.Feature => 0, NodeKind.Error => 1, NodeKind.Token => 2, _ => 3 }));
            }
        }
        var a = graph.Edges;
        var edges = new List<(int, int, double)>();
        for (int r = 0; r < a.Size; r++)
            for (long e = a.RowStart[r]; e < a.RowStart[r + 1]; e++)
                if (pruned.EdgeKept[e] && index.ContainsKey(r) && index.ContainsKey(a.Column[e])) edges.Add((index[a.Column[e]], index[r], a.Value[e]));
        edges = edges.OrderByDescending(e => Math.Abs(e.Item3)).Take(maxEdges).ToList();
        var yLabels = new[] { (-1.0, "embed") }.Concat(Enumerable.Range(0, layers).Select(l => ((double)l, $"layer {l}"))).Append((layers, "logits")).ToArray();
        Plots.LayeredGraph(markers, edges, tokenLabels, yLabels, path, title);
    }

    static double Row(GraphNode n, int layers) => n.Kind switch { NodeKind.Token => -1, NodeKind.Logit => layers, _ => n.Layer };
}
