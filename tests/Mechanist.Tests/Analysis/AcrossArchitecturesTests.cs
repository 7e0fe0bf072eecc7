using Mechanist.Tensors;
using Mechanist.Analysis;
using Mechanist.IO;
using Mechanist.Models;
using Mechanist.Tests.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Analysis;

/// <summary>
/// Direct logit attribution on every golden architecture: the components and the constant add up to the logit (difference) the model
/// itself outputs, or the attribution is refused with the reason it would not.
/// </summary>
public class DlaAcrossArchitecturesTests
{
    [Theory]
    [MemberData(nameof(GoldenModelTests.Architectures), MemberType = typeof(GoldenModelTests))]
    public void ComponentsSumToTheModelsLogitDifferenceOrAreRefused(string arch)
    {
        var (model, reference) = SharedData.Golden(arch);
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var tokens = reference.Read("input_ids")[..1];
        if (arch.StartsWith("gemma2"))
        {
            Assert.Contains("soft-capping", Assert.Throws<MechanistException>(() => DirectLogitAttribution.Compute(model, tokens, 5, 7)).Message);
            return;
        }
        foreach (int position in new[] { -1, 2 })
        {
            var r = DirectLogitAttribution.Compute(model, tokens, 5, 7, position);
            var logits = model.Run(tokens)[0, r.Position];
            double want = logits[5].item<float>() - logits[7].item<float>();
            Assert.Equal(want, r.Metric, 4);
            double sum = r.Components.Sum(c => c.Value) + r.Constant;
            Assert.True(Math.Abs(sum - want) < 1e-3 * Math.Max(1, Math.Abs(want)), $"{arch} at {r.Position}: components sum to {sum}, the model says {want}");
            // Each layer's heads (and its output bias) add up to its attention output, post-attention norms included.
            for (int l = 0; l < model.Config.NLayers; l++)
            {
                double heads = r.Heads.Where(h => h.Label.StartsWith($"L{l}H") || h.Label == $"L{l} b_O").Sum(h => h.Value);
                double attn = r.Components.Single(c => c.Label == $"{l}_attn_out").Value;
                Assert.True(Math.Abs(heads - attn) < 1e-3 * Math.Max(1, Math.Abs(attn)), $"{arch} layer {l}: heads sum to {heads}, attn_out gives {attn}");
            }
        }
        if (model.Config.Moe is not null)
        {
            Assert.Contains("mixture of experts", Assert.Throws<MechanistException>(() => DirectLogitAttribution.Compute(model, tokens, 5, 7, -1, 1)).Message);
            return;
        }
        // Every neuron: each layer's neurons (and its MLP output bias, taken through the same frozen norms) add up to its MLP output.
        var all = DirectLogitAttribution.Compute(model, tokens, 5, 7, -1, model.Config.NLayers * model.Config.DMlp);
        var cache = model.RunWithCache(tokens).Cache;
        using (cache)
            for (int l = 0; l < model.Config.NLayers; l++)
            {
                double neurons = all.Neurons!.Where(n => n.Label.StartsWith($"L{l}N")).Sum(n => n.Value);
                double bias = 0;
                if (model.Weights.Blocks[l].BOut is { } bOut)
                {
                    var b = cache.FreezePostNorm(bOut.expand(1, 1, tokens.shape[1], model.Config.DModel), l, mlp: true);
                    bias = cache.LogitAttrs(cache.ApplyLnToStack(b[.., .., ^1..], null, false, (int)tokens.shape[1] - 1)[.., .., 0], new long[] { 5 }, new long[] { 7 })[0, 0].item<float>();
                }
                double mlp = all.Components.Single(c => c.Label == $"{l}_mlp_out").Value;
                Assert.True(Math.Abs(neurons + bias - mlp) < 1e-3 * Math.Max(1, Math.Abs(mlp)), $"{arch} layer {l}: neurons sum to {neurons} + bias {bias}, mlp_out gives {mlp}");
            }
    }

    [Theory]
    [MemberData(nameof(WeightProcessingTests.Architectures), MemberType = typeof(WeightProcessingTests))]
    public void AfterWeightProcessingTheComponentsStillSumToTheLogitDifference(string arch)
    {
        if (arch.StartsWith("gemma2")) return; // soft-capped: refused above
        var (model, reference) = SharedData.Golden(arch);
        using var _m = model; using var _r = reference;
        WeightProcessing.Apply(model, new WeightProcessingOptions());
        using var scope = NewDisposeScope();
        var tokens = reference.Read("input_ids")[..1];
        var r = DirectLogitAttribution.Compute(model, tokens, 5, 7);
        // HF's logits: processing must not have changed the difference either.
        var hf = reference.Read("logits")[0, -1];
        double want = hf[5].item<float>() - hf[7].item<float>();
        double sum = r.Components.Sum(c => c.Value) + r.Constant;
        Assert.True(Math.Abs(sum - want) < 1e-3 * Math.Max(1, Math.Abs(want)), $"{arch} processed: components sum to {sum}, HF says {want}");
        for (int l = 0; l < model.Config.NLayers; l++)
        {
            double heads = r.Heads.Where(h => h.Label.StartsWith($"L{l}H") || h.Label == $"L{l} b_O").Sum(h => h.Value);
            double attn = r.Components.Single(c => c.Label == $"{l}_attn_out").Value;
            Assert.True(Math.Abs(heads - attn) < 1e-3 * Math.Max(1, Math.Abs(attn)), $"{arch} processed layer {l}: heads sum to {heads}, attn_out gives {attn}");
        }
    }

