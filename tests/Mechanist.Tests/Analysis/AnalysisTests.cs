using Mechanist.Analysis;
using Mechanist.Hooks;
using Mechanist.Models;
using Mechanist.Tests.Cli;
using static TorchSharp.torch;

namespace Mechanist.Tests.Analysis;

/// <summary>Each analysis against an independent small case.</summary>
public class AnalysisTests
{
    static HookedTransformer Stories() => HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin"));
    const string Clean = "Lily and Tim went to the park. Tim gave the ball to";
    const string Corrupt = "Lily and Tim went to the park. Lily gave the ball to";

    [Fact]
    public void LogitLensAtTheLastLayerIsTheModelsOutput()
    {
        using var model = Stories();
        using var tokens = model.ToTokens(Clean);
        long lily = TokenText.AnswerId(model, " Lily");
        var lens = LogitLens.Run(model, tokens, lily, topK: 3);
        using var logits = model.Run(tokens);
        using var probs = logits[0].softmax(-1);
        var final = lens.Layers[^1];
        Assert.Equal("final_post", final.Label);
        for (int p = 0; p < tokens.shape[1]; p++)
        {
            var (top, ids) = probs[p].topk(3);
            Assert.Equal(ids.data<long>().ToArray(), final.Positions[p].Top.Select(t => t.Id).ToArray());
            Assert.Equal(top[0].item<float>(), final.Positions[p].Top[0].Prob, 5);
        }
        Assert.Equal(logits[0, -1, lily].item<float>(), final.Positions[^1].TargetLogit!.Value, 4);
        // The loss of the final layer is the model's own next-token loss.
        using var lp = logits[0, ..^1].log_softmax(-1);
        using var next = tokens[0, 1..].unsqueeze(1);
        Assert.Equal(-lp.gather(1, next).mean().item<float>(), final.Loss, 4);
        Assert.Equal(model.Config.NLayers + 1, lens.Layers.Length);
    }

    [Fact]
    public void DlaPartsSumToTheLogitDifference()
    {
        using var model = Stories();
        using var tokens = model.ToTokens(Clean);
        long a = TokenText.AnswerId(model, " Lily"), w = TokenText.AnswerId(model, " Tim");
        var dla = DirectLogitAttribution.Compute(model, tokens, a, w, topNeurons: 5);
        Assert.Equal(dla.Metric, dla.Components.Sum(c => c.Value) + dla.Constant, 4);
        // Heads (plus output biases) of a layer sum to that layer's attention output.
        for (int l = 0; l < model.Config.NLayers; l++)
        {
            double heads = dla.Heads.Where(h => h.Label.StartsWith($"L{l}H") || h.Label == $"L{l} b_O").Sum(h => h.Value);
            Assert.Equal(dla.Components.Single(c => c.Label == $"{l}_attn_out").Value, heads, 4);
        }
        Assert.Equal(5, dla.Neurons!.Length);
    }

    [Fact]
    public void PatchingScoresOneWhereThePromptsDifferAndZeroElsewhere()
    {
        using var model = Stories();
        using var clean = model.ToTokens(Clean);
        using var corrupt = model.ToTokens(Corrupt);
        var metric = new PatchMetric.LogitDiff(TokenText.AnswerId(model, " Lily"), TokenText.AnswerId(model, " Tim"));
        var grid = ActivationPatching.Run(model, clean, corrupt, metric, PatchTarget.Resid);
        int differing = 12; // " Tim" vs " Lily"
        // Layer 0's input differs only there: patching it there is the clean run, anywhere else the corrupted run.
        Assert.Equal(1.0, grid.Scores[0][differing], 4);
        for (int p = 0; p < clean.shape[1]; p++) if (p != differing) Assert.Equal(0.0, grid.Scores[0][p], 6);
        // Positions before the difference never matter (causal attention).
        Assert.All(grid.Scores, row => Assert.All(row.Take(differing), s => Assert.Equal(0.0, s, 6)));
        // Heads: patching every head of the last layer's z... each score is finite and the grid has the model's shape.
        var heads = ActivationPatching.Run(model, clean, corrupt, metric, PatchTarget.Heads);
        Assert.Equal(model.Config.NLayers, heads.Scores.Length);
        Assert.Equal(model.Config.NHeads, heads.Scores[0].Length);
        var qkv = ActivationPatching.Run(model, clean, corrupt, metric, PatchTarget.HeadQkv);
        Assert.Equal(4 * model.Config.NLayers, qkv.RowLabels.Length);
    }

