using Mechanist.Tensors;
using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Formats;
using Mechanist.Dictionaries.Training;
using Mechanist.Hooks;
using Mechanist.Models;
using Mechanist.Training;
using static TorchSharp.torch;

namespace Mechanist.Tests.Dictionaries;

/// <summary>Training, evaluation and formats of dictionaries on hand-checkable cases.</summary>
public class DictionaryTrainingTests
{
    static HookedTransformer Stories() => HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin"));

    [Fact]
    public void LayerMetricsOfAPerfectAndAnEmptyDictionary()
    {
        manual_seed(0);
        int d = 4;
        using var x = randn(100, 1, d);
        using var data = new ActivationSet(x.clone(), x.clone(), 1);
        var eye = TorchSharp.torch.eye(d);
        using var identity = new Transcoder(cat(new[] { eye, -eye }, 0), zeros(2 * d), cat(new[] { eye, -eye }, 0), zeros(d));
        var perfect = DictionaryEvaluation.Layers(identity, data, chunk: 32)[0];
        Assert.Equal(0.0, perfect.Fvu, 9);
        // L0 by hand: every nonzero coordinate fires exactly one of its two features.
        Assert.Equal(x.Ne(0).to(ScalarType.Float64).sum().item<double>() / 100, perfect.L0, 9);
        using var empty = new Transcoder(zeros(3, d), SafeOps.Full(new long[] { 3 }, -1f), zeros(3, d), zeros(d));
        var none = DictionaryEvaluation.Layers(empty, data)[0];
        // Reconstructing nothing leaves the whole second moment: FVU = E‖x‖² / E‖x − x̄‖².
        double second = x.Square().sum(-1).mean().item<float>(), variance = (x - x.mean(new long[] { 0 })).Square().sum(-1).mean().item<float>();
        Assert.Equal(second / variance, none.Fvu, 4);
        Assert.Equal(1.0, none.DeadFraction);
        Assert.Equal(0.0, none.L0);
    }

    [Fact]
    public void JumpReluIsZeroBelowItsThresholdAndTrainsTheThresholdThroughTheEstimator()
    {
        using var x = tensor(new float[] { 0.3f, 0.55f, 0.9f }).requires_grad_(true);
        using var theta = tensor(new float[] { 0.5f, 0.5f, 0.5f }).requires_grad_(true);
        using var y = JumpReluFunction.Apply(x, theta, 0.2);
        Assert.Equal(new float[] { 0f, 0.55f, 0.9f }, y.detach().data<float>().ToArray());
        y.sum().backward();
        // dy/dx = 1[x > θ]; dy/dθ = −(θ/ε)·1[|x − θ| < ε/2]: only 0.55 is within 0.1 of 0.5, giving −0.5/0.2 = −2.5.
        Assert.Equal(new float[] { 0f, 1f, 1f }, x.grad!.data<float>().ToArray());
        Assert.Equal(new float[] { 0f, -2.5f, 0f }, theta.grad!.data<float>().ToArray());
    }

    [Fact]
    public void BatchTopKKeepsKPerTokenOnAverageAndCrossLayerFeaturesWriteOnlyForward()
    {
        manual_seed(2);
        using var mean = zeros(3, 5);
        using var dict = new TrainableDictionary(DictionaryKind.Clt, TrainActivation.BatchTopK, layers: 3, dIn: 5, dOut: 5, features: 8, k: 2, mean, seed: 1);
        using var x = randn(10, 3, 5);
        using var scope = NewDisposeScope();
        var acts = dict.Activate(dict.PreActivations(x), training: true);
        // K·B = 20 activations per layer over the batch, however they spread over tokens.
        Assert.All(Enumerable.Range(0, 3), l => Assert.Equal(20L, acts.select(1, l).Gt(0).sum().item<long>()));
        // Changing layer 2's features moves only layer 2's reconstruction; layer 0's moves every layer.
        var recon = dict.Decode(acts, x);
        var bumped2 = acts.clone(); bumped2[.., 2].AddInPlace(1L);
        var r2 = dict.Decode(bumped2, x);
        TensorAssert.Close(recon[.., ..2], r2[.., ..2], 0, "layers before 2");
        Assert.True((recon[.., 2] - r2[.., 2]).abs().max().item<float>() > 1e-3);
        var bumped0 = acts.clone(); bumped0[.., 0].AddInPlace(1L);
        Assert.All(Enumerable.Range(0, 3), l => Assert.True((recon[.., l] - dict.Decode(bumped0, x)[.., l]).abs().max().item<float>() > 1e-3));
    }

