using System.Text.Json;
using Mechanist.Attribution;
using Mechanist.IO;
using Mechanist.Toy;
using static TorchSharp.torch;

namespace Mechanist.Tests.Attribution;

/// <summary>The swap helper and the strongest-path search, on hand-made and golden graphs.</summary>
public class SwapAndPathTests
{
    [Fact]
    public void StrongestPathMaximisesTheProductOfNormalisedWeights()
    {
        var nodes = new[]
        {
            new GraphNode(NodeKind.Feature, 0, 1, 5, 1.0), new GraphNode(NodeKind.Feature, 1, 1, 7, 1.0),
            new GraphNode(NodeKind.Token, -1, 0, 10), new GraphNode(NodeKind.Token, -1, 1, 11), new GraphNode(NodeKind.Logit, 2, 1, 3, Probability: 1),
        };
        var a = zeros(5, 5);
        a[0, 3] = 2f; a[0, 2] = -2f;     // feature 0 ← tokens: 0.5 each
        a[1, 0] = 1f; a[1, 2] = 3f;      // feature 1 ← feature 0 (0.25), token 0 (0.75)
        a[4, 1] = 1f; a[4, 0] = 1f;      // logit ← both features (0.5 each)
        var graph = new AttributionGraph(new long[] { 10, 11 }, nodes, a);
        var all = new PrunedGraph(Enumerable.Repeat(true, 5).ToArray(), Enumerable.Repeat(true, (int)graph.Edges.Count).ToArray(), new double[5], new double[5]);
        // token 0 → feature 1 → logit: 0.75 · 0.5 = 0.375 beats token → feature 0 → logit (0.25) and the three-step path (0.0625).
        var (path, source) = TwoHopCircuit.StrongestPath(graph, all);
        Assert.Equal(new[] { 1 }, path);
        Assert.Equal(0, source);
        // Without the edge token 0 → feature 1, the best is a token → feature 0 → logit (0.25) over 0.5 · 0.25 · 0.5.
        var kept = Enumerable.Repeat(true, (int)graph.Edges.Count).ToArray();
        for (long e = graph.Edges.RowStart[1]; e < graph.Edges.RowStart[2]; e++) if (graph.Edges.Column[e] == 2) kept[e] = false;
        (path, _) = TwoHopCircuit.StrongestPath(graph, all with { EdgeKept = kept });
        Assert.Equal(new[] { 0 }, path);
    }

    [Fact]
    public void SwapZeroesTheTargetsFeaturesAndPutsInTheDonors()
    {
        using var c = new AttributionGoldenTests.Case("llama_clt_jumprelu");
        var (reference, rm) = (c.Reference, c.Rm);
        using var scope = NewDisposeScope();
        var acts = reference.Read("activations").to(ScalarType.Float32);           // the reference's [L, T, F]
        int L = (int)acts.shape[0], F = (int)acts.shape[2];
        var swap = Interventions.Swap(rm, 2, rm, 3, new[] { 0, 1 });
        var expected = new Dictionary<(int, long), double>();
        for (int l = 0; l < 2; l++)
            for (int f = 0; f < F; f++)
            {
                float at2 = acts[l, 2, f].item<float>(), at3 = acts[l, 3, f].item<float>();
                if (at3 != 0) expected[(l, f)] = at3; else if (at2 != 0) expected[(l, f)] = 0;
            }
        Assert.Equal(expected.Count, swap.Count);
        foreach (var iv in swap)
        {
            Assert.Equal(2, iv.Position);
            Assert.Equal(expected[(iv.Layer, iv.Feature)], iv.Value, 4);
        }
        // Swapping a position's features for its own leaves the output as it was.
        using var same = Interventions.Run(rm, Interventions.Swap(rm, 3, rm, 3), InterventionMode.Free);
        TensorAssert.Close(rm.Logits, same.Logits, 1e-4, "self-swap");
        Assert.Throws<Mechanist.MechanistException>(() => Interventions.Swap(rm, 0, rm, 3));
    }
}

