using Mechanist.Tensors;
using Mechanist.Hooks;
using Mechanist.IO;
using Mechanist.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Mechanist.Tests.Models;

/// <summary>Hooks change outputs exactly as hand computations say; caches hold the forward's values.</summary>
[Collection("memory")]
public class HookTests
{
    static HookedTransformer Gpt2() => HookedTransformer.Load(SharedData.PathOf("golden", "models", "gpt2"));
    static Tensor Tokens(HookedTransformer m) => tensor(new long[] { 5, 17, 300, 42, 7, 99, 123, 8 }, new long[] { 1, 8 });

    [Fact]
    public void ZeroingTheLastMlpGivesUnembedOfResidMid()
    {
        using var model = Gpt2();
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        int last = model.Config.NLayers - 1;
        var (_, cache) = model.RunWithCache(tokens);
        using var _c = cache;
        var ablated = model.RunWithHooks(tokens, new[] { new ForwardHookSpec($"blocks.{last}.hook_mlp_out", (x, _) => zeros_like(x)) });

        // By hand: LayerNorm(resid_mid) with ln_f's weights, then x W_U^T.
        var x = cache["resid_mid", last].to(ScalarType.Float64);
        var centred = x - x.mean(new long[] { -1 }, keepdim: true);
        var normed = centred / centred.Square().mean(new long[] { -1 }, keepdim: true).Add(1e-5).sqrt();
        var w = model.Weights;
        var expected = matmul((normed * w.LnFinalW!.to(ScalarType.Float64)).Add(w.LnFinalB!.to(ScalarType.Float64)), w.WU.to(ScalarType.Float64).t());
        TensorAssert.Close(expected, ablated, 1e-4, "logits with the last MLP zeroed");
    }

    [Fact]
    public void SelfAttentionPatternCopiesValues()
    {
        using var model = Gpt2();
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        // Every query attends only to itself: z must equal v at the same position.
        var (_, cache) = model.RunWithCache(tokens, options: new RunOptions
        {
            Hooks = new[] { new ForwardHookSpec("blocks.1.attn.hook_pattern", (p, _) => eye(p.shape[2]).expand(p.shape).contiguous()) },
        });
        using var _c = cache;
        TensorAssert.Close(cache["v", 1], cache["z", 1], 0, "z with an identity pattern");
        TensorAssert.Close(eye(8).expand(1, 4, 8, 8), cache["pattern", 1], 0, "the cache holds the replaced pattern");
    }

