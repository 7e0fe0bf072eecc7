using Mechanist.Tensors;
using System.Text.Json;
using Mechanist.Attribution;
using Mechanist.Dictionaries.Formats;
using Mechanist.IO;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Attribution;

/// <summary>Attribution graphs against the independent reference graphs in ../shared/golden/attribution.</summary>
public class AttributionGoldenTests
{
    public static IEnumerable<object[]> Cases() =>
        new[] { "gpt2_plt_relu", "llama_plt_skip_jumprelu", "llama_clt_jumprelu", "llama_plt_normalized_skip_relu", "gpt2_clt_relu_mlpin" }.Select(c => new object[] { c });

    /// <summary>The reference's node list (kinds, layers, positions, indices; logit probabilities), in its order.</summary>
    static GraphNode[] ReferenceNodes(SafetensorsFile reference)
    {
        var kind = reference.Read("node_kind").data<long>().ToArray();
        var layer = reference.Read("node_layer").data<long>().ToArray();
        var pos = reference.Read("node_pos").data<long>().ToArray();
        var index = reference.Read("node_index").data<long>().ToArray();
        var probs = reference.Read("logit_probs").data<float>().ToArray();
        int firstLogit = Array.IndexOf(kind, 3L);
        return kind.Select((k, i) => new GraphNode((NodeKind)k, (int)layer[i], (int)pos[i], index[i], Probability: k == 3 ? probs[i - firstLogit] : null)).ToArray();
    }