    [Fact]
    public void AttributionEqualsExactPatchingWhereTheModelIsLinear()
    {
        // Huge norm epsilons make every norm a constant scaling: the logits are then linear in the last MLP's output.
        var cfg = RandomModels.Gpt2SmallConfig() with { NLayers = 2, DModel = 32, NHeads = 2, NKvHeads = 2, DHead = 16, DMlp = 64, VocabSize = 50, NCtx = 16, NormEps = 1e10 };
        using var model = RandomModels.Create(cfg, seed: 3);
        // The huge norm scale amplifies the fused kernel's rounding differences: a no-op hook on every pattern keeps attention unfused.
        using var unfused = model.Hooks(new ForwardHookSpec(HookFilter.Where(model.HookPoints.Selector(HookKind.Pattern)), (_, _) => null));
        foreach (var b in model.Weights.Blocks) { b.Ln1W!.fill_(1e5f); b.Ln2W!.fill_(1e5f); }
        model.Weights.LnFinalW!.fill_(1e5f);
        using var clean = tensor(new long[] { 1, 5, 7, 9, 11, 13 }, new long[] { 1, 6 });
        using var corrupt = tensor(new long[] { 1, 5, 8, 9, 11, 13 }, new long[] { 1, 6 });
        var metric = new PatchMetric.LogitDiff(3, 4);
        var exact = ActivationPatching.Run(model, clean, corrupt, metric, PatchTarget.Mlp);
        var attribution = ActivationPatching.Run(model, clean, corrupt, metric, PatchTarget.Mlp, PatchMethod.Attribution);
        int last = cfg.NLayers - 1;
        for (int p = 0; p < 6; p++) Assert.Equal(exact.Scores[last][p], attribution.Scores[last][p], 3);
        Assert.True(exact.CorrelationWith(attribution) > 0.9);
    }

    [Fact]
    public void AHandMadePreviousTokenHeadScoresNearOne()
    {
        using var model = Stories();
        // Make head 1 of layer 2 attend to the previous token (the first token to itself).
        using var _ = model.Hooks(new ForwardHookSpec("blocks.2.attn.hook_pattern", (p, _) =>
        {
            int n = (int)p.shape[2];
            var previous = eye(n).roll(-1, 1).tril(); // [q, k] = 1 at k = q - 1, and [0, 0] = 1 below
            previous[0, 0] = 1; previous[0, n - 1] = 0;
            var result = p.clone();
            result[.., 1] = previous;
            return result;
        }));
        var result = HeadDetector.Run(model, new HeadDetectionSettings(SequenceLength: 20, Batch: 4));
        var head = result.Heads.Single(h => h.Layer == 2 && h.Head == 1);
        Assert.Equal(40.0 / 41.0, head.PreviousToken, 4); // every row but the first
        Assert.True(head.Induction < 0.5);
        Assert.True(result.SecondHalfLoss < result.FirstHalfLoss);
    }

    [Fact]
    public void SteeringVectorIsTheMeanEmbeddingDifferenceAtLayerZero()
    {
        using var model = Stories();
        string[] positive = { "happy", "glad day" }, negative = { "sad" };
        using var vector = Steering.Vector(model, positive, negative, layer: 0);
        // By hand: the residual entering layer 0 of a Llama model is the token embedding.
        Tensor MeanEmbedding(string p) => model.Weights.WE.index_select(0, model.ToTokens(p)[0]).mean(new long[] { 0 });
        using var expected = (MeanEmbedding("happy") + MeanEmbedding("glad day")) / 2 - MeanEmbedding("sad");
        TensorAssert.Close(expected, vector, 1e-6, "steering vector");
        var result = Steering.Compare(model, vector, 0, 8.0, new[] { "Once upon a time" }, new GenerateOptions { MaxNewTokens = 8 });
        Assert.NotEqual(result.Samples[0].Unsteered, result.Samples[0].Steered);
    }

