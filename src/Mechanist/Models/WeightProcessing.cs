using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Models;

/// <summary>Which TransformerLens weight simplifications to apply.</summary>
/// <param name="FoldLn">Fold each norm's weight (and bias) into the weights that read it.</param>
/// <param name="CenterWritingWeights">Make every write to the residual stream mean-zero (LayerNorm models only).</param>
/// <param name="CenterUnembed">Subtract the mean logit direction from the unembedding (softmax-invariant; skipped with final soft-capping).</param>
/// <param name="FoldValueBiases">Move the value biases into the attention output bias (patterns sum to 1).</param>
public sealed record WeightProcessingOptions(bool FoldLn = true, bool CenterWritingWeights = true, bool CenterUnembed = true, bool FoldValueBiases = true);

/// <summary>
/// TransformerLens's weight processing: rewrites weights so that components are easier to read while
/// log-probabilities stay the same. Norm hook points still see the same normalized activations;
/// residual activations change (centred) when writing weights are centred.
/// </summary>
public static class WeightProcessing
{
    /// <summary>Applies the chosen simplifications to the model's weights in place.</summary>
    public static void Apply(HookedTransformer model, WeightProcessingOptions options)
    {
        var cfg = model.Config; var w = model.Weights;
        // Folding a norm's gain into the weights that read it is exact only when nothing sits between them that is not linear per dimension.
        if (options.FoldLn && cfg.Norm != NormKind.LayerNormNoAffine)
        {
            string? why = cfg.QkNorm ? "its q/k norms renormalise the projections that a folded gain would rescale"
                : !cfg.PreNorms ? "its blocks have no input norms to fold"
                : cfg.PostLayerNorm ? "its norms follow the residual additions (post-LN)"
                : cfg.Moe is not null ? "its MLP input norm feeds a router and experts (folding into them is not implemented)"
                : null;
            if (why is not null) throw new MechanistException($"cannot fold norms of {model.Name} ({cfg.Architecture}): {why}; process with FoldLn = false");
        }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        bool layerNorm = cfg.Norm is NormKind.LayerNorm or NormKind.LayerNormNoAffine;
        // Folding changes the unembedding but not the embedding: untie them first, as TransformerLens does.
        if (ReferenceEquals(w.WU, w.WE)) w.WU = w.WE.clone().DetachFromDisposeScope();
        if (options.FoldLn && cfg.Norm != NormKind.LayerNormNoAffine)
        {
            foreach (var b in w.Blocks)
            {
                var (w1, b1) = Gain(cfg, b.Ln1W, b.Ln1B);
                (b.Wq, b.Bq) = Fold(b.Wq, b.Bq, w1, b1);
                (b.Wk, b.Bk) = Fold(b.Wk, b.Bk, w1, b1);
                (b.Wv, b.Bv) = Fold(b.Wv, b.Bv, w1, b1);
                Release(ref b.Ln1W); Release(ref b.Ln1B);
                if (cfg.AttnOnly) continue;
                var (w2, b2) = Gain(cfg, b.Ln2W, b.Ln2B);
                (b.WIn, b.BIn) = Fold(b.WIn, b.BIn, w2, b2);
                if (b.WUp is not null) (b.WUp, b.BUp) = Fold(b.WUp, b.BUp, w2, b2);
                Release(ref b.Ln2W); Release(ref b.Ln2B);
            }
            var (wf, bf) = Gain(cfg, w.LnFinalW, w.LnFinalB);
            (w.WU, w.BU) = Fold(w.WU, w.BU, wf, bf);
            Release(ref w.LnFinalW); Release(ref w.LnFinalB);
        }
        if (options.CenterWritingWeights && layerNorm)
        {
            w.WE = Replace(w.WE, CentreRows(w.WE));
            if (w.WPos is not null) w.WPos = Replace(w.WPos, CentreRows(w.WPos));
            foreach (var b in w.Blocks)
            {
                b.Wo = Replace(b.Wo, CentreColumns(b.Wo));
                if (b.Bo is not null) b.Bo = Replace(b.Bo, b.Bo - b.Bo.mean());
                if (cfg.AttnOnly) continue;
                b.WOut = Replace(b.WOut, CentreColumns(b.WOut));
                if (b.BOut is not null) b.BOut = Replace(b.BOut, b.BOut - b.BOut.mean());
            }
        }
        // A constant shift of the logits survives softmax but not final soft-capping (Gemma-2).
        if (options.CenterUnembed && cfg.FinalSoftcap is null)
        {
            w.WU = Replace(w.WU, w.WU - w.WU.mean(new long[] { 0 }, keepdim: true));
            if (w.BU is not null) w.BU = Replace(w.BU, w.BU - w.BU.mean());
        }
        if (options.FoldValueBiases)
        {
            foreach (var b in w.Blocks)
            {
                if (b.Bv is null) continue;
                // Each query head reads its kv head's value bias; the pattern sums to 1 over keys.
                var bvPerHead = b.Bv.view(cfg.NKvHeads, cfg.DHead).repeat_interleave(cfg.HeadsPerKvHead, 0).reshape(cfg.NHeads * cfg.DHead);
                var shift = matmul(b.Wo, bvPerHead);
                b.Bo = b.Bo is null ? shift.DetachFromDisposeScope() : Replace(b.Bo, b.Bo.Add(shift));
                b.Bv = Replace(b.Bv, zeros_like(b.Bv));
            }
        }
    }

    /// <summary>The effective per-dimension gain and bias of a norm (Gemma's weight is an offset from 1).</summary>
    static (Tensor? Gain, Tensor? Bias) Gain(TransformerConfig cfg, Tensor? weight, Tensor? bias) =>
        (weight is null ? null : cfg.Norm == NormKind.RmsNormPlusOne ? weight.to(ScalarType.Float32).Add(1.0) : weight.to(ScalarType.Float32), bias);

    /// <summary>W' = W·diag(g), b' = b + W·β: the linear map absorbs the norm's affine part.</summary>
    static (Tensor W, Tensor? B) Fold(Tensor weight, Tensor? bias, Tensor? gain, Tensor? normBias)
    {
        var wf = weight.to(ScalarType.Float32);
        var newBias = normBias is null ? bias : (bias is null ? matmul(wf, normBias.to(ScalarType.Float32)) : bias.to(ScalarType.Float32).Add(matmul(wf, normBias.to(ScalarType.Float32))));
        var newWeight = gain is null ? weight : (wf * gain.unsqueeze(0)).to(weight.dtype);
        var result = (newWeight.DetachFromDisposeScope(), newBias?.to(weight.dtype).DetachFromDisposeScope());
        if (!ReferenceEquals(newWeight, weight)) weight.Dispose();
        if (bias is not null && !ReferenceEquals(newBias, bias)) bias.Dispose();
        return result;
    }

    static Tensor CentreRows(Tensor t) => t - t.mean(new long[] { -1 }, keepdim: true);

    static Tensor CentreColumns(Tensor t) => t - t.mean(new long[] { 0 }, keepdim: true);

    static Tensor Replace(Tensor old, Tensor updated)
    {
        var result = updated.to(old.dtype).contiguous().DetachFromDisposeScope();
        old.Dispose();
        return result;
    }

    static void Release(ref Tensor? t) { t?.Dispose(); t = null; }
}