    [Fact]
    public void CacheHoldsTheForwardsValuesAndTheResidualAddsUp()
    {
        using var model = Gpt2();
        var options = new RunOptions { FusedAttention = false, UseAttnResult = true }; // bit-identical comparison of cached and uncached runs
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        Tensor? seen = null;
        var logits = model.RunWithHooks(tokens, new[] { new ForwardHookSpec("blocks.1.hook_resid_mid", (x, _) => { seen = x.clone().DetachFromDisposeScope(); return null; }) }, options: options);
        var (cachedLogits, cache) = model.RunWithCache(tokens, options: options);
        using var _c = cache;
        TensorAssert.Close(logits, cachedLogits, 0, "logits with and without a cache");
        TensorAssert.Close(seen!, cache["resid_mid", 1], 0, "cached activation vs the one the hook saw");
        for (int l = 0; l < model.Config.NLayers; l++)
        {
            TensorAssert.Close(cache["resid_pre", l].Add(cache["attn_out", l]), cache["resid_mid", l], 1e-6, $"resid_mid {l}");
            TensorAssert.Close(cache["resid_mid", l].Add(cache["mlp_out", l]), cache["resid_post", l], 1e-6, $"resid_post {l}");
            TensorAssert.Close(cache["result", l].sum(2).Add(model.Weights.Blocks[l].Bo!), cache["attn_out", l], 1e-5, $"per-head results sum to attn_out {l}");
        }
        var (parts, labels) = cache.DecomposeResid();
        Assert.Equal("embed", labels[0]); Assert.Equal("pos_embed", labels[1]);
        TensorAssert.Close(cache["resid_post", model.Config.NLayers - 1], parts.sum(dim: 0), 1e-5, "decomposed residual sums to the final residual");
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void LazyPatternsOfAFusedCachedRunEqualTheEagerOnes(string arch)
    {
        using var model = HookedTransformer.Load(SharedData.PathOf("golden", "models", arch));
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        // A full cache keeps the fused attention: its logits are the plain run's, bit for bit.
        var (lazyLogits, lazy) = model.RunWithCache(tokens);
        using var _l = lazy;
        TensorAssert.Close(model.Run(tokens), lazyLogits, 0, "cached run vs plain run");
        var (_, eager) = model.RunWithCache(tokens, options: new RunOptions { FusedAttention = false });
        using var _e = eager;
        Assert.Equal(eager.Names, lazy.Names);
        var cfg = model.Config;
        for (int l = 0; l < model.Config.NLayers; l++)
        {
            // By the definition, in float64, from the run's own queries and keys: softmax(q·kᵀ·scale + causal mask).
            bool rotary = model.HookPoints.Points.Any(x => x.Kind == HookKind.RotQ && x.Layer == l);
            var q = lazy[rotary ? HookKind.RotQ : HookKind.Q, l].to(ScalarType.Float64).permute(0, 2, 1, 3);
            var k = lazy[rotary ? HookKind.RotK : HookKind.K, l].to(ScalarType.Float64).permute(0, 2, 1, 3).repeat_interleave(cfg.HeadsPerKvHead, dim: 1);
            long p = q.shape[2];
            var byHand = matmul(q, k.transpose(2, 3)).Mul(cfg.AttnScale).MaskedFill(ones(p, p).triu(1).to(ScalarType.Bool), double.NegativeInfinity).softmax(-1);
            TensorAssert.Close(byHand.to(ScalarType.Float32), lazy["pattern", l], 1e-6, $"{arch} pattern {l} by hand");
            // The unfused run's pattern: equal up to what the fused kernel's rounding in earlier layers carries forward.
            TensorAssert.Close(eager["pattern", l], lazy["pattern", l], 1e-5, $"{arch} pattern {l}");
            // Masked entries hold the dtype's minimum in both; compare the causal part.
            var mask = ones(8, 8).tril().to(ScalarType.Bool);
            TensorAssert.Close(eager["attn_scores", l].masked_select(mask.expand_as(eager["attn_scores", l])),
                lazy["attn_scores", l].masked_select(mask.expand_as(lazy["attn_scores", l])), 1e-5, $"{arch} scores {l}");
        }
        // A hook that edits the pattern still runs on the real one and changes the output.
        var edited = model.RunWithHooks(tokens, new[] { new ForwardHookSpec("blocks.0.attn.hook_pattern", (p, _) => eye(p.shape[2]).expand(p.shape).contiguous()) });
        Assert.True((edited - lazyLogits).abs().max().item<float>() > 1e-3);
    }

    [Fact]
    public void StopAndStartAtALayerSplitTheForward()
    {
        using var model = Gpt2();
        var unfused = new RunOptions { FusedAttention = false }; // bit-identical comparison with the cached run
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        var full = model.Run(tokens, unfused);
        var resid = model.Run(tokens, unfused with { StopAtLayer = 2 });
        var (_, cache) = model.RunWithCache(tokens, options: unfused);
        using var _c = cache;
        TensorAssert.Close(cache["resid_pre", 2], resid, 0, "stop_at_layer returns the residual entering the layer");
        TensorAssert.Close(full, model.Run(resid, unfused with { StartAtLayer = 2 }), 1e-6, "start_at_layer continues the forward");
        // Skipping the unembedding returns what it would have read: the final norm's output, whose product with W_U is the logits.
        var unembedIn = model.Run(tokens, unfused with { SkipUnembedding = true });
        TensorAssert.Close(cache[HookNames.UnembedIn], unembedIn, 0, "the run stops at unembed.hook_in");
        var product = matmul(unembedIn, model.Weights.WU.t());
        TensorAssert.Close(full, model.Weights.BU is { } bias ? product.add(bias, Mechanist.Tensors.Scalars.One) : product, 1e-4, "its product with the unembedding is the logits");
    }

    [Fact]
    public void ScopedPermanentAndUnknownHooks()
    {
        using var model = Gpt2();
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        var clean = model.Run(tokens);
        var zeroEmbed = new ForwardHookSpec(HookNames.PosEmbed, (x, _) => zeros_like(x));
        Tensor hooked;
        using (model.Hooks(zeroEmbed)) hooked = model.Run(tokens);
        Assert.True((hooked - clean).abs().max().item<float>() > 1e-3);
        TensorAssert.Close(clean, model.Run(tokens), 0, "scoped hooks are gone after disposal");
        model.AddPermanentHook(HookNames.PosEmbed, (x, _) => zeros_like(x));
        TensorAssert.Close(hooked, model.Run(tokens), 0, "permanent hook");
        model.ResetHooks();
        TensorAssert.Close(clean, model.Run(tokens), 0, "after ResetHooks");

        var e = Assert.Throws<MechanistException>(() => model.RunWithHooks(tokens, new[] { new ForwardHookSpec("blocks.1.attn.hook_patern", (x, _) => null) }));
        Assert.Contains("unknown hook point 'blocks.1.attn.hook_patern'; did you mean 'blocks.1.attn.hook_pattern'", e.Message);
        var shape = Assert.Throws<MechanistException>(() => model.RunWithHooks(tokens, new[] { new ForwardHookSpec("hook_embed", (x, _) => zeros(3)) }));
        Assert.Contains("returned shape [3]", shape.Message);
    }

    [Fact]
    public void GradientsAtHookPointsAndBackwardHooks()
    {
        using var model = Gpt2();
        using var scope = NewDisposeScope();
        var tokens = Tokens(model);
        const long target = 123;
        Tensor Metric(Tensor logits) => logits[0, -1, target];
        var (_, cache) = model.RunWithCacheAndGrad(tokens, Metric);
        using var _c = cache;
        // d logit[target] / d unembed.hook_in is W_U[target] at the last position and zero elsewhere.
        var grad = cache[HookNames.UnembedIn + "_grad"];
        TensorAssert.Close(model.Weights.WU[target], grad[0, -1], 1e-6, "gradient at unembed.hook_in");
        TensorAssert.Close(zeros(7, model.Config.DModel), grad[0, ..7], 0, "no gradient at earlier positions");

        // A backward hook that doubles the gradient at resid_pre 1 doubles the gradient reaching the embedding.
        var (_, doubled) = model.RunWithCacheAndGrad(tokens, Metric, options: new RunOptions
        {
            BackwardHooks = new[] { new BackwardHookSpec("blocks.1.hook_resid_pre", (g, _) => g.Mul(2L)) },
        });
        using var _d = doubled;
        var viaResidual = cache["blocks.0.hook_resid_pre_grad"];
        Assert.True(viaResidual.abs().max().item<float>() > 1e-4);
        TensorAssert.Close(cache["blocks.1.hook_resid_pre_grad"], doubled["blocks.1.hook_resid_pre_grad"], 1e-6, "the hook point's own gradient is unchanged");
        TensorAssert.Close(cache[HookNames.Embed + "_grad"].Mul(2L), doubled[HookNames.Embed + "_grad"], 1e-5, "gradient upstream of the hook doubles");
    }

    [Fact]
    public void RightPaddingLeavesRealTokensUnchanged()
    {
        using var model = HookedTransformer.Load(SharedData.PathOf("golden", "models", "llama"));
        using var scope = NewDisposeScope();
        var row = tensor(new long[] { 5, 17, 300, 42, 7 }, new long[] { 1, 5 });
        var padded = tensor(new long[] { 5, 17, 300, 42, 7, 0, 0, 0, 9, 10, 11, 12, 13, 14, 15, 16 }, new long[] { 2, 8 });
        var mask = tensor(new long[] { 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1 }, new long[] { 2, 8 });
        var expected = model.Run(row);
        var logits = model.Run(padded, new RunOptions { AttentionMask = mask });
        TensorAssert.Close(expected[0], logits[0, ..5], 1e-5, "right-padded row");
    }

    [Fact]
    public void ThousandRunsLeaveNoLiveTensors()
    {
        using var model = HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin"));
        using var tokens = model.ToTokens("Once upon a time, there was a little girl named Lily. She loved to play outside.");
        void Runs(int n)
        {
            for (int i = 0; i < n; i++)
            {
                var (logits, cache) = model.RunWithCache(tokens);
                logits.Dispose(); cache.Dispose();
                model.Run(tokens).Dispose();
            }
        }
        Runs(10);
        long live = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        Runs(1000);
        // Every tensor a run makes is freed (resident memory over many runs is measured by the benchmark, not here).
        Assert.Equal(live, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }
}

/// <summary>Tests that measure process memory run alone, not beside other test classes.</summary>
[CollectionDefinition("memory", DisableParallelization = true)]
public class MemoryCollection;
