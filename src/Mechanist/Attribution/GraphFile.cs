using System.Globalization;
using System.Text;
using System.Text.Json;
using Mechanist.IO;
using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>
/// circuit-tracer's frontend graph JSON (<c>metadata</c>, <c>qParams</c>, <c>nodes</c>, <c>links</c>, in pydantic's field
/// order), so existing frontends read our graphs. Node ids: features "{layer}_{feature}_{pos}", errors "{layer}_-1_{pos}",
/// tokens "E_{id}_{pos}", logits "{L+1}_{id}_{pos}". Without a pruning, every nonzero edge is a link; with one, the kept
/// nodes and edges. A node is written when a written link touches it; tokens and logits always are.
/// </summary>
public static class GraphFile
{
    /// <summary>
    /// circuit-tracer's node <c>feature_type</c> names: the only ones we write, and those its files use (any other type reads as a feature).
    /// The workbench's graph view compares against these names.
    /// </summary>
    public static readonly NameTable<NodeKind> FeatureTypes = new("graph node type",
        new[] { (NodeKind.Feature, "cross layer transcoder"), (NodeKind.Error, "mlp reconstruction error"), (NodeKind.Token, "embedding"), (NodeKind.Logit, "logit") });

    /// <summary>Writes the graph atomically. <paramref name="tokenText"/> names tokens (default "&lt;id&gt;", as for models without a tokenizer).</summary>
    public static void Write(string path, AttributionGraph graph, PrunedGraph influence, bool pruned, double nodeThreshold = 0.8,
        string slug = "mechanist", string scan = "mechanist", Func<long, string>? tokenText = null, string? promptText = null, int? maxFeatureNodes = null,
        GraphQk? qk = null)
    {
        var text = Serialize(graph, influence, pruned, nodeThreshold, slug, scan, tokenText, promptText, maxFeatureNodes, qk);
        AtomicFile.WriteText(path, text);
    }

    /// <summary>
    /// Adds the graph file's metadata to <c>graph-metadata.json</c> in its folder (<c>{"graphs": [...]}</c>, one entry per
    /// slug, a new graph replacing an old one of the same slug), the index circuit-tracer's frontend lists graphs from.
    /// </summary>
    public static void UpdateIndex(string graphPath) => UpdateIndex(new[] { graphPath });

    /// <summary>Adds several graph files of one folder to its <c>graph-metadata.json</c> in one write (in the given order).</summary>
    public static void UpdateIndex(IReadOnlyList<string> graphPaths)
    {
        if (graphPaths.Count == 0) return;
        string index = IndexPath(graphPaths[0]);
        var added = graphPaths.Select(ReadMetadata).ToList();
        var slugs = added.Select(m => (string?)m["slug"]).ToHashSet();
        var graphs = new System.Text.Json.Nodes.JsonArray();
        foreach (var g in ReadIndex(index))
            if (!slugs.Contains((string?)g["slug"])) graphs.Add(g.DeepClone());
        foreach (var m in added) graphs.Add(m);
        var root = new System.Text.Json.Nodes.JsonObject { ["graphs"] = graphs };
        AtomicFile.WriteText(index, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    /// <summary>A graph file's "metadata" object, read without building the nodes and links.</summary>
    static System.Text.Json.Nodes.JsonObject ReadMetadata(string graphPath)
    {
        byte[] bytes = File.ReadAllBytes(graphPath);
        try
        {
            var reader = new Utf8JsonReader(bytes);
            if (reader.Read() && reader.TokenType == JsonTokenType.StartObject)
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    bool isMetadata = reader.ValueTextEquals("metadata");
                    reader.Read();
                    long start = reader.TokenStartIndex;
                    reader.Skip();
                    if (!isMetadata) continue;
                    if (System.Text.Json.Nodes.JsonNode.Parse(bytes.AsSpan((int)start, (int)(reader.BytesConsumed - start))) is System.Text.Json.Nodes.JsonObject m && m["slug"] is not null)
                        return m;
                    break;
                }
        }
        catch (JsonException e) { throw new MechanistException($"{graphPath}: not JSON ({e.Message})"); }
        throw new MechanistException($"{graphPath}: no metadata.slug");
    }

    /// <summary>Throws the error <see cref="UpdateIndex(string)"/> would give for the index beside <paramref name="graphPath"/> (check it before the work).</summary>
    public static void CheckIndex(string graphPath) => ReadIndex(IndexPath(graphPath));

    static string IndexPath(string graphPath) => Path.Combine(Path.GetDirectoryName(Path.GetFullPath(graphPath))!, "graph-metadata.json");

    static List<System.Text.Json.Nodes.JsonNode> ReadIndex(string index)
    {
        if (!File.Exists(index)) return new();
        System.Text.Json.Nodes.JsonNode? existing;
        try { existing = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(index)); }
        catch (JsonException e) { throw new MechanistException($"{index}: not JSON ({e.Message}); move it away or fix it"); }
        if (existing?["graphs"] is not System.Text.Json.Nodes.JsonArray old || old.Any(g => g is not System.Text.Json.Nodes.JsonObject))
            throw new MechanistException($"{index}: no \"graphs\" list of objects; move it away or fix it");
        return old.Select(g => g!).ToList();
    }