    [Fact]
    public void APostLnEncoderIsRefusedWithTheReason()
    {
        var (model, reference) = SharedData.Golden("bert");
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var e = Assert.Throws<MechanistException>(() => DirectLogitAttribution.Compute(model, reference.Read("input_ids")[..1], 5, 7));
        Assert.Contains("post-LN", e.Message);
    }
}

/// <summary>The logit lens on every golden architecture: its last layer decodes to the model's own output distribution.</summary>
public class LensAcrossArchitecturesTests
{
    [Theory]
    [MemberData(nameof(GoldenModelTests.Architectures), MemberType = typeof(GoldenModelTests))]
    public void TheLastLensLayerIsTheModelsOutput(string arch)
    {
        var (model, reference) = SharedData.Golden(arch);
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var tokens = reference.Read("input_ids")[..1];
        var lens = LogitLens.Run(model, tokens, target: 5, topK: 1);
        Assert.Equal(model.Config.NLayers + 1, lens.Layers.Length);
        var logProbs = reference.Read("logits")[0].log_softmax(-1); // HF's own logits
        var last = lens.Layers[^1];
        for (int p = 0; p < tokens.shape[1]; p++)
        {
            Assert.Equal(logProbs[p].argmax().item<long>(), last.Positions[p].Top[0].Id);
            Assert.True(Math.Abs(Math.Exp(logProbs[p, 5].item<float>()) - last.Positions[p].TargetProb!.Value) < 1e-4, $"{arch} position {p}");
        }
    }
}

/// <summary>Activation patching on every golden architecture, checked by its identities.</summary>
public class PatchingAcrossArchitecturesTests
{
    [Theory]
    [MemberData(nameof(GoldenModelTests.Architectures), MemberType = typeof(GoldenModelTests))]
    public void RestoringTheOneChangedEmbeddingRestoresTheCleanRun(string arch)
    {
        var (model, reference) = SharedData.Golden(arch);
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var clean = reference.Read("input_ids")[..1];
        int n = (int)clean.shape[1], changed = n - 3; // near the end: within reach of the last position even through sliding windows
        var corrupt = clean.clone();
        corrupt[0, changed] = (clean[0, changed].item<long>() + 1) % model.Config.VocabSize;
        var grid = ActivationPatching.Run(model, clean, corrupt, new PatchMetric.LogitDiff(5, 7), PatchTarget.Resid);
        // Layer 0's input differs at one position only: restoring it there gives the clean run (1), anywhere else changes nothing (0).
        for (int p = 0; p < n; p++) Assert.True(Math.Abs(grid.Scores[0][p] - (p == changed ? 1 : 0)) < 1e-4, $"{arch} layer 0 position {p}: {grid.Scores[0][p]}");
        // Causal: positions before the change never differ, at any layer.
        for (int l = 0; l < model.Config.NLayers; l++)
            for (int p = 0; p < changed; p++) Assert.True(Math.Abs(grid.Scores[l][p]) < 1e-4, $"{arch} layer {l} position {p}: {grid.Scores[l][p]}");
        if (arch == "mistral_swa")
        {
            // A change further back than three layers of a 4-token window can carry never reaches the last position.
            var early = clean.clone();
            early[0, 2] = (clean[0, 2].item<long>() + 1) % model.Config.VocabSize;
            Assert.Contains("give the same metric", Assert.Throws<MechanistException>(() => ActivationPatching.Run(model, clean, early, new PatchMetric.LogitDiff(5, 7), PatchTarget.Resid)).Message);
        }
    }
}