/// <summary>intervene's --set forms: every position, supernodes and scaling.</summary>
public class InterveneSetFormsTests
{
    [Fact]
    public void StarCommaAndScaleExpandAgainstTheReferenceActivations()
    {
        string golden = SharedData.PathOf("golden", "attribution", "llama_clt_jumprelu");
        using var reference = SafetensorsFile.Open(Path.Combine(golden, "reference.safetensors"));
        using var scope = NewDisposeScope();
        var ids = reference.Read("input_ids").data<long>().ToArray();
        var acts = reference.Read("activations").to(ScalarType.Float32);
        var active = Enumerable.Range(0, (int)acts.shape[2]).Where(f => acts[0, 2, f].item<float>() != 0).Take(2).ToArray();
        Assert.Equal(2, active.Length);
        var (code, stdout, err) = Mechanist.Tests.Cli.CliRunner.Run("intervene", "-m", SharedData.PathOf("golden", "models", "llama"), "--transcoders", Path.Combine(golden, "transcoders"),
            "--tokens", string.Join(",", ids), "--json", "--set", $"0:2:{active[0]},{active[1]}=x2", "--set", "1:*:5=0");
        Assert.True(code == 0, err);
        var set = JsonDocument.Parse(stdout).RootElement.GetProperty("interventions").EnumerateArray().ToList();
        Assert.Equal(2 + (ids.Length - 1), set.Count);
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(active[i], set[i].GetProperty("feature").GetInt64());
            Assert.Equal(2 * acts[0, 2, active[i]].item<float>(), set[i].GetProperty("value").GetDouble(), 4);
        }
        Assert.Equal(Enumerable.Range(1, ids.Length - 1), set.Skip(2).Select(x => x.GetProperty("position").GetInt32()));
        Assert.All(set.Skip(2), x => Assert.Equal(0, x.GetProperty("value").GetDouble()));
        (code, _, err) = Mechanist.Tests.Cli.CliRunner.Run("intervene", "-m", SharedData.PathOf("golden", "models", "llama"), "--transcoders", Path.Combine(golden, "transcoders"),
            "--tokens", string.Join(",", ids), "--set", "0:two:5=1");
        Assert.Equal(2, code);
        Assert.Contains("LAYER:POSITION:FEATURE=VALUE", err);
    }
}

/// <summary>Generation with interventions.</summary>
public class InterventionGenerationTests
{
    [Fact]
    public void WithoutInterventionsItIsTheModelsGreedyGenerationAndASwapChangesTheAnswer()
    {
        string modelDir = Path.Combine(SharedData.RepoRoot, "models", "toy-4l");
        using var model = Mechanist.Models.HookedTransformer.Load(modelDir);
        using var bundle = Mechanist.Dictionaries.Formats.CircuitTracerFormat.Load(Path.Combine(modelDir, "clt"));
        using var scope = NewDisposeScope();
        using var rm = ReplacementModel.Build(model, bundle.Dictionary, bundle.Input, model.ToTokens("The capital of the state containing Dallas is"));
        // The KV-cache generator is an independent path to the same greedy tokens.
        var prompt = rm.Tokens[0].data<long>().ToArray();
        var reference = model.Generate(prompt, new Mechanist.Models.GenerateOptions { MaxNewTokens = 6, StopTokens = Array.Empty<int>() });
        Assert.Equal(reference.NewIds, Interventions.Generate(rm, Array.Empty<FeatureIntervention>(), 6));
        Assert.Equal("Austin", Mechanist.Analysis.TokenText.Of(model, Interventions.Generate(rm, Array.Empty<FeatureIntervention>(), 1)[0]));
        // Oregon's layer-0 features at "is" put in place of Texas's: the answer becomes Oregon's capital.
        using var donor = ReplacementModel.Build(model, bundle.Dictionary, bundle.Input, model.ToTokens("The capital of Oregon is"));
        var swap = Interventions.Swap(rm, prompt.Length - 1, donor, (int)donor.Tokens.shape[1] - 1, new[] { 0 });
        Assert.Equal("Salem", Mechanist.Analysis.TokenText.Of(model, Interventions.Generate(rm, swap, 1)[0]));
        // With the KV cache each step runs only the new token at its absolute position; rerunning the whole sequence per
        // token is an independent path to the same tokens, with interventions on prompt and generated positions alike.
        var everyNew = new[] { new FeatureIntervention(0, 0, 324, 40), new FeatureIntervention(0, 0, 776, 40), new FeatureIntervention(1, 0, 559, 40) };
        var cached = Interventions.Generate(rm, swap, 8, everyNew);
        var rerun = Interventions.Generate(rm, swap, 8, everyNew, useKvCache: false);
        Assert.Equal(rerun, cached);
        Assert.NotEqual(Interventions.Generate(rm, swap, 8), cached);

        // A splice holds no state between runs: the same one serves two KV-cache generations (and a plain run) alike.
        var splice = Interventions.Splice(rm, swap, InterventionMode.Free);
        var options = new Mechanist.Models.GenerateOptions { MaxNewTokens = 3, StopTokens = Array.Empty<int>(), Splices = new[] { splice } };
        var first = model.Generate(prompt, options).NewIds;
        var second = model.Generate(prompt, options).NewIds;
        Assert.Equal("Salem", Mechanist.Analysis.TokenText.Of(model, first[0]));
        Assert.Equal(first, second);
        Assert.Equal(Interventions.Generate(rm, swap, 3), first);
    }
}
