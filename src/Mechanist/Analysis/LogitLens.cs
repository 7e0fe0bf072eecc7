using Mechanist.Tensors;
using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>The lens at one (layer, position).</summary>
/// <param name="Top">Most likely tokens.</param>
/// <param name="TargetRank">Rank of the target token (0 = top), when a target is given.</param>
/// <param name="TargetProb">Probability of the target.</param>
/// <param name="TargetLogit">Logit of the target.</param>
public sealed record LensCell(TokenPrediction[] Top, int? TargetRank, double? TargetProb, double? TargetLogit);

/// <summary>The lens at one point of the residual stream.</summary>
/// <param name="Label">"3_pre", "3_mid" or "final_post".</param>
/// <param name="Positions">One cell per position.</param>
/// <param name="Loss">Mean cross-entropy against the true next tokens (positions 0..n-2; NaN for a one-token prompt), or for an encoder against the input token at each position.</param>
/// <param name="TopTokenLoss">LLM-Microscope's variant: mean −log p of the layer's own top-1 token.</param>
public sealed record LensLayer(string Label, LensCell[] Positions, double Loss, double TopTokenLoss);

/// <summary>The logit lens over a prompt.</summary>
/// <param name="Tokens">Prompt tokens.</param>
/// <param name="Ids">Prompt ids.</param>
/// <param name="Target">The target token, if any.</param>
/// <param name="TargetId">Its id.</param>
/// <param name="Layers">Resid_pre of every layer (and resid_mid when asked), then the final residual.</param>
/// <param name="LossTarget">What each layer's loss is measured against: "next token" (causal models), or "input token" for an encoder
/// (a masked LM predicts the token at its own position).</param>
public sealed record LogitLensResult(string[] Tokens, long[] Ids, string? Target, long? TargetId, LensLayer[] Layers, string LossTarget = "next token");

/// <summary>
/// The logit lens: decode the residual stream after each layer with the final norm and the
/// unembedding, to see where the prediction forms.
/// </summary>
public static class LogitLens
{
    /// <summary>Runs the lens on one prompt [1, pos].</summary>
    public static LogitLensResult Run(HookedTransformer model, Tensor tokens, long? target = null, int topK = 5, bool includeMid = false)
    {
        if (tokens.shape[0] != 1) throw new MechanistException("the logit lens takes one prompt");
        using var scope = NewDisposeScope();
        var (_, cache) = model.RunWithCache(tokens, model.HookPoints.Selector(HookKind.ResidPre, HookKind.ResidMid, HookKind.ResidPost));
        using var _c = cache;
        var (stack, labels) = cache.AccumulatedResid(includeMid: includeMid);
        var ids = tokens[0].data<long>().ToArray();
        bool causal = model.Config.Causal;
        var layers = Layers(labels, model.UnembedResidual(stack[.., 0]), ids, x => TokenText.Of(model, x), target, topK, causal);
        return new LogitLensResult(TokenText.Of(model, ids), ids, target is { } tt ? TokenText.Of(model, tt) : null, target, layers, causal ? "next token" : "input token");
    }

    /// <summary>
    /// The lens of any model from its residual streams: <paramref name="lensLogits"/> [layers, pos, vocab] are what the
    /// unembedding (with the final norm) makes of each labelled residual; losses are against the next token
    /// (<paramref name="causal"/>) or the token at each position. Logits are logits, probabilities their softmax.
    /// </summary>
    public static LensLayer[] Layers(string[] labels, Tensor lensLogits, long[] ids, Func<long[], string[]> text, long? target, int topK, bool causal)
    {
        using var scope = NewDisposeScope();
        var logits = lensLogits.to(ScalarType.Float32);
        var logProbs = logits.log_softmax(-1);
        int pos = ids.Length;
        var layers = new LensLayer[labels.Length];
        var next = tensor(ids.Skip(causal ? 1 : 0).ToArray(), ScalarType.Int64, logits.device);
        for (int l = 0; l < labels.Length; l++)
        {
            var lp = logProbs[l];
            var topLp = lp.max(-1).values;
            var cells = new LensCell[pos];
            for (int p = 0; p < pos; p++)
            {
                var top = NextTokens.Top(text, logits[l, p], topK);
                int? rank = null; double? tprob = null, tlogit = null;
                if (target is { } t)
                {
                    double tl = lp[p, t].item<float>();
                    rank = (int)lp[p].Gt(tl).sum().item<long>();
                    tprob = Math.Exp(tl);
                    tlogit = logits[l, p, t].item<float>();
                }
                cells[p] = new LensCell(top, rank, tprob, tlogit);
            }
            double loss = !causal ? -lp.gather(1, next.unsqueeze(1)).mean().item<float>()
                : pos > 1 ? -lp[..(pos - 1)].gather(1, next.unsqueeze(1)).mean().item<float>() : double.NaN;
            double topLoss = -topLp.mean().item<float>();
            layers[l] = new LensLayer(labels[l], cells, loss, topLoss);
        }
        return layers;
    }
}