    /// <summary>A golden case loaded: its model, transcoders, reference tensors and replacement model.</summary>
    internal sealed class Case : IDisposable
    {
        public Case(string name)
        {
            string dir = SharedData.PathOf("golden", "attribution", name);
            string modelName = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "case.json"))).RootElement.GetProperty("model").GetString()!;
            Model = HookedTransformer.Load(SharedData.PathOf("golden", "models", modelName));
            Bundle = CircuitTracerFormat.Load(Path.Combine(dir, "transcoders"));
            Reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
            using var ids = Reference.Read("input_ids");
            using var prompt = ids.unsqueeze(0);
            Rm = ReplacementModel.Build(Model, Bundle.Dictionary, Bundle.Input, prompt);
        }

        public HookedTransformer Model { get; }
        public TranscoderBundle Bundle { get; }
        public SafetensorsFile Reference { get; }
        public ReplacementModel Rm { get; }

        public void Dispose() { Rm.Dispose(); Reference.Dispose(); Bundle.Dispose(); Model.Dispose(); }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void NodesAndEveryEdgeMatchTheReference(string name)
    {
        using var c = new Case(name);
        var (reference, rm) = (c.Reference, c.Rm);
        using var scope = NewDisposeScope();
        TensorAssert.Close(reference.Read("activations"), rm.Activations, 1e-5 * 6, $"{name}: activations");
        TensorAssert.Close(reference.Read("error_vectors"), rm.Errors, 1e-5 * 40, $"{name}: error vectors");
        var graph = Attributor.Attribute(rm, new AttributionOptions(BatchSize: 16));
        // The node list: kinds, layers, positions, indices, in the reference's order.
        var expectedNodes = ReferenceNodes(reference);
        Assert.Equal(expectedNodes.Length, graph.Nodes.Length);
        for (int i = 0; i < expectedNodes.Length; i++)
        {
            var (nd, e) = (graph.Nodes[i], expectedNodes[i]);
            Assert.True(nd.Kind == e.Kind && nd.Layer == e.Layer && nd.Position == e.Position && nd.Index == e.Index, $"{name}: node {i} is {nd} but the reference has {e}");
        }
        var expected = reference.Read("adjacency");
        double max = expected.abs().max().item<float>();
        TensorAssert.Close(expected, graph.DenseAdjacency(), 1e-5 * max, $"{name}: adjacency");
        // Structural zeros are exact.
        var zero = expected.Eq(0);
        Assert.Equal(0f, graph.DenseAdjacency().masked_select(zero).abs().max().item<float>());
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void PruningInfluenceAndScoresMatchTheReference(string name)
    {
        string dir = SharedData.PathOf("golden", "attribution", name);
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var scope = NewDisposeScope();
        // The reference's own adjacency and node list, so this checks pruning alone.
        var nodes = ReferenceNodes(reference);
        var graph = new AttributionGraph(reference.Read("input_ids").data<long>().ToArray(), nodes, reference.Read("adjacency"));
        using var pruned = Pruning.Prune(graph);
        var influence = reference.Read("node_influence").to(ScalarType.Float64).data<double>().ToArray();
        var cumulative = reference.Read("cumulative_influence").to(ScalarType.Float64).data<double>().ToArray();
        for (int i = 0; i < nodes.Length; i++)
        {
            Assert.Equal(influence[i], pruned.Influence[i], Math.Max(1e-9, Math.Abs(influence[i]) * 1e-5));
            Assert.Equal(cumulative[i], pruned.CumulativeInfluence[i], 1e-5);
        }
        Assert.Equal(reference.Read("node_mask").data<byte>().Select(b => b != 0), pruned.NodeMask);
        var edgeMask = reference.Read("edge_mask").to(ScalarType.Bool);
        Assert.Equal(0L, edgeMask.logical_xor(pruned.DenseEdgeMask(graph.Edges)).sum().item<long>());
        var golden = reference.Read("graph_scores").data<float>().ToArray();
        foreach (var scores in new[] { Pruning.Scores(graph), Pruning.Scores(graph, pruned) })
        {
            Assert.Equal(golden[0], scores.Replacement, 1e-5);
            Assert.Equal(golden[1], scores.Completeness, 1e-5);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void TheOnePassInfluenceOverCollectedRowsMatchesTheReference(string name)
    {
        string dir = SharedData.PathOf("golden", "attribution", name);
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var scope = NewDisposeScope();
        var nodes = ReferenceNodes(reference);
        int n = nodes.Length;
        var dense = reference.Read("adjacency").data<float>().ToArray();
        var builder = new SparseAdjacency.Builder(n);
        for (int r = n - 1; r >= 0; r--) builder.SetRow(r, dense.AsSpan(r * n, n));
        var weights = nodes.Select(x => x.Kind == NodeKind.Logit ? x.Probability ?? 0 : 0).ToArray();
        // Logits, then features from the top layer down: the order an attribution's rows read each other in.
        var downward = Enumerable.Range(0, n).Where(i => nodes[i].Kind is NodeKind.Logit or NodeKind.Feature)
            .OrderByDescending(i => nodes[i].Kind == NodeKind.Logit ? int.MaxValue : nodes[i].Layer).ToArray();
        var influence = Pruning.Influence(builder, weights, downward)!;
        var expected = reference.Read("node_influence").to(ScalarType.Float64).data<double>().ToArray();
        for (int i = 0; i < n; i++) Assert.Equal(expected[i], influence[i], Math.Max(1e-9, Math.Abs(expected[i]) * 1e-5));
        // Part of the rows (as between an attribution's visit chunks): the path-length series over the same rows.
        int top = nodes.Where(x => x.Kind == NodeKind.Feature).Max(x => x.Layer);
        var partial = new SparseAdjacency.Builder(n);
        foreach (int r in downward.Where(i => nodes[i].Kind == NodeKind.Logit || nodes[i].Layer == top)) partial.SetRow(r, dense.AsSpan(r * n, n));
        var built = partial.Build();
        var series = Pruning.Influence(built, Pruning.Normalize(built), weights);
        var onePass = Pruning.Influence(partial, weights, downward)!;
        Assert.Contains(series, v => v > 0);
        for (int i = 0; i < n; i++) Assert.Equal(series[i], onePass[i], Math.Max(1e-12, Math.Abs(series[i]) * 1e-9));
        // An order in which a row comes after a node it reads is refused, not answered wrongly.
        Assert.Null(Pruning.Influence(builder, weights, downward.Reverse().ToArray()));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void GraphFilesMatchCircuitTracersJson(string name)
    {
        string dir = SharedData.PathOf("golden", "attribution", name);
        using var c = new Case(name);
        var rm = c.Rm;
        var graph = Attributor.Attribute(rm);
        using var pruned = Pruning.Prune(graph);
        double max = graph.DenseAdjacency().abs().max().item<float>();
        foreach (var (file, isPruned) in new[] { ("graph.json", false), ("graph_pruned.json", true) })
        {
            using var ours = JsonDocument.Parse(GraphFile.Serialize(graph, pruned, isPruned, slug: $"visible-{name}", scan: $"golden/{name}"));
            using var theirs = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, file)));
            // circuit-tracer's metadata fields byte for byte; ours adds prompt_token_ids (the ids behind prompt_tokens).
            var metadata = System.Text.Json.Nodes.JsonNode.Parse(ours.RootElement.GetProperty("metadata").GetRawText())!.AsObject();
            Assert.Equal(graph.TokenIds, metadata["prompt_token_ids"]!.AsArray().Select(x => (long)x!).ToArray());
            metadata.Remove("prompt_token_ids");
            Assert.Equal(theirs.RootElement.GetProperty("metadata").GetRawText(),
                metadata.ToJsonString(new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
            Assert.Equal(theirs.RootElement.GetProperty("qParams").GetRawText(), ours.RootElement.GetProperty("qParams").GetRawText());
            var a = ours.RootElement.GetProperty("nodes").EnumerateArray().ToList(); var b = theirs.RootElement.GetProperty("nodes").EnumerateArray().ToList();
            Assert.Equal(b.Select(x => x.GetProperty("node_id").GetString()), a.Select(x => x.GetProperty("node_id").GetString()));
            for (int i = 0; i < a.Count; i++)
                foreach (var field in b[i].EnumerateObject())
                {
                    var mine = a[i].GetProperty(field.Name);
                    if (field.Value.ValueKind == JsonValueKind.Number && mine.ValueKind == JsonValueKind.Number)
                        Assert.True(Math.Abs(field.Value.GetDouble() - mine.GetDouble()) <= 1e-5 * Math.Max(1, Math.Abs(field.Value.GetDouble())), $"{name}/{file} node {i} {field.Name}: {mine} vs {field.Value}");
                    else Assert.Equal(field.Value.GetRawText(), mine.GetRawText());
                }
            Assert.Equal(b[0].EnumerateObject().Select(f => f.Name), a[0].EnumerateObject().Select(f => f.Name)); // field order
            var la = ours.RootElement.GetProperty("links").EnumerateArray().ToList(); var lb = theirs.RootElement.GetProperty("links").EnumerateArray().ToList();
            Assert.Equal(lb.Select(l => (l.GetProperty("source").GetString(), l.GetProperty("target").GetString())), la.Select(l => (l.GetProperty("source").GetString(), l.GetProperty("target").GetString())));
            for (int i = 0; i < la.Count; i++) Assert.True(Math.Abs(la[i].GetProperty("weight").GetDouble() - lb[i].GetProperty("weight").GetDouble()) <= 1e-5 * max);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void InterventionsInAllThreeModesMatchTheReference(string name)
    {
        using var c = new Case(name);
        var (reference, rm) = (c.Reference, c.Rm);
        using var scope = NewDisposeScope();
        var features = reference.Read("intervention_features").data<long>().ToArray();
        var values = reference.Read("intervention_values");
        foreach (var (mode, key, acts) in new[] { (InterventionMode.Constrained, "constrained", "intervention_constrained_pre_activations"),
                     (InterventionMode.Free, "free", "intervention_free_activations"), (InterventionMode.Replacement, "replacement", "intervention_replacement_activations") })
        {
            var logits = reference.Read($"intervention_{key}_logits");
            var activations = reference.Read(acts);
            for (int i = 0; i < 2; i++)
                for (int v = 0; v < 2; v++)
                {
                    var iv = new FeatureIntervention((int)features[3 * i], (int)features[3 * i + 1], features[3 * i + 2], values[i, v].item<float>());
                    using var result = Interventions.Run(rm, new[] { iv }, mode);
                    TensorAssert.Close(logits[i, v], result.Logits[-1], 1e-4, $"{name} {key} feature {i} value {v}: last-position logits");
                    double scale = Math.Max(1, activations[i, v].abs().max().item<float>());
                    TensorAssert.Close(activations[i, v], result.Activations, 1e-5 * scale * 4, $"{name} {key} feature {i} value {v}: activations");
                }
        }
        // Self-consistency: a constrained change of the source by δ changes every target by A·δ/a.
        var graph = Attributor.Attribute(rm);
        int s0 = 0; var node = graph.Nodes[s0];
        using var zeroed = Interventions.Run(rm, new[] { new FeatureIntervention(node.Layer, node.Position, node.Index, 0) }, InterventionMode.Constrained);
        using var cleanRun = Interventions.Run(rm, new[] { new FeatureIntervention(node.Layer, node.Position, node.Index, node.Activation!.Value) }, InterventionMode.Constrained);
        for (int t = 0; t < graph.Nodes.Length; t++)
        {
            var target = graph.Nodes[t];
            if (target.Kind != NodeKind.Feature) continue;
            double change = zeroed.Activations[target.Layer, target.Position, target.Index].item<float>() - cleanRun.Activations[target.Layer, target.Position, target.Index].item<float>();
            Assert.Equal(-graph.Edges[(int)t, (int)s0], change, 4);
        }
    }

    [Fact]
    public void CustomTargetsGiveTheirLogitRowsAndDifferencesSubtract()
    {
        using var c = new Case("llama_clt_jumprelu");
        var (reference, rm) = (c.Reference, c.Rm);
        using var scope = NewDisposeScope();
        var logitIds = reference.Read("logit_ids").data<long>().ToArray();
        var expected = reference.Read("adjacency");
        int n = (int)expected.shape[0], firstLogit = n - logitIds.Length;
        double max = expected.abs().max().item<float>();
        var graph = Attributor.Attribute(rm, new AttributionOptions(Targets: new[] { new LogitTarget(logitIds[1]), new LogitTarget(logitIds[0], logitIds[1]) }));
        int m = graph.Nodes.Length;
        Assert.Equal(n - logitIds.Length + 2, m);
        // The first custom row is the reference's row of that logit; the difference row is row(a) − row(b), over the non-logit columns.
        var cols = ..(n - logitIds.Length);
        TensorAssert.Close(expected[firstLogit + 1, cols], graph.DenseAdjacency()[m - 2, cols], 1e-5 * max, "custom single-token target");
        TensorAssert.Close(expected[firstLogit, cols] - expected[firstLogit + 1, cols], graph.DenseAdjacency()[m - 1, cols], 2e-5 * max, "logit-difference target");
        Assert.Equal(1.0, graph.Nodes[^1].Probability);
        // Any direction: W_U[a] − W_U[b] given as a raw d_model vector gives the reference's difference row too.
        var wu = c.Model.Weights.WU.to(ScalarType.Float32);
        var direction = (wu[logitIds[0]] - wu[logitIds[1]]).data<float>().ToArray();
        var byDirection = Attributor.Attribute(rm, new AttributionOptions(Targets: new[] { new LogitTarget(logitIds[0], Direction: direction) }));
        TensorAssert.Close(expected[firstLogit, cols] - expected[firstLogit + 1, cols], byDirection.DenseAdjacency()[^1, cols], 2e-5 * max, "direction target");
        Assert.Throws<MechanistException>(() => Attributor.Attribute(rm, new AttributionOptions(Targets: new[] { new LogitTarget(logitIds[0], Direction: new float[3]) })));
        Assert.Throws<MechanistException>(() => Attributor.Attribute(rm, new AttributionOptions(Targets: new[] { new LogitTarget(100_000) })));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryModeWithNothingChangedReproducesTheModel(string name)
    {
        using var c = new Case(name);
        using var scope = NewDisposeScope();
        var node = c.Rm.Activations.nonzero()[0].data<long>().ToArray();
        var same = new FeatureIntervention((int)node[0], (int)node[1], node[2], c.Rm.Activations[node[0], node[1], node[2]].item<float>());
        var logits = c.Reference.Read("logits");
        foreach (var mode in new[] { InterventionMode.Constrained, InterventionMode.Free, InterventionMode.Replacement })
        {
            using var result = Interventions.Run(c.Rm, new[] { same }, mode);
            TensorAssert.Close(logits, result.Logits, 1e-4, $"{name}: {mode} replacement forward with its own value");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void AFeatureBudgetKeepsTheInfluentialFeaturesWithTheirExactEdges(string name)
    {
        using var c = new Case(name);
        using var scope = NewDisposeScope();
        var expected = c.Reference.Read("adjacency");
        double max = expected.abs().max().item<float>();
        var full = Attributor.Attribute(c.Rm);
        var limited = Attributor.Attribute(c.Rm, new AttributionOptions(BatchSize: 8, MaxFeatureNodes: 20));
        Assert.Equal(20, limited.Nodes.Count(x => x.Kind == NodeKind.Feature));
        Assert.Equal(full.Nodes.Length - full.Nodes.Count(x => x.Kind == NodeKind.Feature) + 20, limited.Nodes.Length);
        // Every edge among the kept nodes is the reference's edge between the same two nodes.
        var position = full.Nodes.Select((x, i) => (x, i)).ToDictionary(p => p.x.Id, p => (long)p.i);
        var map = tensor(limited.Nodes.Select(x => position[x.Id]).ToArray());
        TensorAssert.Close(expected.index_select(0, map).index_select(1, map), limited.DenseAdjacency(), 1e-5 * max, $"{name}: edges kept under a feature budget");
        // The most influential feature of the full graph is among the 20.
        using var pruned = Pruning.Prune(full);
        var best = Enumerable.Range(0, full.Nodes.Length).Where(i => full.Nodes[i].Kind == NodeKind.Feature).MaxBy(i => pruned.Influence[i]);
        Assert.Contains(limited.Nodes, x => x.Id == full.Nodes[best].Id);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void CircuitTracerGraphFilesReadBack(string name)
    {
        string dir = SharedData.PathOf("golden", "attribution", name);
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var scope = NewDisposeScope();
        var ids = ReferenceNodes(reference).Select(x => x.Id).ToList();
        var contents = GraphFileReader.Read(Path.Combine(dir, "graph.json"));
        Assert.Null(contents.NodeThreshold);
        Assert.Equal(reference.Read("input_ids").data<long>().ToArray(), contents.Graph.TokenIds);
        var map = tensor(contents.Graph.Nodes.Select(x => (long)ids.IndexOf(x.Id)).ToArray());
        Assert.DoesNotContain(-1L, map.data<long>().ToArray());
        // The unpruned file holds every nonzero edge: the adjacency comes back exactly (shortest round-trip decimals).
        TensorAssert.Close(reference.Read("adjacency").index_select(0, map).index_select(1, map), contents.Graph.DenseAdjacency(), 0, $"{name}: adjacency read back");
        var pruned = GraphFileReader.Read(Path.Combine(dir, "graph_pruned.json"));
        Assert.Equal(0.8, pruned.NodeThreshold);
        Assert.Equal(reference.Read("edge_mask").sum().item<long>(), pruned.Graph.Edges.Count);
        using var tmp = new TempDir();
        File.WriteAllText(tmp.File("bad.json"), "{\"nodes\": [], \"links\": [{\"source\": \"x\", \"target\": \"y\", \"weight\": 1}]}");
        Assert.Contains("names a node that is not in the file", Assert.Throws<MechanistException>(() => GraphFileReader.Read(tmp.File("bad.json"))).Message);
    }
}
