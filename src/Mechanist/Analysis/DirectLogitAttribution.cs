using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>One component's direct contribution.</summary>
/// <param name="Label">"embed", "3_attn_out", "L2H5", "L1N37", ...</param>
/// <param name="Value">Contribution to the logit (difference).</param>
public sealed record Contribution(string Label, double Value);

/// <summary>Direct logit attribution at one position.</summary>
/// <param name="Answer">Answer token.</param>
/// <param name="Wrong">Wrong token, when the metric is a logit difference.</param>
/// <param name="Position">Position analysed.</param>
/// <param name="Metric">The model's logit (difference) there.</param>
/// <param name="Constant">What no component writes: the final norm's bias and the unembedding bias through the answer direction.</param>
/// <param name="Components">Embeddings, each attention and MLP output: with <see cref="Constant"/> they sum to <see cref="Metric"/>.</param>
/// <param name="Heads">Each head's share of its layer's attention output (the layer's output bias is listed as "L{l} b_O").</param>
/// <param name="Neurons">The largest per-neuron contributions, when asked.</param>
public sealed record DlaResult(string Answer, string? Wrong, int Position, double Metric, double Constant,
    Contribution[] Components, Contribution[] Heads, Contribution[]? Neurons);

/// <summary>
/// Splits a logit (or logit difference) into the direct contributions of every component that writes
/// to the residual stream, scaled by the final norm as TransformerLens does (the norm's scale is
/// frozen at its value on this input, which makes the split exact).
/// </summary>
public static class DirectLogitAttribution
{
    /// <summary>Computes the attribution for one prompt [1, pos].</summary>
    public static DlaResult Compute(HookedTransformer model, Tensor tokens, long answer, long? wrong = null, int position = -1, int topNeurons = 0)
    {
        if (tokens.shape[0] != 1) throw new MechanistException("direct logit attribution takes one prompt");
        var cfg = model.Config;
        int pos = position < 0 ? (int)tokens.shape[1] + position : position;
        if (pos < 0 || pos >= tokens.shape[1]) throw new MechanistException($"position {position} is outside the prompt");
        using var scope = NewDisposeScope();
        var (logits, cache) = model.RunWithCache(tokens);
        using var _c = cache;
        var answers = new[] { answer }; var wrongs = wrong is { } w ? new[] { w } : null;
        double metric = logits[0, pos, answer].item<float>() - (wrong is { } w2 ? logits[0, pos, w2].item<float>() : 0);
        if (cfg.FinalSoftcap != null) throw new MechanistException("direct logit attribution is not linear through final logit soft-capping (Gemma-2)");

        var (stack, labels) = cache.DecomposeResid();
        var components = Attribute(cache, stack, labels, pos, answers, wrongs);
        var (heads, headLabels) = cache.StackHeadResults();
        var headAttr = Attribute(cache, heads, headLabels, pos, answers, wrongs).ToList();
        for (int l = 0; l < cfg.NLayers; l++)
            if (model.Weights.Blocks[l].Bo is { } storedBo && model.Computed(storedBo) is var bo)
                headAttr.Add(Attribute(cache, cache.FreezePostNorm(bo.expand(1, 1, tokens.shape[1], cfg.DModel), l, mlp: false), new[] { $"L{l} b_O" }, pos, answers, wrongs)[0]);

        Contribution[]? neurons = null;
        if (topNeurons > 0 && cfg.AttnOnly) throw new MechanistException($"{model.Name} is attention-only: it has no neurons to attribute");
        if (topNeurons > 0 && cfg.Moe is not null) throw new MechanistException($"{model.Name} is a mixture of experts: its neurons belong to experts each token may not use; attribute the MLP outputs instead");
        if (topNeurons > 0)
        {
            var all = new List<Contribution>();
            for (int l = 0; l < cfg.NLayers; l++)
            {
                var post = cache[HookKind.MlpPost, l][0, pos]; // [d_mlp]
                var perNeuron = (post.unsqueeze(1) * model.Weights.Blocks[l].WOut.t().to(post.dtype)).unsqueeze(1).unsqueeze(1); // [d_mlp,1,1,d]
                var expanded = cache.FreezePostNorm(perNeuron.expand(-1, 1, tokens.shape[1], -1), l, mlp: true);
                var values = Attribute(cache, expanded, Enumerable.Range(0, cfg.DMlp).Select(n => $"L{l}N{n}").ToArray(), pos, answers, wrongs);
                all.AddRange(values);
            }
            neurons = all.OrderByDescending(c => Math.Abs(c.Value)).Take(topNeurons).ToArray();
        }

        double constant = 0;
        if (model.Weights.LnFinalB is { } lb) constant += (lb.to(ScalarType.Float32) * DirectionRaw(model, answer, wrong)).sum().item<float>();
        if (model.Weights.BU is { } bu) constant += bu[answer].item<float>() - (wrong is { } w3 ? bu[w3].item<float>() : 0);
        return new DlaResult(TokenText.Of(model, answer), wrong is { } w4 ? TokenText.Of(model, w4) : null, pos, metric, constant,
            components, headAttr.ToArray(), neurons);
    }

    static Tensor DirectionRaw(HookedTransformer model, long answer, long? wrong)
    {
        var wu = model.Weights.WU.to(ScalarType.Float32);
        return wrong is { } w ? wu[answer] - wu[w] : wu[answer];
    }

    static Contribution[] Attribute(ActivationCache cache, Tensor stack, string[] labels, int pos, long[] answers, long[]? wrongs)
    {
        // [components, batch, pos, d] -> the position analysed, scaled by the final norm.
        var atPos = cache.ApplyLnToStack(stack[.., .., pos..(pos + 1)], null, false, pos);
        var values = cache.LogitAttrs(atPos[.., .., 0], answers, wrongs)[.., 0];
        var data = values.to(ScalarType.Float64).cpu().data<double>().ToArray();
        return labels.Select((l, i) => new Contribution(l, data[i])).ToArray();
    }
}
