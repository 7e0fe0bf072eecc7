using Mechanist.Tensors;
using Mechanist.Dictionaries;
using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Dictionaries;

/// <summary>The sparse-dictionary contract on hand-checkable cases, and splicing dictionaries into runs.</summary>
public class DictionaryContractTests
{
    static HookedTransformer Gpt2() => HookedTransformer.Load(SharedData.PathOf("golden", "models", "gpt2"));
    static Tensor Tokens() => tensor(new long[] { 5, 17, 300, 42, 7, 99, 123, 8 }, new long[] { 1, 8 });

    /// <summary>An SAE of width 2d whose features are +x and −x: ReLU(x) − ReLU(−x) = x, an exact reconstruction.</summary>
    static Transcoder IdentitySae(int d)
    {
        var eye = TorchSharp.torch.eye(d);
        return new Transcoder(cat(new[] { eye, -eye }, 0), zeros(2 * d), cat(new[] { eye, -eye }, 0), zeros(d));
    }

    [Fact]
    public void AnIdentityDecoderReconstructsExactly()
    {
        using var sae = IdentitySae(4);
        using var x = tensor(new float[] { 1.5f, -2f, 0f, 3f, -0.5f, 0.25f, 7f, -1f }, new long[] { 2, 4 });
        using var acts = sae.Encode(x);
        using var recon = sae.Decode(acts);
        TensorAssert.Close(x, recon, 0, "identity reconstruction");
        using var sparse = sae.EncodeSparse(x);
        Assert.Equal(7, sparse.Values.shape[0]); // one active feature per nonzero input
        Assert.Equal(new long[] { 0, 0, 0, 1, 1, 1, 1 }, sparse.Rows.data<long>().ToArray());
        // Feature i is +x_i, feature 4 + i is −x_i; row-major, features ascending.
        Assert.Equal(new long[] { 0, 3, 5, 1, 2, 4, 7 }, sparse.Features.data<long>().ToArray());
        Assert.Equal(new float[] { 1.5f, 3f, 2f, 0.25f, 7f, 0.5f, 1f }, sparse.Values.data<float>().ToArray());
    }

    [Fact]
    public void TopKKeepsKAndJumpReluCutsBelowItsThreshold()
    {
        using var pre = tensor(new float[] { 0.3f, -1f, 2f, 0.9f, 0.5f }, new long[] { 1, 5 });
        using var top = DictionaryActivations.Apply(DictionaryActivation.TopK, pre, k: 2);
        Assert.Equal(new float[] { 0, 0, 2f, 0.9f, 0 }, top.data<float>().ToArray());
        using var threshold = tensor(new float[] { 0.3f, 0f, 2.5f, 0.5f, 0.4f });
        using var jump = DictionaryActivations.Apply(DictionaryActivation.JumpReLU, pre, threshold);
        // Strictly above the threshold: 0.3 at threshold 0.3 is cut, 2 below 2.5 is cut.
        Assert.Equal(new float[] { 0, 0, 0, 0.9f, 0.5f }, jump.data<float>().ToArray());
    }

    [Fact]
    public void CrossLayerFeaturesWriteOnlyToLaterLayers()
    {
        int d = 3, f = 2, n = 3;
        manual_seed(1);
        var clt = new CrossLayerTranscoder(
            Enumerable.Range(0, n).Select(_ => randn(f, d)).ToArray(), Enumerable.Range(0, n).Select(_ => zeros(f)).ToArray(),
            Enumerable.Range(0, n).Select(i => randn(f, n - i, d)).ToArray(), Enumerable.Range(0, n).Select(_ => zeros(d)).ToArray());
        using var _ = clt;
        using var acts = ones(1, f);
        Assert.Throws<MechanistException>(() => clt.Decode(2, 1, acts));
        using var into2 = clt.Decode(0, 2, acts);
        TensorAssert.Close(clt.WDec(0)[.., 2].sum(0, keepdim: true), into2, 1e-6, "layer 0 features into layer 2");
        Assert.Throws<MechanistException>(() => new CrossLayerTranscoder(new[] { zeros(f, d) }, new[] { zeros(f) }, new[] { zeros(f, 2, d) }, new[] { zeros(d) }));
    }

