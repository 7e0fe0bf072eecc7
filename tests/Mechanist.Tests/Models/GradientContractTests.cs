using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Models;

/// <summary>Frozen norms and attention against hand-computed gradients, and many backward passes over one retained forward.</summary>
public class GradientContractTests
{
    static HookedTransformer Gpt2() => HookedTransformer.Load(SharedData.PathOf("golden", "models", "gpt2"));
    static Tensor Tokens() => tensor(new long[] { 5, 17, 300, 42, 7, 99, 123, 8 }, new long[] { 1, 8 });

    [Fact]
    public void FrozenFinalNormMakesTheLogitLinearInTheResidual()
    {
        using var model = Gpt2();
        using var scope = NewDisposeScope();
        const long target = 77;
        int last = model.Config.NLayers - 1, d = model.Config.DModel;
        string resid = model.HookPoints.Name(HookKind.ResidPost, last);
        var (_, frozen) = model.RunWithCacheAndGrad(Tokens(), l => l[0, -1, target], options: new RunOptions { FreezeNormScales = true });
        using var _f = frozen;
        // By hand: logit = (P x / s) · (w ⊙ W_U[t]) + const with P = I − 11ᵀ/d (LayerNorm centres) and s frozen.
        var direction = (model.Weights.LnFinalW! * model.Weights.WU[target]).to(ScalarType.Float64);
        var centred = direction - direction.mean();
        var scale = frozen[HookNames.LnFinalScale][0, -1].to(ScalarType.Float64);
        TensorAssert.Close(centred / scale, frozen[resid + "_grad"][0, -1], 1e-5, "gradient with a frozen scale");
        // Unfrozen, the scale's own gradient adds a term along the normalised residual: the two differ.
        var (_, live) = model.RunWithCacheAndGrad(Tokens(), l => l[0, -1, target]);
        using var _l = live;
        Assert.True((live[resid + "_grad"][0, -1].to(ScalarType.Float64) - centred / scale).abs().max().item<double>() > 1e-4);
    }

    [Fact]
    public void FrozenAttentionPassesGradientOnlyThroughValues()
    {
        using var model = Gpt2();
        using var scope = NewDisposeScope();
        const long target = 77;
        var (_, cache) = model.RunWithCacheAndGrad(Tokens(), l => l[0, -1, target], options: new RunOptions { FreezeAttention = true, FusedAttention = false });
        using var _c = cache;
        // Queries and keys only shape the frozen pattern: no gradient reaches them.
        Assert.False(cache.Contains(model.HookPoints.Name(HookKind.Q, 1) + "_grad") && cache[model.HookPoints.Name(HookKind.Q, 1) + "_grad"].abs().max().item<float>() > 0);
        // z = pattern · v, so dL/dv[k, h] = Σ_q pattern[h, q, k] · dL/dz[q, h], by hand from the cached pattern.
        var pattern = cache[HookKind.Pattern, 1][0].to(ScalarType.Float64);          // [h, q, k]
        var gz = cache[model.HookPoints.Name(HookKind.Z, 1) + "_grad"][0].to(ScalarType.Float64); // [q, h, dh]
        var expected = einsum("hqk,qhd->khd", pattern, gz);
        TensorAssert.Close(expected, cache[model.HookPoints.Name(HookKind.V, 1) + "_grad"][0], 1e-6, "value gradient with frozen attention");
    }

    [Fact]
    public void ARetainedForwardServesManyInjectedBackwardPasses()
    {
        using var model = Gpt2();
        using var scope = NewDisposeScope();
        string unembedIn = HookNames.UnembedIn, resid0 = model.HookPoints.Name(HookKind.ResidPre, 1);
        using var forward = RetainedForward.Run(model, Tokens(), new[] { unembedIn, resid0 }, copies: 3);
        Assert.Equal(new long[] { 3, 8, model.Config.VocabSize }, forward.Output.shape);
        long[] targets = { 3, 77, 300 };
        for (int pass = 0; pass < 2; pass++) // the graph survives the first pass
        {
            // Row b asks for d logit[targets[b]] at the last position: the gradient at unembed.hook_in is W_U[target] there.
            var inject = zeros_like(forward.Output);
            for (int b = 0; b < 3; b++) inject[b, -1, targets[b]] = 1f;
            var grads = forward.Gradients(forward.Output, inject, new[] { unembedIn, resid0 });
            for (int b = 0; b < 3; b++)
            {
                TensorAssert.Close(model.Weights.WU[targets[b]], grads[0][b, -1], 1e-6, $"row {b}, pass {pass}");
                TensorAssert.Close(zeros(7, model.Config.DModel), grads[0][b, ..7], 0, "no gradient at earlier positions");
            }
            // Deeper: each row equals a fresh single backward pass for that target.
            var (_, single) = model.RunWithCacheAndGrad(Tokens(), l => l[0, -1, targets[1]], n => n == resid0);
            using (single) TensorAssert.Close(single[resid0 + "_grad"][0], grads[1][1], 1e-5, "batched row vs a single pass");
        }
        // Injecting at an intermediate activation works too: d(Σ resid · g)/d resid = g.
        var g = randn(3, 8, model.Config.DModel);
        TensorAssert.Close(g, forward.Gradients(forward[resid0], g, new[] { resid0 })[0], 0, "injection at the activation itself");
        var bad = Assert.Throws<MechanistException>(() => forward.Gradients(forward.Output, zeros(2, 2), new[] { resid0 }));
        Assert.Contains("injected gradient is [2, 2]", bad.Message);
    }
}