    [Fact]
    public void CrossLayerDecodeIsTheSumOverSourceLayersAndItsGradientsReachEveryBlock()
    {
        manual_seed(3);
        using var mean = randn(3, 4);
        using var dict = new TrainableDictionary(DictionaryKind.Clt, TrainActivation.TopK, layers: 3, dIn: 4, dOut: 4, features: 6, k: 2, mean, seed: 2);
        using var scope = NewDisposeScope();
        var acts = randn(5, 3, 6).requires_grad_(true);
        var recon = dict.Decode(acts, randn(5, 3, 4));
        recon.sum().backward();
        using (no_grad())
            for (int j = 0; j < 3; j++)
            {
                // Written out: b_dec[j] + Σ_{i ≤ j} a_i · W_dec,i[:, j − i].
                var want = dict.BDec[j].unsqueeze(0).expand(5, -1).clone();
                for (int i = 0; i <= j; i++) want = want.Add(matmul(acts[.., i], dict.WDecCross![i][.., j - i]));
                TensorAssert.Close(want, recon[.., j], 1e-5, $"layer {j}");
            }
        // d(Σ recon)/d b_dec = the batch size; d/d W_dec,i[f, m, :] = Σ_b a_i[b, f]; d/d a_i[b, f] = Σ over the layers it writes of Σ_d W.
        TensorAssert.Close(SafeOps.Full(new long[] { 3, 4 }, 5.0), dict.BDec.grad!, 1e-5, "b_dec gradient");
        for (int i = 0; i < 3; i++)
        {
            var wantW = acts[.., i].detach().sum(new long[] { 0 }).view(6, 1, 1).expand(6, 3 - i, 4);
            TensorAssert.Close(wantW, dict.WDecCross![i].grad!, 1e-5, $"W_dec {i} gradient");
            var wantA = dict.WDecCross[i].detach().sum(new long[] { 1, 2 }).unsqueeze(0).expand(5, -1);
            TensorAssert.Close(wantA, acts.grad![.., i], 1e-5, $"activation {i} gradient");
        }
    }

    /// <summary>Rows that are sparse sums of known unit directions: k of f true features, magnitudes in [1, 2], times a large scale.</summary>
    static (Tensor Rows, Tensor Features) Synthetic(int rows, int d, int f, int k, float scale, long seed)
    {
        using var g = new Generator((ulong)seed);
        var features = randn(new long[] { f, d }, generator: g);
        features /= features.norm(1, true);
        var codes = zeros(rows, f);
        var idx = rand(new long[] { rows, f }, generator: g).topk(k, dim: -1).indexes;
        codes.scatter_(-1, idx, rand(new long[] { rows, k }, generator: g).Add(1L));
        return (matmul(codes, features).Mul(scale).unsqueeze(1), features);
    }

    [Fact]
    public void ATopKSaeRecoversKnownSparseFeaturesAndExportsInRawUnits()
    {
        var (rows, truth) = Synthetic(20_000, 32, 24, 3, scale: 50f, seed: 7);
        using var _t = truth;
        using var data = new ActivationSet(rows, rows, 1);
        var config = new DictionaryTrainConfig(DictionaryKind.Sae, TrainActivation.TopK, Features: 48, K: 3, Steps: 600, BatchSize: 256, LearningRate: 3e-3, WarmupSteps: 20, DeadAfterTokens: 20_000);
        var result = DictionaryTrainer.Train(data, config);
        using var set = result.Dictionary;
        var sae = (Transcoder)set.Layer(0)!;
        // Exported in raw units (inputs were normalised while training): the held-out FVU is the training FVU.
        var metrics = DictionaryEvaluation.Layers(sae, data)[0];
        Assert.True(metrics.Fvu < 0.05, $"FVU {metrics.Fvu}; training FVU at 50/150/300/599: {result.Fvus[50]:F3} {result.Fvus[150]:F3} {result.Fvus[300]:F3} {result.Fvus[599]:F3}");
        Assert.Equal(3.0, metrics.L0, 6);
        Assert.Equal(result.Fvus[^1], metrics.Fvu, 1);
        // Most true features have a learned decoder row pointing their way.
        using var rowsDec = sae.WDec / sae.WDec.norm(1, true);
        using var cos = matmul(truth, rowsDec.t()).max(1).values;
        Assert.True(cos.Gt(0.9).sum().item<long>() >= 20, $"matched features: {cos.Gt(0.9).sum().item<long>()} of 24");
    }