    [Fact]
    public void EveryDictionaryGivesItsEncoderRowsPreActivationsAndKindThroughTheContract()
    {
        // Hand-made weights: the contract must hand back exactly these rows and x·W_encᵀ + b_enc.
        using var wEnc = tensor(new float[] { 1, 0, 2, 0, 1, -1 }, new long[] { 2, 3 });
        using var bEnc = tensor(new float[] { 0.5f, -4f });
        using var x = tensor(new float[] { 1, 2, 3 }, new long[] { 1, 3 });
        using var two = tensor(new long[] { 1 });
        ICrossLayerDictionary clt = new CrossLayerTranscoder(new[] { wEnc.clone() }, new[] { bEnc.clone() }, new[] { zeros(2, 1, 3) }, new[] { zeros(3) });
        ICrossLayerDictionary set = new TranscoderSet(new ISparseDictionary[] { new Transcoder(wEnc.clone(), bEnc.clone(), zeros(2, 3), zeros(3), wSkip: zeros(3, 3)) });
        using var _c = clt; using var _s = set;
        foreach (var d in new[] { clt, set })
        {
            Assert.Equal(new float[] { 0, 1, -1 }, d.EncoderRows(0, two).data<float>().ToArray());
            Assert.Equal(new float[] { 1 + 6 + 0.5f, 2 - 3 - 4 }, d.PreActivations(0, x).data<float>().ToArray());
            Assert.Equal(new float[] { 7.5f, 0 }, d.Encode(0, x).data<float>().ToArray());
        }
        Assert.Equal(DictionaryKind.Clt, clt.Kind);
        Assert.Null(clt.Layer(0));
        Assert.Equal(DictionaryKind.SkipTranscoder, set.Kind);
        Assert.Equal("skip-transcoder", DictionaryNames.Kinds.Name(set.Kind));
        // Older feature stores and circuit-tracer spell kinds their own way; each reads back as one kind.
        Assert.Equal(DictionaryKind.Transcoder, DictionaryNames.Kinds.Parse("transcoders"));
        Assert.Equal(DictionaryKind.Clt, DictionaryNames.Kinds.Parse("cross_layer_transcoder"));
        Assert.Equal(TranscoderInput.Normalized, DictionaryNames.InputHooks.Parse("ln2.hook_normalized"));
        Assert.Equal("unknown dictionary kind 'crosscoder' (use sae, transcoder, skip-transcoder, clt)",
            Assert.Throws<MechanistException>(() => DictionaryNames.Kinds.Parse("crosscoder")).Message);
        // A set's layers must be of one kind.
        Assert.Throws<MechanistException>(() => new TranscoderSet(new ISparseDictionary[] { IdentitySae(3), new Transcoder(zeros(6, 3), zeros(6), zeros(6, 3), zeros(3), wSkip: zeros(3, 3)) }));
    }

    [Fact]
    public void AnSaeIsRefusedAtAPointThatIsNotOneVectorPerPosition()
    {
        using var model = Gpt2();
        int dh = model.Config.DHead;
        // hook_z is [batch, pos, heads, d_head]: its last width matches an SAE of d_head inputs, but it is not one vector per position.
        using var sae = IdentitySae(dh);
        var splice = new SaeSplice(model.HookPoints.Name(HookKind.Z, 0), sae);
        var e = Assert.Throws<MechanistException>(() => model.Run(Tokens(), new RunOptions { Splices = new[] { splice } }));
        Assert.Contains($"[batch, pos, {model.Config.NHeads}, {dh}]", e.Message);
    }

    [Fact]
    public void AnSaeWithItsErrorTermLeavesTheRunUnchangedAndFiresItsPoints()
    {
        using var model = Gpt2();
        using var scope = NewDisposeScope();
        int d = model.Config.DModel;
        string point = model.HookPoints.Name(HookKind.ResidPost, 1);
        manual_seed(0);
        using var sae = new Transcoder(randn(16, d), randn(16), randn(16, d).Mul(0.1), zeros(d)); // a poor SAE: large errors
        var splice = new SaeSplice(point, sae);
        var options = new RunOptions { Splices = new[] { splice } };
        var plain = model.Run(Tokens());
        var (spliced, cache) = model.RunWithCache(Tokens(), options: options);
        using var _c = cache;
        TensorAssert.Close(plain, spliced, 1e-5, "SAE + error term is exact");
        // The reconstruction is acts · W_dec + b_dec, by hand.
        var acts = cache[point + ".hook_sae_acts_post"];
        TensorAssert.Close(matmul(nn.functional.relu(matmul(cache[point + ".hook_sae_input"], sae.WEnc.t()).Add(sae.BEnc)), sae.WDec), cache[point + ".hook_sae_recons"], 1e-5, "recons");
        Assert.Equal(new long[] { 1, 8, 16 }, acts.shape);
        // Zeroing the error leaves the reconstruction alone: logits change.
        var noError = model.Run(Tokens(), options with { Hooks = new[] { new ForwardHookSpec(point + ".hook_sae_error", (x, _) => zeros_like(x)) } });
        Assert.True((noError - plain).abs().max().item<float>() > 1e-3);
        var typo = Assert.Throws<MechanistException>(() => model.Run(Tokens(), options with { Hooks = new[] { new ForwardHookSpec(point + ".hook_sae_act_post", (x, _) => null) } }));
        Assert.Contains("did you mean", typo.Message);
    }

