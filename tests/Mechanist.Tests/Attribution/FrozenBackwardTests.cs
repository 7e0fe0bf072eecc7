using Mechanist.Attribution;
using Mechanist.Dictionaries;
using Mechanist.Hooks;
using Mechanist.Models;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Tests.Attribution;

/// <summary>
/// The written-out backward of the frozen replacement model against autograd over the same frozen forward (what every graph used
/// before it, and still uses where hooks are in place): the same nodes and every edge, on the block layouts the golden graphs do not
/// cover — post-norms and Gemma's 1 + w RMSNorm, parallel residuals, grouped and multi-query attention, post-norm-only blocks, learned
/// and rotary positions — with a cross-layer transcoder and with per-layer skip transcoders reading each input.
/// </summary>
public class FrozenBackwardTests
{
    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var model in new[] { "gemma2", "gpt_neox", "falcon", "mistral", "olmo2", "phi", "qwen3", "gpt2" })
            foreach (var dictionary in new[] { "clt-resid", "skip-mlpin", "skip-normalized" }) data.Add(model, dictionary);
        return data;
    }

    static ICrossLayerDictionary Random(string kind, TransformerConfig c, Generator g)
    {
        int L = c.NLayers, d = c.DModel, f = 48;
        Tensor R(params long[] shape) => randn(shape, generator: g);
        if (kind == "clt-resid")
            return new CrossLayerTranscoder(
                Enumerable.Range(0, L).Select(_ => R(f, d).Div(Math.Sqrt(d))).ToArray(), Enumerable.Range(0, L).Select(_ => zeros(f)).ToArray(),
                Enumerable.Range(0, L).Select(l => R(f, L - l, d).Mul(0.05)).ToArray(), Enumerable.Range(0, L).Select(_ => zeros(d)).ToArray(),
                DictionaryActivation.TopK, topK: 6);
        return new TranscoderSet(Enumerable.Range(0, L).Select(_ => (ISparseDictionary)new Transcoder(R(f, d).Div(Math.Sqrt(d)), R(f).Mul(0.1),
            R(f, d).Mul(0.05), zeros(d), DictionaryActivation.ReLU, wSkip: R(d, d).Div(Math.Sqrt(d)))).ToList());
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryEdgeMatchesAutogradOverTheFrozenForward(string modelName, string dictionaryKind)
    {
        using var model = HookedTransformer.Load(SharedData.PathOf("golden", "models", modelName));
        using var scope = NewDisposeScope();
        using var g = new Generator(7);
        var c = model.Config;
        using var dictionary = Random(dictionaryKind, c, g);
        var input = dictionaryKind switch { "skip-mlpin" => TranscoderInput.MlpInput, "skip-normalized" => TranscoderInput.Normalized, _ => TranscoderInput.Resid };
        var tokens = randint(1, c.VocabSize, new long[] { 1, 11 }, generator: g);
        using var rm = ReplacementModel.Build(model, dictionary, input, tokens);
        Assert.NotNull(FrozenBackward.For(rm));
        // Batches of 5 rows mix layers and positions within a pass (and logits with features).
        var options = new AttributionOptions(BatchSize: 5);
        var written = Attributor.Attribute(rm, options);
        AttributionGraph viaAutograd;
        // A hook that changes nothing still puts the run on autograd (hooks in place change the frozen map in general).
        using (model.Hooks(new ForwardHookSpec(HookFilter.Named(model.HookPoints.Name(HookKind.ResidPre, 0)), (_, _) => null)))
        {
            Assert.Null(FrozenBackward.For(rm));
            viaAutograd = Attributor.Attribute(rm, options);
        }
        Assert.Equal(viaAutograd.Nodes.Select(n => n.Id), written.Nodes.Select(n => n.Id));
        var expected = viaAutograd.DenseAdjacency(); var actual = written.DenseAdjacency();
        double max = expected.abs().max().item<float>();
        Assert.True(max > 0);
        TensorAssert.Close(expected, actual, 2e-5 * max, $"{modelName} {dictionaryKind}: adjacency");
    }

    [Theory]
    [InlineData("gemma2")]      // post-attention norms (their scales folded into the mixing) and 1 + w RMSNorm
    [InlineData("gpt2")]        // LayerNorm: centring folded into W_V
    [InlineData("mistral")]     // grouped key-value heads
    public void HookZGradientsMatchAutogradOverTheFrozenForward(string modelName)
    {
        using var model = HookedTransformer.Load(SharedData.PathOf("golden", "models", modelName));
        using var scope = NewDisposeScope();
        using var g = new Generator(11);
        var c = model.Config;
        using var dictionary = Random("clt-resid", c, g);
        var tokens = randint(1, c.VocabSize, new long[] { 1, 9 }, generator: g);
        using var rm = ReplacementModel.Build(model, dictionary, TranscoderInput.Resid, tokens);
        using var written = new ZGradientCache(); using var viaAutograd = new ZGradientCache();
        var graph = Attributor.Attribute(rm, new AttributionOptions(BatchSize: 4, MaxFeatureNodes: 12, ZGradients: written));
        using (model.Hooks(new ForwardHookSpec(HookFilter.Named(model.HookPoints.Name(HookKind.ResidPre, 0)), (_, _) => null)))
            Attributor.Attribute(rm, new AttributionOptions(BatchSize: 4, MaxFeatureNodes: 12, ZGradients: viaAutograd));
        Assert.True(written.Count > 0 && written.Count == viaAutograd.Count);
        foreach (var node in graph.Nodes.Where(n => n.Kind is NodeKind.Feature or NodeKind.Logit))
        {
            Assert.True(written.TryGet(node, out var mine), node.Id);
            Assert.True(viaAutograd.TryGet(node, out var theirs), node.Id);
            for (int l = 0; l < c.NLayers; l++)
            {
                double max = theirs[l].abs().max().item<float>();
                TensorAssert.Close(theirs[l], mine[l], 2e-5 * Math.Max(max, 1e-6), $"{modelName} {node.Id} layer {l}: hook_z gradient");
            }
        }
    }
}