/// <summary>Generation with hooks in place on every golden architecture: the KV cache path gives what rerunning the whole prefix gives.</summary>
public class HookedGenerationAcrossArchitecturesTests
{
    [Theory]
    [MemberData(nameof(GoldenModelTests.Architectures), MemberType = typeof(GoldenModelTests))]
    public void CachedAndUncachedGenerationAgreeWithAHeadAblatedAndTheResidualSteered(string arch)
    {
        var (model, reference) = SharedData.Golden(arch);
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var prompt = reference.Read("input_ids")[0, ..6].data<long>().ToArray();
        var steer = model.Weights.WE[prompt[1]].to(ScalarType.Float32).clone();
        var hooks = new[]
        {
            new Mechanist.Hooks.ForwardHookSpec(Mechanist.Hooks.HookFilter.Named("blocks.1.attn.hook_z"), (z, _) => { var y = z.clone(); y[.., .., 0] = 0; return y; }),
            new Mechanist.Hooks.ForwardHookSpec(Mechanist.Hooks.HookFilter.Named("blocks.2.hook_resid_pre"), (x, _) => x.Add(steer.to(x.dtype))),
        };
        GenerationResult Run(bool cache) => model.Generate(prompt, new GenerateOptions { MaxNewTokens = 6, UseKvCache = cache, Hooks = hooks, ReturnLogits = true });
        var cached = Run(true); var full = Run(false);
        Assert.Equal(full.NewIds, cached.NewIds);
        for (int i = 0; i < full.StepLogits.Count; i++)
            for (int v = 0; v < full.StepLogits[i].Length; v++)
                Assert.True(Math.Abs(full.StepLogits[i][v] - cached.StepLogits[i][v]) < 1e-3, $"{arch} step {i} token {v}: {full.StepLogits[i][v]} vs {cached.StepLogits[i][v]}");
        // The hooks act: without them the first step's logits differ.
        var plain = model.Generate(prompt, new GenerateOptions { MaxNewTokens = 1, ReturnLogits = true });
        Assert.True(plain.StepLogits[0].Zip(cached.StepLogits[0]).Max(p => Math.Abs(p.First - p.Second)) > 1e-3);
    }
}

/// <summary>
/// The other analyses on every golden architecture (with the built-in word-level tokenizer, whose ids fit the 512-token vocabularies):
/// they run, and their numbers are finite and in range. Generated ids beyond the tokenizer's 401 tokens must not break decoding.
/// </summary>
public class AnalysesAcrossArchitecturesTests
{
    [Theory]
    [MemberData(nameof(GoldenModelTests.Architectures), MemberType = typeof(GoldenModelTests))]
    public void EveryAnalysisRunsWithFiniteInRangeNumbers(string arch)
    {
        var (model, reference) = SharedData.Golden(arch, toyTokenizer: true);
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var cfg = model.Config;
        static bool Finite(double v) => double.IsFinite(v);

        var heads = HeadDetector.Run(model);
        Assert.Equal(cfg.NLayers * cfg.NHeads, heads.Heads.Length);
        Assert.All(heads.Heads, h => Assert.True(h.PreviousToken is >= 0 and <= 1 && h.Induction is >= 0 and <= 1 && h.DuplicateToken is >= 0 and <= 1, $"{arch} L{h.Layer}H{h.Head}"));

        var tokens = reference.Read("input_ids")[..1];
        var ablation = Ablation.HeadGrid(model, tokens, new PatchMetric.LogitDiff(5, 7), AblationKind.Mean, reference.Read("input_ids"));
        Assert.Equal(cfg.NLayers, ablation.Values.Length);
        Assert.All(ablation.Values.SelectMany(v => v), v => Assert.True(Finite(v)));

        Assert.All(HeadCircuits.CopyingScores(model), s => Assert.True(Finite(s.CopyingScore)));
        Assert.All(HeadCircuits.CompositionScores(model), s => Assert.True(Finite(s.Score)));

        var clean = model.ToTokens("Alice went to the park"); var corrupt = model.ToTokens("Ben went to the park");
        var both = PatchingExperiment.Run(model, clean, corrupt, "#5", "#7", null, PatchTarget.Heads, PatchMethods.Both);
        Assert.True(both.Correlation is null || Finite(both.Correlation.Value));
        Assert.All(both.Grids.SelectMany(g => g.Scores.SelectMany(r => r)), v => Assert.True(Finite(v)));

        var report = Mechanist.Microscope.MicroscopeRunner.Run(model, new[] { "Alice went to the park with Ben", "Ben saw a dog in the park" }, new Mechanist.Microscope.MicroscopeOptions());
        Assert.All(report.Linearity, v => Assert.True(v is >= -1e-6 and <= 1 + 1e-6, $"{arch} linearity {v}"));

        // Two prompts that differ in their last word: a causal model's states before it are identical, at it they differ.
        var comparison = PromptComparison.Compare(model, "Alice went to the park", "Alice went to the store");
        var resid = comparison.Distances.Single(d => d.Activation == "resid_post");
        int last = comparison.TokensA.Length - 1;
        foreach (var layer in resid.L2Distance)
        {
            for (int p = 0; p < last; p++) Assert.True(layer[p] < 1e-4, $"{arch} position {p}: {layer[p]}");
            Assert.True(layer[last] > 1e-3, $"{arch} last position: {layer[last]}");
        }

        using var vector = Steering.Vector(model, new[] { "Alice went" }, new[] { "Ben went" }, 1);
        var steered = Steering.Compare(model, vector, 1, 2, new[] { "Alice went to the" }, new GenerateOptions { MaxNewTokens = 4 });
        Assert.Single(steered.Samples);
    }
}
