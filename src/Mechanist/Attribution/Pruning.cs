using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>What pruning keeps, and every node's influence.</summary>
/// <param name="NodeMask">Kept nodes.</param>
/// <param name="EdgeMask">Kept edges [n, n] (bool), in adjacency layout.</param>
/// <param name="Influence">Each node's influence on the logit targets (unpruned graph).</param>
/// <param name="CumulativeInfluence">circuit-tracer's JSON "influence": the cumulative share at the node's rank (smaller = more important).</param>
public sealed record PrunedGraph(bool[] NodeMask, Tensor EdgeMask, double[] Influence, double[] CumulativeInfluence) : IDisposable
{
    /// <inheritdoc/>
    public void Dispose() => EdgeMask.Dispose();
}

/// <summary>A graph's replacement and completeness scores.</summary>
/// <param name="Replacement">Σ influence of tokens / (Σ of tokens + Σ of errors): how much reaches the logits through features rather than errors.</param>
/// <param name="Completeness">The influence-weighted share of each node's input that does not come from error nodes.</param>
public sealed record GraphScores(double Replacement, double Completeness);

/// <summary>
/// circuit-tracer's pruning and scores: node influence as the power series of the row-normalised |A| seeded with the logit
/// probabilities, node and edge thresholds on cumulative shares, clean-up to a fixed point, and the graph scores.
/// Computed in float64.
/// </summary>
public static class Pruning
{
    /// <summary>|A| with every row divided by its sum (all-zero rows stay zero).</summary>
    public static Tensor Normalize(Tensor a)
    {
        var abs = a.to(ScalarType.Float64).abs();
        return abs / abs.sum(1, keepdim: true).clamp_min(1e-10);
    }

    /// <summary>w·Â + w·Â² + …, until a term is exactly zero (Â of an attribution graph is nilpotent).</summary>
    public static Tensor Influence(Tensor normalized, Tensor weights)
    {
        var term = matmul(weights.unsqueeze(0), normalized);
        var total = term.clone();
        for (int i = 0; i < normalized.shape[0] && term.abs().max().item<double>() > 0; i++)
        {
            term = matmul(term, normalized);
            total += term;
        }
        return total.squeeze(0);
    }

    /// <summary>The smallest value whose cumulative share (values sorted descending) reaches <paramref name="fraction"/>.</summary>
    public static double Threshold(Tensor values, double fraction)
    {
        var sorted = values.flatten().sort(descending: true).Values;
        var cumulative = sorted.cumsum(0) / sorted.sum();
        long index = (cumulative < fraction).sum().item<long>(); // first index with share ≥ fraction
        return sorted[Math.Min(index, sorted.shape[0] - 1)].item<double>();
    }

    /// <summary>Prunes a graph: keep nodes holding <paramref name="nodeThreshold"/> of the influence (tokens and logits always), then edges holding <paramref name="edgeThreshold"/> of the edge scores.</summary>
    public static PrunedGraph Prune(AttributionGraph graph, double nodeThreshold = 0.8, double edgeThreshold = 0.98)
    {
        using var scope = NewDisposeScope();
        int n = graph.Nodes.Length;
        var weights = LogitWeights(graph);
        var normalized = Normalize(graph.Adjacency);
        var influence = Influence(normalized, weights);
        var nodeMask = (influence >= Threshold(influence, nodeThreshold));
        var always = tensor(graph.Nodes.Select(x => x.Kind is NodeKind.Token or NodeKind.Logit).ToArray());
        nodeMask = nodeMask.logical_or(always);

        var keep = nodeMask.to(ScalarType.Float64);
        var pruned = graph.Adjacency.to(ScalarType.Float64) * keep.unsqueeze(1) * keep.unsqueeze(0);
        var normalizedPruned = Normalize(pruned);
        var prunedInfluence = Influence(normalizedPruned, weights);
        var edgeScores = normalizedPruned * (prunedInfluence + weights).unsqueeze(1);
        var edgeMask = edgeScores >= Threshold(edgeScores, edgeThreshold);

        // Clean-up: features and errors need a kept outgoing edge, features a kept incoming one; repeat to a fixed point.
        var featureOrError = tensor(graph.Nodes.Select(x => x.Kind is NodeKind.Feature or NodeKind.Error).ToArray());
        var feature = tensor(graph.Nodes.Select(x => x.Kind == NodeKind.Feature).ToArray());
        while (true)
        {
            var before = nodeMask.clone();
            edgeMask = edgeMask.logical_and(nodeMask.unsqueeze(1)).logical_and(nodeMask.unsqueeze(0));
            var hasOut = edgeMask.any(0); var hasIn = edgeMask.any(1);
            nodeMask = nodeMask.logical_and(featureOrError.logical_not().logical_or(hasOut));
            nodeMask = nodeMask.logical_and(feature.logical_not().logical_or(hasIn));
            if (nodeMask.eq(before).all().item<bool>()) break;
        }
        edgeMask = edgeMask.logical_and(nodeMask.unsqueeze(1)).logical_and(nodeMask.unsqueeze(0));

        var values = influence.cpu().data<double>().ToArray();
        var order = Enumerable.Range(0, n).OrderByDescending(i => values[i]).ToArray();
        double total = values.Sum(), running = 0;
        var cumulative = new double[n];
        foreach (int i in order) { running += values[i]; cumulative[i] = running / total; }
        return new PrunedGraph(nodeMask.cpu().data<bool>().ToArray(), edgeMask.MoveToOuterDisposeScope(), values, cumulative);
    }

    /// <summary>
    /// The replacement and completeness scores of the unpruned graph; pass its <see cref="PrunedGraph"/> to reuse the
    /// influence already computed there.
    /// </summary>
    public static GraphScores Scores(AttributionGraph graph, PrunedGraph? pruned = null)
    {
        using var scope = NewDisposeScope();
        var weights = LogitWeights(graph);
        var normalized = Normalize(graph.Adjacency);
        var influence = pruned is null ? Influence(normalized, weights) : tensor(pruned.Influence, ScalarType.Float64);
        var token = tensor(graph.Nodes.Select(x => x.Kind == NodeKind.Token).ToArray()).to(ScalarType.Float64);
        var error = tensor(graph.Nodes.Select(x => x.Kind == NodeKind.Error).ToArray()).to(ScalarType.Float64);
        double tokens = (influence * token).sum().item<double>(), errors = (influence * error).sum().item<double>();
        var fromErrors = (normalized * error.unsqueeze(0)).sum(1);
        var scored = influence + weights;
        double completeness = ((1 - fromErrors) * scored).sum().item<double>() / scored.sum().item<double>();
        return new GraphScores(tokens / (tokens + errors), completeness);
    }

    static Tensor LogitWeights(AttributionGraph graph) =>
        tensor(graph.Nodes.Select(x => x.Kind == NodeKind.Logit ? x.Probability ?? 0 : 0).ToArray(), ScalarType.Float64);
}