    [Fact]
    public void ComparingAPromptWithItselfIsZeroEverywhere()
    {
        using var model = Stories();
        var same = PromptComparison.Compare(model, Clean, Clean);
        Assert.All(same.Distances, d => Assert.All(d.CosineDistance.Concat(d.L2Distance), row => Assert.All(row, v => Assert.Equal(0.0, v, 9))));
        var different = PromptComparison.Compare(model, Clean, Corrupt);
        var resid = different.Distances.Single(d => d.Activation == "resid_post");
        Assert.Equal(0.0, resid.L2Distance[0][11], 9);  // before the changed word
        Assert.True(resid.L2Distance[0][12] > 0.1);       // at it
    }

    [Fact]
    public void CopyingAndCompositionScores()
    {
        using var model = Stories();
        // stories260K ties W_U to W_E. Setting head 0's W_O slice to its W_V slice transposed makes the full
        // OV circuit W_E·W_Vᵀ·W_V·W_Eᵀ positive semi-definite: a perfect copying head (score 1); negated, -1.
        int dh = model.Config.DHead;
        var b = model.Weights.Blocks[0];
        using (no_grad()) b.Wo[.., ..dh].copy_(b.Wv[..dh].t());
        Assert.Equal(1.0, HeadCircuits.CopyingScores(model).Single(s => s.Layer == 0 && s.Head == 0).CopyingScore, 6);
        using (no_grad()) b.Wo[.., ..dh].mul_(-1);
        Assert.Equal(-1.0, HeadCircuits.CopyingScores(model).Single(s => s.Layer == 0 && s.Head == 0).CopyingScore, 6);

        using var qk = HeadCircuits.QK(model, 1, 3);
        using var full = qk.Full();
        Assert.Equal(full.norm().item<double>(), qk.FrobeniusNorm(), 6);
        var comp = HeadCircuits.CompositionScores(model);
        Assert.Equal(3 * 10 * model.Config.NHeads * model.Config.NHeads, comp.Length); // 10 layer pairs of 5 layers
        Assert.All(comp, c => Assert.InRange(c.Score, 0, 1));
    }

    [Fact]
    public void TestPromptAndBosComparison()
    {
        using var model = Stories();
        var t = PromptChecks.Check(model, "Once upon a", " time");
        Assert.Equal(0, t.Rank);
        Assert.Equal(" time", t.Answer);
        var bos = PromptChecks.CompareBos(model, "Once upon a", " time", " day");
        Assert.NotEqual(bos.WithBos, bos.WithoutBos);
    }

    [Fact]
    public void AnalysisCommandsRunFromTheCli()
    {
        string s = SharedData.PathOf("models", "stories260K", "stories260K.bin");
        Assert.Equal(0, CliRunner.Run("lens", "-m", s, "--prompt", Clean, "--target", " Lily", "--json").Code);
        var (code, output, _) = CliRunner.Run("patch", "-m", s, "--clean", Clean, "--corrupt", Corrupt, "--answer", " Lily", "--wrong", " Tim", "--what", "heads", "--method", "both");
        Assert.Equal(0, code);
        Assert.Contains("correlation of attribution with exact patching", output);
        Assert.Equal(0, CliRunner.Run("heads", "-m", s, "--json").Code);
        Assert.Equal(0, CliRunner.Run("dla", "-m", s, "--prompt", Clean, "--answer", " Lily", "--wrong", " Tim").Code);
        Assert.Equal(0, CliRunner.Run("compare", "-m", s, "--a", Clean, "--b", Corrupt, "--json").Code);
        var bad = CliRunner.Run("patch", "-m", s, "--clean", Clean, "--corrupt", "Lily", "--answer", " Lily", "--wrong", " Tim");
        Assert.Equal(2, bad.Code);
        Assert.Contains("patching needs equal lengths", bad.Err);
    }
}