    /// <summary>The edges a graph file writes (nonzero, and kept when pruned), row-major: (target node, source node, weight, stored index).</summary>
    public static List<(int Target, int Source, float Weight, long Stored)> WrittenEdges(AttributionGraph graph, PrunedGraph influence, bool pruned)
    {
        var a = graph.Edges;
        var list = new List<(int, int, float, long)>();
        for (int r = 0; r < graph.Nodes.Length; r++)
            for (long e = a.RowStart[r]; e < a.RowStart[r + 1]; e++)
                if (a.Value[e] != 0 && (!pruned || influence.EdgeKept[e])) list.Add((r, a.Column[e], a.Value[e], e));
        return list;
    }

    /// <summary>
    /// The JSON text; <paramref name="maxFeatureNodes"/>, when the trace had a feature budget, is written as metadata.max_feature_nodes;
    /// <paramref name="qk"/>, when given, adds each link's head loadings and the graph's QK attributions (fields circuit-tracer's frontend ignores).
    /// </summary>
    public static string Serialize(AttributionGraph graph, PrunedGraph influence, bool pruned, double nodeThreshold = 0.8,
        string slug = "mechanist", string scan = "mechanist", Func<long, string>? tokenText = null, string? promptText = null, int? maxFeatureNodes = null,
        GraphQk? qk = null)
    {
        int n = graph.Nodes.Length;
        tokenText ??= id => $"<{id}>";
        var labels = graph.TokenIds.Select(tokenText).ToArray();
        var written = WrittenEdges(graph, influence, pruned);
        var touched = new bool[n];
        foreach (var e in written) { touched[e.Target] = true; touched[e.Source] = true; }

        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteStartObject("metadata");
            w.WriteString("slug", slug); w.WriteString("scan", scan);
            w.WriteStartArray("transcoder_list"); w.WriteEndArray();
            w.WriteStartArray("prompt_tokens"); foreach (var t in labels) w.WriteStringValue(t); w.WriteEndArray();
            // The ids themselves (circuit-tracer's frontend ignores the field): interventions and re-traces use them,
            // never a re-tokenisation of display text.
            w.WriteStartArray("prompt_token_ids"); foreach (var id in graph.TokenIds) w.WriteNumberValue(id); w.WriteEndArray();
            // The prompt as given, when known (a word-level vocabulary's tokens do not concatenate back into it).
            w.WriteString("prompt", promptText ?? string.Concat(labels));
            if (pruned) w.WriteNumber("node_threshold", nodeThreshold); else w.WriteNull("node_threshold");
            // Ours (circuit-tracer's frontend ignores it): the feature-node budget the trace visited, so a reader knows why two
            // traces of one prompt differ.
            if (maxFeatureNodes is { } budget) w.WriteNumber("max_feature_nodes", budget);
            w.WriteNumber("schema_version", 1);
            w.WriteEndObject();
            w.WriteStartObject("qParams");
            w.WriteStartArray("pinnedIds"); w.WriteEndArray(); w.WriteStartArray("supernodes"); w.WriteEndArray();
            w.WriteString("linkType", "both"); w.WriteString("clickedId", ""); w.WriteString("sg_pos", "");
            w.WriteEndObject();
            w.WriteStartArray("nodes");
            bool firstLogit = true;
            for (int i = 0; i < n; i++)
            {
                var node = graph.Nodes[i];
                bool always = node.Kind is NodeKind.Token or NodeKind.Logit;
                if (!always && !touched[i]) { continue; }
                if (pruned && !influence.NodeMask[i] && !always) continue;
                w.WriteStartObject();
                w.WriteString("node_id", node.Id);
                long feature = node.Kind switch
                {
                    NodeKind.Feature => (node.Layer + node.Index) * (node.Layer + node.Index + 1) / 2 + node.Index,
                    NodeKind.Error => -1,
                    NodeKind.Token => node.Position,
                    _ => node.Index,
                };
                w.WriteNumber("feature", feature);
                w.WriteString("layer", node.Kind == NodeKind.Token ? "E" : node.Layer.ToString(CultureInfo.InvariantCulture));
                w.WriteNumber("ctx_idx", node.Position);
                w.WriteString("feature_type", FeatureTypes.Name(node.Kind));
                WriteFloat(w, "token_prob", node.Kind == NodeKind.Logit ? (float)(node.Probability ?? 0) : 0f);
                w.WriteBoolean("is_target_logit", node.Kind == NodeKind.Logit && firstLogit);
                if (node.Kind == NodeKind.Logit) firstLogit = false;
                w.WriteNumber("run_idx", 0); w.WriteNumber("reverse_ctx_idx", 0);
                w.WriteString("jsNodeId", node.Kind switch
                {
                    NodeKind.Feature => $"{node.Layer}_{node.Index}-0",
                    NodeKind.Error => $"{node.Layer}_-1-{node.Position}",
                    NodeKind.Token => $"E_{node.Index}-{node.Position}",
                    _ => $"L_{node.Index}-{node.Position}",
                });
                w.WriteString("clerp", node.Kind == NodeKind.Logit
                    ? $"Output \"{tokenText(node.Index)}\" (p={(node.Probability ?? 0).ToString("F3", CultureInfo.InvariantCulture)})" : "");
                if (node.Kind == NodeKind.Logit) w.WriteNull("influence"); else WriteFloat(w, "influence", (float)influence.CumulativeInfluence[i]);
                if (node.Kind == NodeKind.Feature) WriteFloat(w, "activation", (float)(node.Activation ?? 0)); else w.WriteNull("activation");
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("links");
            foreach (var e in written)
            {
                w.WriteStartObject();
                string source = graph.Nodes[e.Source].Id, target = graph.Nodes[e.Target].Id;
                w.WriteString("source", source);
                w.WriteString("target", target);
                WriteFloat(w, "weight", e.Weight);
                if (qk is not null && qk.Loadings.TryGetValue((target, source), out var loads))
                {
                    w.WriteStartArray("head_loadings");
                    foreach (var h in loads.Heads)
                    {
                        w.WriteStartObject();
                        w.WriteNumber("layer", h.Layer); w.WriteNumber("head", h.Head); w.WriteNumber("query", h.Query); WriteFloat(w, "value", (float)h.Value);
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                    WriteFloat(w, "head_loadings_rest", (float)loads.Rest);
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            if (qk is not null)
            {
                w.WriteStartArray("qk_attributions");
                foreach (var r in qk.Scores)
                {
                    w.WriteStartObject();
                    w.WriteNumber("layer", r.Layer); w.WriteNumber("head", r.Head); w.WriteNumber("query", r.Query); w.WriteNumber("key", r.Key);
                    WriteFloat(w, "score", (float)r.Score); WriteFloat(w, "softcapped", (float)r.Softcapped); WriteFloat(w, "sum", (float)r.Sum);
                    w.WriteStartArray("terms");
                    foreach (var t in r.Terms)
                    {
                        w.WriteStartObject();
                        w.WriteString("query", t.Query); w.WriteString("key", t.Key); WriteFloat(w, "value", (float)t.Value);
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                    w.WriteNumber("term_count", r.TermCount); WriteFloat(w, "rest", (float)r.Rest);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>The shortest decimal that round-trips the float32 value.</summary>
    static void WriteFloat(Utf8JsonWriter w, string name, float value)
    {
        w.WritePropertyName(name);
        w.WriteRawValue(float.IsFinite(value) ? value.ToString("R", CultureInfo.InvariantCulture).Replace("E", "e") : "null");
    }
}

/// <summary>A graph read back from circuit-tracer graph JSON (ours or circuit-tracer's).</summary>
/// <param name="Graph">Nodes in file order and the adjacency of the written links (edges not written are 0).</param>
/// <param name="Prompt">metadata.prompt.</param>
/// <param name="NodeThreshold">metadata.node_threshold (null for an unpruned graph).</param>
/// <param name="CumulativeInfluence">Each node's "influence" (null for logits).</param>
public sealed record GraphFileContents(AttributionGraph Graph, string Prompt, double? NodeThreshold, double?[] CumulativeInfluence);

/// <summary>Reads circuit-tracer's graph JSON.</summary>
public static class GraphFileReader
{
    /// <summary>Reads <paramref name="path"/>; a clear error for anything that is not a graph file.</summary>
    public static GraphFileContents Read(string path)
    {
        if (!File.Exists(path)) throw new MechanistException($"{path}: graph file not found");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new MechanistException($"{path}: not JSON ({e.Message})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("nodes", out var nodesJson) || !root.TryGetProperty("links", out var linksJson))
                throw new MechanistException($"{path}: not a graph file (it needs \"nodes\" and \"links\")");
            var nodes = new List<GraphNode>(); var influence = new List<double?>();
            var index = new Dictionary<string, int>(StringComparer.Ordinal);
            var tokenIds = new SortedDictionary<int, long>();
            foreach (var n in nodesJson.EnumerateArray())
            {
                try
                {
                    string id = n.GetProperty("node_id").GetString()!;
                    string type = n.GetProperty("feature_type").GetString()!;
                    int pos = n.GetProperty("ctx_idx").GetInt32();
                    var parts = id.Split('_');
                    GraphNode node = (GraphFile.FeatureTypes.TryParse(type, out var kind) ? kind : NodeKind.Feature) switch
                    {
                        NodeKind.Token => new GraphNode(NodeKind.Token, -1, pos, long.Parse(parts[1], CultureInfo.InvariantCulture)),
                        NodeKind.Logit => new GraphNode(NodeKind.Logit, int.Parse(parts[0], CultureInfo.InvariantCulture), pos, long.Parse(parts[1], CultureInfo.InvariantCulture),
                            Probability: n.GetProperty("token_prob").GetDouble()),
                        NodeKind.Error => new GraphNode(NodeKind.Error, int.Parse(parts[0], CultureInfo.InvariantCulture), pos, -1),
                        _ => new GraphNode(NodeKind.Feature, int.Parse(parts[0], CultureInfo.InvariantCulture), pos, long.Parse(parts[1], CultureInfo.InvariantCulture),
                            n.TryGetProperty("activation", out var a) && a.ValueKind == JsonValueKind.Number ? a.GetDouble() : null),
                    };
                    if (node.Kind == NodeKind.Token) tokenIds[pos] = node.Index;
                    index[id] = nodes.Count;
                    nodes.Add(node);
                    influence.Add(n.TryGetProperty("influence", out var inf) && inf.ValueKind == JsonValueKind.Number ? inf.GetDouble() : null);
                }
                catch (Exception e) when (e is KeyNotFoundException or FormatException or InvalidOperationException or IndexOutOfRangeException or OverflowException)
                {
                    throw new MechanistException($"{path}: node {nodes.Count} is malformed ({e.Message})");
                }
            }
            var rows = new List<int>(); var cols = new List<int>(); var values = new List<float>();
            foreach (var l in linksJson.EnumerateArray())
            {
                string? s = l.TryGetProperty("source", out var sj) ? sj.GetString() : null, t = l.TryGetProperty("target", out var tj) ? tj.GetString() : null;
                if (s is null || t is null || !index.TryGetValue(s, out int si) || !index.TryGetValue(t, out int ti) || !l.TryGetProperty("weight", out var w) || w.ValueKind != JsonValueKind.Number)
                    throw new MechanistException($"{path}: link {rows.Count} names a node that is not in the file or has no weight");
                rows.Add(ti); cols.Add(si); values.Add(w.GetSingle());
            }
            // A link given twice keeps its last weight.
            var last = new Dictionary<(int, int), float>();
            for (int i = 0; i < rows.Count; i++) last[(rows[i], cols[i])] = values[i];
            var sorted = last.OrderBy(x => x.Key.Item1).ThenBy(x => x.Key.Item2).Where(x => x.Value != 0).ToList();
            var rowStart = new long[nodes.Count + 1];
            foreach (var x in sorted) rowStart[x.Key.Item1 + 1]++;
            for (int r = 0; r < nodes.Count; r++) rowStart[r + 1] += rowStart[r];
            var adjacency = new SparseAdjacency(nodes.Count, rowStart, sorted.Select(x => x.Key.Item2).ToArray(), sorted.Select(x => x.Value).ToArray());
            var meta = root.TryGetProperty("metadata", out var m) ? m : default;
            string prompt = meta.ValueKind == JsonValueKind.Object && meta.TryGetProperty("prompt", out var p) ? p.GetString() ?? "" : "";
            double? threshold = meta.ValueKind == JsonValueKind.Object && meta.TryGetProperty("node_threshold", out var th) && th.ValueKind == JsonValueKind.Number ? th.GetDouble() : null;
            return new GraphFileContents(new AttributionGraph(tokenIds.Values.ToArray(), nodes.ToArray(), adjacency), prompt, threshold, influence.ToArray());
        }
    }
}