    [Fact]
    public void AResumedRunEndsWhereAnUninterruptedOneDoes()
    {
        var (rows, truth) = Synthetic(4_000, 8, 12, 2, scale: 3f, seed: 3);
        truth.Dispose();
        using var data = new ActivationSet(rows, rows, 1);
        var config = new DictionaryTrainConfig(DictionaryKind.Sae, TrainActivation.TopK, Features: 16, K: 2, Steps: 40, BatchSize: 128, WarmupSteps: 5, CheckpointEvery: 10, DeadAfterTokens: 1000);
        using var a = new TempDir(); using var b = new TempDir();
        var whole = DictionaryTrainer.Train(data, config, a.Path);
        using var cts = new CancellationTokenSource();
        Assert.Throws<OperationCanceledException>(() => DictionaryTrainer.Train(data, config, b.Path, new SyncProgress<DictionaryTrainProgress>(p => { if (p.Step == 25) cts.Cancel(); }), cts.Token));
        var resumed = DictionaryTrainer.Train(data, config, b.Path);
        Assert.Equal(whole.Losses, resumed.Losses);
        using var xs = whole.Dictionary; using var ys = resumed.Dictionary;
        var x = (Transcoder)xs.Layer(0)!; var y = (Transcoder)ys.Layer(0)!;
        TensorAssert.Close(x.WDec, y.WDec, 0, "decoder after resume");
    }

    [Fact]
    public void LossRecoveredIsOneForAPerfectSaeAndZeroForAnEmptyOne()
    {
        using var model = Stories();
        string hook = model.HookPoints.Name(HookKind.ResidPost, 2);
        int d = model.Config.DModel;
        var texts = new[] { "Once upon a time, there was a little girl.", "She liked to play with her ball in the park.", "Tom had a big red dog." };
        var eye = TorchSharp.torch.eye(d);
        using var identity = new Transcoder(cat(new[] { eye, -eye }, 0), zeros(2 * d), cat(new[] { eye, -eye }, 0), zeros(d));
        var perfect = DictionaryEvaluation.Spliced(model, texts, new SaeSplice(hook, identity, ErrorTerm.None), new[] { hook });
        Assert.Equal(1.0, perfect.LossRecovered, 4);
        Assert.Equal(1.0, perfect.TopTokenAgreement);
        Assert.Equal(0.0, perfect.Kl, 5);
        using var empty = new Transcoder(zeros(4, d), SafeOps.Full(new long[] { 4 }, -1f), zeros(4, d), zeros(d));
        var nothing = DictionaryEvaluation.Spliced(model, texts, new SaeSplice(hook, empty, ErrorTerm.None), new[] { hook });
        Assert.Equal(0.0, nothing.LossRecovered, 6);
        Assert.Equal(nothing.ZeroAblatedLoss, nothing.SplicedLoss, 6);
    }

    [Fact]
    public void SaeLensFoldersRoundTripAndFoldBDecIntoTheEncoder()
    {
        manual_seed(4);
        using var tmp = new TempDir();
        // A folder as SAELens writes it, with apply_b_dec_to_input: encode is ReLU((x − b_dec)·W_enc + b_enc).
        var wEnc = randn(6, 10); var wDec = randn(10, 6); var bEnc = randn(10); var bDec = randn(6);
        Directory.CreateDirectory(tmp.File("lens"));
        Mechanist.IO.SafetensorsWriter.Write(tmp.File("lens/sae_weights.safetensors"), new Dictionary<string, Tensor> { ["W_enc"] = wEnc, ["W_dec"] = wDec, ["b_enc"] = bEnc, ["b_dec"] = bDec });
        File.WriteAllText(tmp.File("lens/cfg.json"), "{\"architecture\": \"standard\", \"d_in\": 6, \"d_sae\": 10, \"hook_name\": \"blocks.1.hook_resid_post\", \"apply_b_dec_to_input\": true, \"model_name\": \"m\"}");
        using var bundle = SaeLensFormat.Load(tmp.File("lens"));
        using var x = randn(5, 6);
        TensorAssert.Close(nn.functional.relu(matmul(x - bDec, wEnc).Add(bEnc)), bundle.Sae.Encode(x), 1e-5, "encode with b_dec applied to the input");
        Assert.Equal("blocks.1.hook_resid_post", bundle.HookName);
        SaeLensFormat.Save(bundle, tmp.File("saved"));
        using var again = SaeLensFormat.Load(tmp.File("saved"));
        TensorAssert.Close(bundle.Sae.Encode(x), again.Sae.Encode(x), 0, "round trip");
        TensorAssert.Close(bundle.Sae.WDec, again.Sae.WDec, 0, "decoder");
        File.WriteAllText(tmp.File("lens/cfg.json"), "{\"architecture\": \"temporal\", \"hook_name\": \"x\"}");
        Assert.Contains("architecture 'temporal' is not supported", Assert.Throws<Mechanist.InvalidCheckpointException>(() => SaeLensFormat.Load(tmp.File("lens"))).Message);
        // A gated folder without its gate tensors names the one missing.
        File.WriteAllText(tmp.File("lens/cfg.json"), "{\"architecture\": \"gated\", \"hook_name\": \"x\"}");
        Assert.Contains("missing tensor 'b_gate'", Assert.Throws<Mechanist.InvalidCheckpointException>(() => SaeLensFormat.Load(tmp.File("lens"))).Message);
    }
}
