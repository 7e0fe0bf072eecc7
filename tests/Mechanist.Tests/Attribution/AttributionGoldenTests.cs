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

    [Theory]
    [MemberData(nameof(Cases))]
    public void NodesAndEveryEdgeMatchTheReference(string name)
    {
        string dir = SharedData.PathOf("golden", "attribution", name);
        string modelName = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "case.json"))).RootElement.GetProperty("model").GetString()!;
        using var model = HookedTransformer.Load(SharedData.PathOf("golden", "models", modelName));
        using var bundle = CircuitTracerFormat.Load(Path.Combine(dir, "transcoders"));
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var scope = NewDisposeScope();
        using var rm = ReplacementModel.Build(model, bundle.Dictionary, bundle.Input, reference.Read("input_ids").unsqueeze(0));
        TensorAssert.Close(reference.Read("activations"), rm.Activations, 1e-5 * 6, $"{name}: activations");
        TensorAssert.Close(reference.Read("error_vectors"), rm.Errors, 1e-5 * 40, $"{name}: error vectors");
        using var graph = Attributor.Attribute(rm, new AttributionOptions(BatchSize: 16));
        // The node list: kinds, layers, positions, indices, in the reference's order.
        var kind = reference.Read("node_kind").data<long>().ToArray();
        var layer = reference.Read("node_layer").data<long>().ToArray();
        var pos = reference.Read("node_pos").data<long>().ToArray();
        var index = reference.Read("node_index").data<long>().ToArray();
        Assert.Equal(kind.Length, graph.Nodes.Length);
        for (int i = 0; i < kind.Length; i++)
        {
            var nd = graph.Nodes[i];
            Assert.True((long)nd.Kind == kind[i] && nd.Layer == layer[i] && nd.Position == pos[i] && nd.Index == index[i],
                $"{name}: node {i} is {nd} but the reference has kind {kind[i]}, layer {layer[i]}, pos {pos[i]}, index {index[i]}");
        }
        var expected = reference.Read("adjacency");
        double max = expected.abs().max().item<float>();
        TensorAssert.Close(expected, graph.Adjacency, 1e-5 * max, $"{name}: adjacency");
        // Structural zeros are exact.
        var zero = expected == 0;
        Assert.Equal(0f, graph.Adjacency.masked_select(zero).abs().max().item<float>());
    }
}
