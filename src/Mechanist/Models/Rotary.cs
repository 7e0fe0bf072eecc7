using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Models;

/// <summary>
/// Rotary position embeddings, Hugging Face's "rotate half" convention: the first <c>rotary_dim</c>
/// dimensions of each head are split in two halves rotated together; cos/sin are computed in fp32.
/// </summary>
public sealed class Rotary : IDisposable
{
    readonly Tensor _cos, _sin;

    /// <summary>Precomputes cos/sin for every position up to the context length.</summary>
    public Rotary(TransformerConfig cfg, Device device)
    {
        RotaryDim = cfg.RotaryDim; Interleaved = cfg.RotaryInterleaved;
        using var scope = NewDisposeScope();
        var invFreq = InverseFrequencies(cfg);
        var positions = SafeOps.Arange(0, cfg.NCtx, dtype: ScalarType.Float32);
        var freqs = positions.unsqueeze(1) * invFreq.unsqueeze(0);
        // Half-split: [f0..fn, f0..fn]; interleaved pairs: [f0, f0, f1, f1, ...].
        var emb = Interleaved ? freqs.repeat_interleave(2, -1) : cat(new[] { freqs, freqs }, -1);
        _cos = emb.cos().to(device).DetachFromDisposeScope();
        _sin = emb.sin().to(device).DetachFromDisposeScope();
    }

    /// <summary>Rotated dimensions per head.</summary>
    public int RotaryDim { get; }

    /// <summary>Whether pairs (x[2i], x[2i+1]) rotate together (GPT-J's rotate_every_two) instead of the two halves.</summary>
    public bool Interleaved { get; }

    /// <summary>HF's inverse frequencies, with Llama-3 or linear scaling applied.</summary>
    public static Tensor InverseFrequencies(TransformerConfig cfg)
    {
        int d = cfg.RotaryDim;
        var exponents = SafeOps.Arange(0, d, 2).to(ScalarType.Float32).Div(d);
        var inv = SafeOps.PowOf(cfg.RopeTheta, exponents).RDiv(1.0);
        if (cfg.RopeScaling is not { } s) return inv;
        if (s.Type == "linear") return inv.Div(s.Factor);
        // Llama 3.1: keep high frequencies, divide low ones by the factor, interpolate between.
        double lowWavelen = s.OriginalMaxPositions / s.LowFreqFactor, highWavelen = s.OriginalMaxPositions / s.HighFreqFactor;
        var wavelen = inv.RDiv(2 * Math.PI);
        var scaled = where(wavelen.Gt(lowWavelen), inv.Div(s.Factor), inv);
        var smooth = wavelen.RDiv(s.OriginalMaxPositions).Sub(s.LowFreqFactor).Div(s.HighFreqFactor - s.LowFreqFactor);
        var smoothed = (smooth.RSub(1.0) * scaled).Div(s.Factor).Add(smooth * scaled);
        var isMedium = wavelen.Ge(highWavelen).logical_and(wavelen.Le(lowWavelen));
        return where(isMedium, smoothed, scaled);
    }

    /// <summary>cos and sin for positions [batch, pos], shaped [batch, pos, 1, rotary_dim].</summary>
    public (Tensor Cos, Tensor Sin) For(Tensor positions, ScalarType dtype)
    {
        var cos = _cos.index_select(0, positions.flatten()).view(positions.shape[0], positions.shape[1], 1, RotaryDim);
        var sin = _sin.index_select(0, positions.flatten()).view(positions.shape[0], positions.shape[1], 1, RotaryDim);
        return (cos.to(dtype), sin.to(dtype));
    }

    /// <summary>Rotates x [batch, pos, heads, d_head] (only its first rotary_dim dimensions).</summary>
    public Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long dh = x.shape[3];
        var rot = RotaryDim == dh ? x : x[.., .., .., ..RotaryDim];
        Tensor turned;
        if (Interleaved)
        {
            var even = rot[.., .., .., TensorIndex.Slice(0, null, 2)];
            var odd = rot[.., .., .., TensorIndex.Slice(1, null, 2)];
            turned = stack(new[] { -odd, even }, -1).flatten(-2);
        }
        else
        {
            long half = RotaryDim / 2;
            turned = cat(new[] { -rot[.., .., .., (int)half..], rot[.., .., .., ..(int)half] }, -1);
        }
        var rotated = (rot * cos).add(turned * sin, Mechanist.Tensors.Scalars.One);
        return RotaryDim == dh ? rotated : cat(new[] { rotated, x[.., .., .., RotaryDim..] }, -1);
    }

    /// <inheritdoc/>
    public void Dispose() { _cos.Dispose(); _sin.Dispose(); }
}
