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
    /// <summary>Writes the graph atomically. <paramref name="tokenText"/> names tokens (default "&lt;id&gt;", as for models without a tokenizer).</summary>
    public static void Write(string path, AttributionGraph graph, PrunedGraph influence, bool pruned, double nodeThreshold = 0.8,
        string slug = "mechanist", string scan = "mechanist", Func<long, string>? tokenText = null)
    {
        var text = Serialize(graph, influence, pruned, nodeThreshold, slug, scan, tokenText);
        AtomicFile.WriteText(path, text);
    }

    /// <summary>The JSON text.</summary>
    public static string Serialize(AttributionGraph graph, PrunedGraph influence, bool pruned, double nodeThreshold = 0.8,
        string slug = "mechanist", string scan = "mechanist", Func<long, string>? tokenText = null)
    {
        int n = graph.Nodes.Length;
        tokenText ??= id => $"<{id}>";
        var labels = graph.TokenIds.Select(tokenText).ToArray();
        using var scope = NewDisposeScope();
        var a = graph.Adjacency.to(ScalarType.Float32).cpu();
        var keep = pruned ? influence.EdgeMask.cpu() : a != 0;
        keep = keep.logical_and(a != 0);
        var links = keep.nonzero().data<long>().ToArray(); // row-major (target, source)
        var weights = a.masked_select(keep).data<float>().ToArray();
        var touched = new bool[n];
        for (int i = 0; i < links.Length; i += 2) { touched[links[i]] = true; touched[links[i + 1]] = true; }

        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteStartObject("metadata");
            w.WriteString("slug", slug); w.WriteString("scan", scan);
            w.WriteStartArray("transcoder_list"); w.WriteEndArray();
            w.WriteStartArray("prompt_tokens"); foreach (var t in labels) w.WriteStringValue(t); w.WriteEndArray();
            w.WriteString("prompt", string.Concat(labels));
            if (pruned) w.WriteNumber("node_threshold", nodeThreshold); else w.WriteNull("node_threshold");
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
                w.WriteString("feature_type", node.Kind switch
                {
                    NodeKind.Feature => "cross layer transcoder", NodeKind.Error => "mlp reconstruction error", NodeKind.Token => "embedding", _ => "logit",
                });
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
            for (int i = 0, e = 0; i < links.Length; i += 2, e++)
            {
                w.WriteStartObject();
                w.WriteString("source", graph.Nodes[links[i + 1]].Id);
                w.WriteString("target", graph.Nodes[links[i]].Id);
                WriteFloat(w, "weight", weights[e]);
                w.WriteEndObject();
            }
            w.WriteEndArray();
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