    [Fact]
    public void TranscodersReplaceTheMlpsExactlyWithErrorNodesAndByHandWithout()
    {
        using var model = Gpt2();
        using var scope = NewDisposeScope();
        int d = model.Config.DModel, n = model.Config.NLayers, f = 12;
        manual_seed(3);
        var layers = Enumerable.Range(0, n).Select(_ => new Transcoder(randn(f, d), randn(f).Mul(0.1), randn(f, d).Mul(0.2), randn(d).Mul(0.1), wSkip: randn(d, d).Mul(0.05))).ToList();
        using var set = new TranscoderSet(layers);
        var (plainLogits, plain) = model.RunWithCache(Tokens());
        using var _p = plain;
        var exact = model.Run(Tokens(), new RunOptions { Splices = new[] { new TranscoderSplice(set) } });
        TensorAssert.Close(plainLogits, exact, 1e-4, "replacement with error nodes reproduces the model");

        // Without error terms, layer 0's output is by hand: ReLU(resid_mid W_encᵀ + b_enc) W_dec + b_dec + resid_mid W_skipᵀ.
        var (_, replaced) = model.RunWithCache(Tokens(), options: new RunOptions { Splices = new[] { new TranscoderSplice(set, error: ErrorTerm.None) } });
        using var _r = replaced;
        var t0 = layers[0];
        var x = replaced[HookKind.ResidMid, 0];
        var expected = matmul(nn.functional.relu(matmul(x, t0.WEnc.t()).Add(t0.BEnc)), t0.WDec).Add(t0.BDec).Add(matmul(x, t0.WSkip!.t()));
        TensorAssert.Close(expected, replaced[HookKind.MlpOut, 0], 1e-4, "transcoder output at layer 0");
        TensorAssert.Close(plain[HookKind.ResidMid, 0], x, 1e-5, "layer 0 reads the unchanged residual");

        var wrong = new TranscoderSet(Enumerable.Range(0, n - 1).Select(_ => new Transcoder(zeros(f, d), zeros(f), zeros(f, d), zeros(d))).ToList());
        using var _w = wrong;
        var e = Assert.Throws<MechanistException>(() => model.Run(Tokens(), new RunOptions { Splices = new[] { new TranscoderSplice(wrong) } }));
        Assert.Contains($"the transcoders have {n - 1} layers; the model has {n}", e.Message);
    }

    [Fact]
    public void EditingCrossLayerFeaturesChangesEveryLaterLayer()
    {
        using var model = Gpt2();
        using var scope = NewDisposeScope();
        int d = model.Config.DModel, n = model.Config.NLayers, f = 6;
        manual_seed(5);
        using var clt = new CrossLayerTranscoder(
            Enumerable.Range(0, n).Select(_ => randn(f, d)).ToArray(), Enumerable.Range(0, n).Select(_ => zeros(f)).ToArray(),
            Enumerable.Range(0, n).Select(i => randn(f, n - i, d).Mul(0.1)).ToArray(), Enumerable.Range(0, n).Select(_ => zeros(d)).ToArray());
        var splice = new TranscoderSplice(clt);
        var (_, clean) = model.RunWithCache(Tokens(), options: new RunOptions { Splices = new[] { splice } });
        using var _c = clean;
        // Set feature 2 of layer 0 to 5 at position 3: layer j's MLP output moves by 5·(new − old) W_dec_0[2, j] there, before
        // layer j reads anything changed (with frozen attention the downstream residual differences only add to this).
        string acts0 = model.HookPoints.Name(HookKind.MlpOut, 0) + ".hook_sae_acts_post";
        double old = clean[acts0][0, 3, 2].item<float>();
        var edit = new ForwardHookSpec(acts0, (a, _) => { var r = a.clone(); r[0, 3, 2] = 5f; return r; });
        var (_, edited) = model.RunWithCache(Tokens(), options: new RunOptions { Splices = new[] { splice }, Hooks = new[] { edit } });
        using var _e = edited;
        var delta0 = edited[HookKind.MlpOut, 0] - clean[HookKind.MlpOut, 0];
        TensorAssert.Close(clt.WDec(0)[2, 0].Mul(5 - old), delta0[0, 3], 1e-4, "layer 0's output moves along the decoder row");
        TensorAssert.Close(zeros(3, d), delta0[0, ..3], 0, "earlier positions are untouched");
        Assert.True((edited[HookKind.MlpOut, n - 1] - clean[HookKind.MlpOut, n - 1])[0, 3].abs().max().item<float>() > 1e-3);
    }
}
