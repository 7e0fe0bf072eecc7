using Mechanist.Tensors;
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
        // The largest neuron, by hand: post[n] · W_out[:, n] · (final-norm-scaled, weight-folded) answer − wrong direction.
        var top = dla.Neurons![0];
        int layer = int.Parse(top.Label[1..top.Label.IndexOf('N')]), neuron = int.Parse(top.Label[(top.Label.IndexOf('N') + 1)..]);
        var (_, cache) = model.RunWithCache(tokens);
        using var _c = cache;
        var write = cache[HookKind.MlpPost, layer][0, -1, neuron] * model.Weights.Blocks[layer].WOut[.., neuron];
        var direction = (model.Weights.WU[a] - model.Weights.WU[w]) * model.Weights.LnFinalW!;
        double expected = ((write * direction).sum() / cache[HookNames.LnFinalScale][0, -1, 0]).item<float>();
        Assert.Equal(expected, top.Value, 4);
    }

    [Fact]
    public void DlaOnAFoldedGemmaSumsToTheLogitAndMatchesTheUnfoldedModel()
    {
        // Gemma's final norm multiplies by (1 + w); after folding, that weight lives in W_U and the norm has none.
        using var model = HookedTransformer.Load(SharedData.PathOf("golden", "models", "gemma"));
        using var tokens = tensor(new long[] { 5, 17, 300, 42, 7, 99 }, new long[] { 1, 6 });
        var before = DirectLogitAttribution.Compute(model, tokens, 77, 12);
        WeightProcessing.Apply(model, new WeightProcessingOptions(FoldLn: true, CenterWritingWeights: false, CenterUnembed: false, FoldValueBiases: false));
        var after = DirectLogitAttribution.Compute(model, tokens, 77, 12);
        Assert.Equal(after.Metric, after.Components.Sum(c => c.Value) + after.Constant, 4);
        Assert.Equal(before.Metric, after.Metric, 4);
        foreach (var (x, y) in before.Components.Zip(after.Components)) Assert.Equal(x.Value, y.Value, 4);
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
        // Per head and position: a head's output before the changed word is the same in both runs, so patching it does nothing.
        var headsPos = ActivationPatching.Run(model, clean, corrupt, metric, PatchTarget.HeadsPos);
        Assert.All(headsPos.Scores, row => Assert.All(row.Take(differing), v => Assert.Equal(0.0, v, 6)));
        // One q/k/v cell by hand: the value of query head 3 at layer 1 is kv head 1 (two query heads per kv head); copy
        // the clean one into the corrupted run and normalise.
        var qkv = ActivationPatching.Run(model, clean, corrupt, metric, PatchTarget.HeadQkv);
        var (_, cleanCache) = model.RunWithCache(clean);
        using var _cc = cleanCache;
        using var patched = model.RunWithHooks(corrupt, new[] { new ForwardHookSpec("blocks.1.attn.hook_v", (v, _) =>
        {
            var r = v.clone(); r[.., .., 1] = cleanCache["v", 1][.., .., 1]; return r;
        }) });
        double m = metric.Compute(patched).item<float>();
        Assert.Equal((m - qkv.CorruptedMetric) / (qkv.CleanMetric - qkv.CorruptedMetric), qkv.Scores[1 * 4 + 2][3], 5);
        Assert.Equal(new[] { "L0 q", "L0 k", "L0 v", "L0 pattern" }, qkv.RowLabels.Take(4));
    }

    [Fact]
    public void AttributionEqualsExactPatchingWhereTheModelIsLinear()
    {
        // Huge norm epsilons make every norm a constant scaling: the logits are then linear in the last MLP's output.
        var cfg = RandomModels.Gpt2SmallConfig() with { NLayers = 2, DModel = 32, NHeads = 2, NKvHeads = 2, DHead = 16, DMlp = 64, VocabSize = 50, NCtx = 16, NormEps = 1e10 };
        using var model = RandomModels.Create(cfg, seed: 3);
        // The huge norm scale amplifies the fused kernel's rounding differences: a no-op hook on every pattern keeps attention unfused.
        using var unfused = model.Hooks(new ForwardHookSpec(HookFilter.Where(model.HookPoints.Selector(HookKind.Pattern)), (_, _) => null));
        foreach (var b in model.Weights.Blocks) { b.Ln1W!.FillInPlace(1e5f); b.Ln2W!.FillInPlace(1e5f); }
        model.Weights.LnFinalW!.FillInPlace(1e5f);
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
        using var expected = MeanEmbedding("happy").Add(MeanEmbedding("glad day")).Div(2) - MeanEmbedding("sad");
        TensorAssert.Close(expected, vector, 1e-6, "steering vector");
        var result = Steering.Compare(model, vector, 0, 8.0, new[] { "Once upon a time" }, new GenerateOptions { MaxNewTokens = 8 });
        // The steered text is greedy decoding with 8 × the vector added to the embeddings, by hand.
        var ids = model.Tokenizer!.Encode("Once upon a time").Select(i => (long)i).ToList();
        for (int step = 0; step < 8; step++)
        {
            using var x = tensor(ids.ToArray(), new long[] { 1, ids.Count });
            using var logits = model.RunWithHooks(x, new[] { new ForwardHookSpec("blocks.0.hook_resid_pre", (r, _) => r.Add(vector.Mul(8.0))) });
            ids.Add(logits[0, -1].argmax().item<long>());
        }
        Assert.Equal(model.Tokenizer.Decode(ids.Skip(ids.Count - 8).Select(i => (int)i), skipSpecial: true), result.Samples[0].Steered);
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
        using (no_grad()) b.Wo[.., ..dh].MulInPlace(-1);
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
        // By hand from explicit ids: BOS is token 1 in llama2.c vocabularies.
        long time = TokenText.AnswerId(model, " time"), day = TokenText.AnswerId(model, " day");
        var ids = model.Tokenizer!.Encode("Once upon a", prependBos: false).Select(i => (long)i).ToArray();
        double Diff(long[] x) { using var l = model.Run(tensor(x, new long[] { 1, x.Length })); return l[0, -1, time].item<float>() - l[0, -1, day].item<float>(); }
        Assert.Equal(Diff(ids.Prepend(1L).ToArray()), bos.WithBos, 4);
        Assert.Equal(Diff(ids), bos.WithoutBos, 4);
    }

    [Fact]
    public void AnalysisCommandsPrintWhatTheLibraryComputes()
    {
        string s = SharedData.PathOf("models", "stories260K", "stories260K.bin");
        using var model = Stories();
        using var tokens = model.ToTokens(Clean);
        long lily = TokenText.AnswerId(model, " Lily"), tim = TokenText.AnswerId(model, " Tim");

        // lens --json: the last layer's top token at the last position is the model's own argmax.
        var (code, output, err) = CliRunner.Run("lens", "-m", s, "--prompt", Clean, "--target", " Lily", "--json");
        Assert.True(code == 0, err);
        var lens = System.Text.Json.JsonDocument.Parse(output).RootElement;
        using var logits = model.Run(tokens);
        var finalLayer = lens.GetProperty("layers")[model.Config.NLayers];
        Assert.Equal(logits[0, -1].argmax().item<long>(), finalLayer.GetProperty("positions")[(int)tokens.shape[1] - 1].GetProperty("top")[0].GetProperty("id").GetInt64());

        // patch: the table's largest effect is the one the library finds.
        (code, output, _) = CliRunner.Run("patch", "-m", s, "--clean", Clean, "--corrupt", Corrupt, "--answer", " Lily", "--wrong", " Tim", "--what", "heads", "--method", "both");
        Assert.Equal(0, code);
        using var corrupt = model.ToTokens(Corrupt);
        var report = PatchingExperiment.Run(model, tokens, corrupt, " Lily", " Tim", null, PatchTarget.Heads, PatchMethods.Both);
        var (row, col, score) = report.Grids[0].Max();
        Assert.Contains($"largest effect: {row} at {col} ({score:F2})", output);
        Assert.Contains($"correlation of attribution with exact patching: {report.Correlation:F3}", output);

        // dla: the printed total is the logit difference.
        (code, output, _) = CliRunner.Run("dla", "-m", s, "--prompt", Clean, "--answer", " Lily", "--wrong", " Tim", "--json");
        Assert.Equal(0, code);
        var dla = System.Text.Json.JsonDocument.Parse(output).RootElement;
        Assert.Equal(logits[0, -1, lily].item<float>() - logits[0, -1, tim].item<float>(), dla.GetProperty("metric").GetDouble(), 4);

        // compare --json: a prompt against itself is zero everywhere.
        (code, output, _) = CliRunner.Run("compare", "-m", s, "--a", Clean, "--b", Clean, "--json");
        Assert.Equal(0, code);
        Assert.All(System.Text.Json.JsonDocument.Parse(output).RootElement.GetProperty("distances").EnumerateArray(),
            d => Assert.All(d.GetProperty("l2Distance").EnumerateArray().SelectMany(r => r.EnumerateArray()), v => Assert.Equal(0.0, v.GetDouble())));

        var bad = CliRunner.Run("patch", "-m", s, "--clean", Clean, "--corrupt", "Lily", "--answer", " Lily", "--wrong", " Tim");
        Assert.Equal(2, bad.Code);
        Assert.Contains("patching needs equal lengths", bad.Err);
    }

    [Fact]
    public void ALensOfOneTokenWritesItsUndefinedLossAsNaN()
    {
        // One token has no next token: the loss is NaN, which JSON writes as the string "NaN" (the CLI used to fail here).
        var (code, output, err) = CliRunner.Run("lens", "-m", SharedData.PathOf("models", "stories260K", "stories260K.bin"), "--prompt", "Once", "--no-bos", "--json");
        Assert.True(code == 0, err);
        var layers = System.Text.Json.JsonDocument.Parse(output).RootElement.GetProperty("layers");
        Assert.All(layers.EnumerateArray(), l => Assert.Equal("NaN", l.GetProperty("loss").GetString()));
        var back = System.Text.Json.JsonSerializer.Deserialize<LogitLensResult>(output, Mechanist.Reporting.JsonFormat.Options)!;
        Assert.True(double.IsNaN(back.Layers[0].Loss));
    }

    [Fact]
    public void AblatingHeadsMatchesHandMadeInterventions()
    {
        using var model = Stories();
        using var tokens = model.ToTokens(Clean);
        var metric = new PatchMetric.LogitDiff(TokenText.AnswerId(model, " Lily"), TokenText.AnswerId(model, " Tim"));
        // Zeroing head 2 of layer 3 removes exactly its per-head result from attn_out.
        var (_, cache) = model.RunWithCache(tokens, options: new RunOptions { UseAttnResult = true });
        using var _c = cache;
        var (_, ablated) = model.RunWithCache(tokens, options: new RunOptions { Hooks = new[] { Ablation.Head(model, 3, 2, AblationKind.Zero) } });
        using var _a = ablated;
        TensorAssert.Close(cache["attn_out", 3] - cache["result", 3][.., .., 2], ablated["attn_out", 3], 1e-5, "attn_out without head 2");
        // Mean over copies of the prompt itself, or resampling from the prompt itself, changes nothing.
        using var twice = cat(new[] { tokens, tokens }, 0);
        using var plain = model.Run(tokens);
        using (var mean = model.RunWithHooks(tokens, new[] { Ablation.Head(model, 3, 2, AblationKind.Mean, twice) })) TensorAssert.Close(plain, mean, 1e-5, "mean of itself");
        // Resampling from another prompt puts that prompt's z there.
        using var other = model.ToTokens(Corrupt);
        var (_, otherCache) = model.RunWithCache(other);
        using var _o = otherCache;
        var (_, resampled) = model.RunWithCache(tokens, options: new RunOptions { Hooks = new[] { Ablation.Head(model, 1, 0, AblationKind.Resample, other) } });
        using var _r = resampled;
        TensorAssert.Close(otherCache["z", 1][.., .., 0], resampled["z", 1][.., .., 0], 1e-5, "resampled head (its source ran with fused attention)");
        TensorAssert.Close(cache["z", 1][.., .., 1], resampled["z", 1][.., .., 1], 1e-5, "other heads untouched (up to the per-head-result path's rounding)");
        // The grid: every value is a run with that head zeroed; the baseline is the plain metric.
        var grid = Ablation.HeadGrid(model, tokens, metric, AblationKind.Zero);
        Assert.Equal(metric.Compute(plain).item<float>(), grid.Baseline, 5);
        using (var l32 = model.RunWithHooks(tokens, new[] { new ForwardHookSpec("blocks.3.attn.hook_z", (z, _) => { var r = z.clone(); r[.., .., 2] = 0; return r; }) }))
            Assert.Equal(metric.Compute(l32).item<float>(), grid.Values[3][2], 5);
        // From the CLI.
        var (code, output, err) = CliRunner.Run("ablate", "-m", SharedData.PathOf("models", "stories260K", "stories260K.bin"), "--prompt", Clean, "--answer", " Lily", "--wrong", " Tim", "--json");
        Assert.True(code == 0, err);
        Assert.Equal(grid.Values[3][2], System.Text.Json.JsonDocument.Parse(output).RootElement.GetProperty("values")[3][2].GetDouble(), 4);
    }

    [Fact]
    public void DetectorScoreOfAHandMadePreviousTokenHead()
    {
        using var model = Stories();
        using var _ = model.Hooks(new ForwardHookSpec("blocks.2.attn.hook_pattern", (p, _) =>
        {
            int n = (int)p.shape[2];
            var previous = eye(n).roll(-1, 1).tril();
            previous[0, 0] = 1;
            var result = p.clone();
            result[.., 1] = previous;
            return result;
        }));
        using var tokens = model.ToTokens(Clean);
        int n = (int)tokens.shape[1];
        using var detection = eye(n).roll(-1, 1).tril(); // [q, k] = 1 at k = q − 1
        var scores = HeadDetector.Score(model, tokens, detection);
        Assert.Equal((n - 1.0) / n, scores[2][1], 5); // every row but the first, which attends to itself
        Assert.Throws<MechanistException>(() => HeadDetector.Score(model, tokens, eye(3)));
    }
}
