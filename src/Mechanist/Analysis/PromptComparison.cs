using Mechanist.Tensors;
using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>Distances between two prompts' internal states at one kind of activation.</summary>
/// <param name="Activation">"resid_post", "attn_out" or "mlp_out".</param>
/// <param name="CosineDistance">[layer][position] 1 − cos.</param>
/// <param name="L2Distance">[layer][position] ‖a − b‖.</param>
public sealed record ActivationDistance(string Activation, double[][] CosineDistance, double[][] L2Distance);

/// <summary>Where two prompts' states differ, per layer and token.</summary>
/// <param name="TokensA">Tokens of the first prompt.</param>
/// <param name="TokensB">Tokens of the second prompt.</param>
/// <param name="Distances">One grid per activation kind.</param>
public sealed record PromptComparisonResult(string[] TokensA, string[] TokensB, ActivationDistance[] Distances);

/// <summary>Runs two prompts of equal length and measures how far apart their internal states are.</summary>
public static class PromptComparison
{
    static readonly HookKind[] Kinds = { HookKind.ResidPost, HookKind.AttnOut, HookKind.MlpOut };

    /// <summary>Compares prompt <paramref name="a"/> with prompt <paramref name="b"/>.</summary>
    public static PromptComparisonResult Compare(HookedTransformer model, string a, string b)
    {
        using var scope = NewDisposeScope();
        var ta = model.ToTokens(a); var tb = model.ToTokens(b);
        if (ta.shape[1] != tb.shape[1])
            throw new MechanistException($"the prompts have {ta.shape[1]} and {tb.shape[1]} tokens; compare prompts that differ in single-token words");
        var Wanted = model.HookPoints.Selector(Kinds);
        var (_, ca) = model.RunWithCache(ta, Wanted);
        var (_, cb) = model.RunWithCache(tb, Wanted);
        using var _a = ca; using var _b = cb;
        var distances = Kinds.Select(kind =>
        {
            var cos = new double[model.Config.NLayers][]; var l2 = new double[model.Config.NLayers][];
            for (int l = 0; l < model.Config.NLayers; l++)
            {
                var x = ca[kind, l][0].to(ScalarType.Float64); var y = cb[kind, l][0].to(ScalarType.Float64);
                var dot = (x * y).sum(new long[] { -1 });
                var norms = x.norm(1, true).squeeze(-1) * y.norm(1, true).squeeze(-1);
                // Two zero vectors are identical (distance 0), not undefined.
                var similarity = where(norms.Gt(0), dot / norms.ClampMin(1e-300), ones_like(dot));
                cos[l] = similarity.RSub(1.0).ClampMin(0.0).cpu().data<double>().ToArray();
                l2[l] = (x - y).norm(1, false).cpu().data<double>().ToArray();
            }
            return new ActivationDistance(HookRegistry.ShortName(kind), cos, l2);
        }).ToArray();
        return new PromptComparisonResult(TokenText.Of(model, ta[0].cpu().data<long>().ToArray()), TokenText.Of(model, tb[0].cpu().data<long>().ToArray()), distances);
    }

}
