using Mechanist.Attribution;
using Mechanist.Hooks;
using Mechanist.Models;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Tests.Attribution;

/// <summary>Head loadings: every cross-position edge split over the heads of its first hop, summing to the edge; the one-hop identity.</summary>
public class HeadLoadingsTests
{
    public static IEnumerable<object[]> Cases() => AttributionGoldenTests.Cases();

    /// <summary>The graph's nonzero edges between different positions, from the reference adjacency's node order.</summary>
    static List<(GraphNode Target, GraphNode Source, double Weight)> CrossPositionEdges(AttributionGraph graph) => Edges(graph, across: true);

    static List<(GraphNode Target, GraphNode Source, double Weight)> Edges(AttributionGraph graph, bool across)
    {
        var dense = graph.DenseAdjacency();
        var a = dense.data<float>().ToArray();
        int n = graph.Nodes.Length;
        var list = new List<(GraphNode, GraphNode, double)>();
        for (int t = 0; t < n; t++)
            for (int s = 0; s < n; s++)
                if (a[t * n + s] != 0 && (graph.Nodes[t].Position != graph.Nodes[s].Position) == across)
                    list.Add((graph.Nodes[t], graph.Nodes[s], a[t * n + s]));
        return list;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryCrossPositionEdgeIsTheSumOfItsHeadLoadings(string name)
    {
        using var c = new AttributionGoldenTests.Case(name);
        // The attribution keeps the hook_z gradients of about half its rows (a budget in bytes): those targets reuse its backward
        // passes, the others get their own; both must split every edge exactly.
        var cfg = c.Model.Config;
        long rowBytes = 4L * cfg.NLayers * c.Rm.Tokens.shape[1] * cfg.NHeads * cfg.DHead;
        int rowCount = (int)c.Rm.Activations.count_nonzero().item<long>();
        // Slabs of three full rows: the kept rows lie across many of them, as a research graph's do across 32-MB slabs.
        using var kept = new ZGradientCache(rowBytes * (rowCount / 2), slabBytes: 3 * rowBytes);
        var graph = Attributor.Attribute(c.Rm, new AttributionOptions(BatchSize: 16, ZGradients: kept));
        var edges = CrossPositionEdges(graph);
        Assert.True(edges.Count > 100, $"{name}: {edges.Count} cross-position edges");
        Assert.InRange(kept.Count, 1, edges.Select(e => e.Target).Distinct().Count() - 1);
        double max = edges.Max(e => Math.Abs(e.Weight));
        var loadings = HeadLoadings.Compute(c.Rm, edges, gradients: kept);
        Assert.Equal(edges.Count, loadings.Count);
        foreach (var e in loadings)
        {
            Assert.Equal(0, e.SamePosition);
            double sum = e.Heads.Sum(h => h.Value);
            Assert.True(Math.Abs(sum - e.Edge) <= 1e-5 * max, $"{name}: {e.Source} → {e.Target}: loadings sum to {sum}, the edge is {e.Edge}");
        }
        // Top 2 per edge: the rest keeps the sum.
        var top = HeadLoadings.Compute(c.Rm, edges.Take(20).ToList(), top: 2);
        Assert.All(top, e => { Assert.True(e.Heads.Length <= 2); Assert.Equal(e.Edge, e.Heads.Sum(h => h.Value) + e.Rest, 4); });
    }

    /// <summary>
    /// Rows kept in slabs read back as <see cref="ZGradientCache.Whole"/> builds them on their own: rows of different lengths in slabs
    /// of about half a full row (short rows share one, a row that does not fit starts the next, one larger than a slab gets its own),
    /// and a row replaced.
    /// </summary>
    [Fact]
    public void KeptRowsReadBackAsTheyWereWritten()
    {
        const int layers = 3, positions = 7, heads = 2, dHead = 5;
        long fullRow = 4L * layers * positions * heads * dHead;
        using var cache = new ZGradientCache(1L << 20, slabBytes: fullRow / 2 + 12);
        var nodes = Enumerable.Range(0, 9).Select(i => new GraphNode(NodeKind.Feature, 0, i % positions, i)).ToArray();
        var expected = new Dictionary<GraphNode, Tensor>();
        manual_seed(3);
        for (int i = 0; i < nodes.Length + 1; i++)
        {
            var node = nodes[i % nodes.Length];                              // the last one replaces the first
            int reach = i == 4 ? positions : 1 + (i * 3) % positions;
            var perLayer = Enumerable.Range(0, layers).Select(_ => randn(positions, heads, dHead)).ToArray();
            cache.Keep(node, perLayer, reach);
            if (expected.Remove(node, out var old)) old.Dispose();
            expected[node] = ZGradientCache.Whole(perLayer, reach);
            foreach (var t in perLayer) t.Dispose();
        }
        Assert.Equal(nodes.Length, cache.Count);
        foreach (var (node, whole) in expected)
        {
            Assert.True(cache.TryGet(node, out var kept));
            Assert.Equal(whole.shape, kept.shape);
            using (var eq = kept.equal(whole)) using (var same = eq.all()) Assert.True(same.item<bool>(), $"{node}: the kept row differs from the one written");
            whole.Dispose();
        }
    }

    [Fact]
    public void OverOneAttentionLayerAHeadsLoadingIsTheEdgeWithEveryOtherHeadZeroed()
    {
        // gpt2_plt_relu: per-layer transcoders reading hook_resid_mid. A layer-1 feature reaches a layer-2 feature at another
        // position only through layer 2's attention: zeroing every other head's pattern there leaves exactly that head's loading.
        using var c = new AttributionGoldenTests.Case("gpt2_plt_relu");
        var graph = Attributor.Attribute(c.Rm, new AttributionOptions(BatchSize: 16));
        var edges = CrossPositionEdges(graph).Where(e => e.Source.Kind == NodeKind.Feature && e.Source.Layer == 1 && e.Target.Kind == NodeKind.Feature && e.Target.Layer == 2)
            .OrderByDescending(e => Math.Abs(e.Weight)).Take(3).ToList();
        Assert.NotEmpty(edges);
        var loadings = HeadLoadings.Compute(c.Rm, edges);
        int heads = c.Model.Config.NHeads;
        string pattern = c.Model.HookPoints.Name(HookKind.Pattern, 2);
        for (int h = 0; h < heads; h++)
        {
            int keep = h;
            // Only head `keep`'s pattern at layer 2; the replacement model is otherwise the same (norm scales frozen at their clean values).
            using var _ = c.Model.Hooks(new ForwardHookSpec(HookFilter.Named(pattern), (x, ctx) =>
            {
                using var mask = zeros(1, heads, 1, 1, x.dtype, x.device);
                mask[.., keep] = SafeOps.Full(new long[] { 1 }, 1.0, x.dtype);
                return x.mul(mask);
            }));
            var zeroed = Attributor.Attribute(c.Rm, new AttributionOptions(BatchSize: 16));
            var index = zeroed.Nodes.Select((n, i) => (n.Id, i)).ToDictionary(x => x.Id, x => x.i);
            var dense = zeroed.DenseAdjacency();
            for (int k = 0; k < edges.Count; k++)
            {
                double alone = dense[index[edges[k].Target.Id], index[edges[k].Source.Id]].item<float>();
                double loading = loadings[k].Heads.Where(x => x.Layer == 2 && x.Head == keep).Sum(x => x.Value);
                Assert.All(loadings[k].Heads, x => Assert.NotEqual(edges[k].Source.Position, x.Query));
                Assert.True(Math.Abs(alone - loading) <= 1e-5 * Math.Max(1, Math.Abs(edges[k].Weight)), $"L2H{keep}: {edges[k].Source.Id} → {edges[k].Target.Id}: loading {loading}, edge with the other heads zeroed {alone}");
            }
        }
    }

    [Fact]
    public void WithinOnePositionAnEdgeSplitsOverTheDiagonalsOfTheHeadsThatCarriedIt()
    {
        // gpt2_plt_relu: a layer-1 feature reaches a layer-2 feature at its own position through the residual stream and through
        // the diagonal of layer 2's patterns. With every head of layer 2 zeroed only the no-attention share is left; with one head
        // kept, that share plus the head's loading.
        using var c = new AttributionGoldenTests.Case("gpt2_plt_relu");
        var graph = Attributor.Attribute(c.Rm, new AttributionOptions(BatchSize: 16));
        var edges = Edges(graph, across: false).Where(e => e.Source.Kind == NodeKind.Feature && e.Source.Layer == 1 && e.Target.Kind == NodeKind.Feature && e.Target.Layer == 2)
            .OrderByDescending(e => Math.Abs(e.Weight)).Take(4).ToList();
        Assert.NotEmpty(edges);
        var loadings = HeadLoadings.Compute(c.Rm, edges);
        int heads = c.Model.Config.NHeads;
        string pattern = c.Model.HookPoints.Name(HookKind.Pattern, 2);
        for (int k = 0; k < edges.Count; k++)
        {
            Assert.All(loadings[k].Heads, x => { Assert.Equal(2, x.Layer); Assert.Equal(edges[k].Source.Position, x.Query); });
            Assert.NotEmpty(loadings[k].Heads);
        }
        double EdgeWith(int? keep, int k)
        {
            using var _ = c.Model.Hooks(new ForwardHookSpec(HookFilter.Named(pattern), (x, ctx) =>
            {
                using var mask = zeros(1, heads, 1, 1, x.dtype, x.device);
                if (keep is int h) mask[.., h] = SafeOps.Full(new long[] { 1 }, 1.0, x.dtype);
                return x.mul(mask);
            }));
            var zeroed = Attributor.Attribute(c.Rm, new AttributionOptions(BatchSize: 16));
            var index = zeroed.Nodes.Select((n, i) => (n.Id, i)).ToDictionary(x => x.Id, x => x.i);
            return zeroed.DenseAdjacency()[index[edges[k].Target.Id], index[edges[k].Source.Id]].item<float>();
        }
        for (int k = 0; k < edges.Count; k++)
        {
            double tolerance = 1e-5 * Math.Max(1, Math.Abs(edges[k].Weight));
            double none = EdgeWith(null, k);
            Assert.True(Math.Abs(none - loadings[k].SamePosition) <= tolerance, $"{edges[k].Source.Id} → {edges[k].Target.Id}: no-attention share {loadings[k].SamePosition}, edge with layer 2 zeroed {none}");
            for (int h = 0; h < heads; h++)
            {
                double loading = loadings[k].Heads.Where(x => x.Head == h).Sum(x => x.Value);
                double alone = EdgeWith(h, k);
                Assert.True(Math.Abs(alone - none - loading) <= tolerance, $"L2H{h}: {edges[k].Source.Id} → {edges[k].Target.Id}: loading {loading}, edge with only this head {alone} minus {none}");
            }
        }
    }

    [Fact]
    public void OnAnAttentionOnlyModelTheInductionHeadsCarryTheInductionEdge()
    {
        // attn-only-2l on a repeated random sequence: 97 first at position 4 (followed by 210), again at 12. The model predicts 210;
        // its graph (no transcoders: tokens → logit through the frozen attention) is led by the edge from "210" at 5, and that edge
        // leaves position 5 through layer 1's induction heads, reading at the query 12.
        using var model = HookedTransformer.Load(Path.Combine(SharedData.RepoRoot, "models", "attn-only-2l"));
        using var tokens = tensor(new long[] { 1, 301, 122, 355, 97, 210, 388, 161, 74, 301, 122, 355, 97 }).unsqueeze(0);
        using var rm = ReplacementModel.AttentionOnly(model, tokens);
        var graph = Attributor.Attribute(rm, new AttributionOptions(Targets: new[] { new LogitTarget(210) }));
        Assert.DoesNotContain(graph.Nodes, n => n.Kind is NodeKind.Feature or NodeKind.Error);
        Assert.Equal(210, rm.Logits[12].argmax().item<long>());
        var edges = CrossPositionEdges(graph);
        var strongest = edges.OrderByDescending(e => Math.Abs(e.Weight)).First();
        Assert.Equal("E_210_5", strongest.Source.Id);
        var loadings = HeadLoadings.Compute(rm, edges);
        double max = edges.Max(e => Math.Abs(e.Weight));
        Assert.All(loadings, e => Assert.True(Math.Abs(e.Heads.Sum(h => h.Value) - e.Edge) <= 1e-5 * max, $"{e.Source}: {e.Heads.Sum(h => h.Value)} vs {e.Edge}"));
        var induction = loadings.Single(e => e.Source == "E_210_5");
        var lead = induction.Heads.MaxBy(h => Math.Abs(h.Value))!;
        Assert.Equal((1, 12), (lead.Layer, lead.Query));
        double layerOne = induction.Heads.Where(h => h.Layer == 1 && h.Query == 12).Sum(h => h.Value);
        Assert.True(layerOne >= 0.9 * induction.Edge, $"layer 1's heads carry {layerOne} of the induction edge {induction.Edge}");
    }
}
