using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>
/// A low-rank matrix kept as its factors A [m, k] · B [k, n], as TransformerLens's FactoredMatrix:
/// norms and eigenvalues come from k×k products, never the m×n matrix.
/// </summary>
public sealed class FactoredMatrix : IDisposable
{
    /// <summary>Keeps the factors (owned).</summary>
    public FactoredMatrix(Tensor a, Tensor b)
    {
        if (a.shape[^1] != b.shape[0]) throw new MechanistException("factor shapes do not chain");
        A = a.to(ScalarType.Float64).DetachFromDisposeScope(); B = b.to(ScalarType.Float64).DetachFromDisposeScope();
    }

    /// <summary>Left factor.</summary>
    public Tensor A { get; }

    /// <summary>Right factor.</summary>
    public Tensor B { get; }

    /// <summary>The full product (only for small matrices).</summary>
    public Tensor Full() => matmul(A, B);

    /// <summary>Frobenius norm, via ‖AB‖² = tr(AᵀA · BBᵀ).</summary>
    public double FrobeniusNorm()
    {
        using var scope = NewDisposeScope();
        return Math.Sqrt(Math.Max(0, (matmul(A.t(), A) * matmul(B, B.t())).sum().item<double>()));
    }

    /// <summary>Non-zero eigenvalues of AB (those of BA, k×k), as (real, imaginary).</summary>
    public (double Re, double Im)[] Eigenvalues()
    {
        using var scope = NewDisposeScope();
        var ba = matmul(B, A);
        var eig = linalg.eigvals(ba);
        var re = eig.real.data<double>().ToArray(); var im = eig.imag.data<double>().ToArray();
        return re.Zip(im).ToArray();
    }

    /// <summary>Product with another factored matrix (A·(B·C)·D kept factored through the smaller inner rank).</summary>
    public FactoredMatrix Then(FactoredMatrix next)
    {
        using var scope = NewDisposeScope();
        return A.shape[1] <= next.B.shape[0]
            ? new FactoredMatrix(A, matmul(matmul(B, next.A), next.B))
            : new FactoredMatrix(matmul(A, matmul(B, next.A)), next.B);
    }

    /// <inheritdoc/>
    public void Dispose() { A.Dispose(); B.Dispose(); }
}

/// <summary>One head's OV copying score.</summary>
/// <param name="Layer">Layer.</param>
/// <param name="Head">Head.</param>
/// <param name="CopyingScore">Σλ / Σ|λ| over the eigenvalues of W_E·W_V·W_O·W_U: 1 for a head that copies tokens.</param>
public sealed record OvCopyingScore(int Layer, int Head, double CopyingScore);

/// <summary>A composition score between an earlier and a later head.</summary>
/// <param name="Kind">"Q", "K" or "V".</param>
/// <param name="EarlierLayer">Layer of the writing head.</param>
/// <param name="EarlierHead">Writing head.</param>
/// <param name="LaterLayer">Layer of the reading head.</param>
/// <param name="LaterHead">Reading head.</param>
/// <param name="Score">‖W_A·W_B‖ / (‖W_A‖·‖W_B‖).</param>
public sealed record CompositionScore(string Kind, int EarlierLayer, int EarlierHead, int LaterLayer, int LaterHead, double Score);

/// <summary>
/// QK and OV circuits per head. Weights are taken as they are (fold norms first with
/// <see cref="WeightProcessing"/> for the TransformerLens convention). For rotary models the QK
/// circuit W_Q·W_Kᵀ is the query–key interaction at relative offset 0 only: rotation makes the real
/// interaction depend on the distance, so QK-based scores are indicative there, while OV circuits are
/// position-free and fully meaningful.
/// </summary>
public static class HeadCircuits
{
    static Tensor HeadSlice(Tensor w, int head, int dHead) => w[(head * dHead)..((head + 1) * dHead)];

    /// <summary>W_Q[h] · W_K[h]ᵀ as a factored [d_model, d_model] matrix (query side on the left).</summary>
    public static FactoredMatrix QK(HookedTransformer model, int layer, int head)
    {
        var cfg = model.Config; var b = model.Weights.Blocks[layer];
        using var scope = NewDisposeScope();
        var wq = HeadSlice(b.Wq, head, cfg.DHead).t(); // [d, dh]
        var wk = HeadSlice(b.Wk, head / cfg.HeadsPerKvHead, cfg.DHead); // [dh, d]
        return new FactoredMatrix(wq, wk);
    }

    /// <summary>W_V[h] · W_O[h] as a factored [d_model, d_model] matrix (input on the left, output on the right).</summary>
    public static FactoredMatrix OV(HookedTransformer model, int layer, int head)
    {
        var cfg = model.Config; var b = model.Weights.Blocks[layer];
        using var scope = NewDisposeScope();
        var wv = HeadSlice(b.Wv, head / cfg.HeadsPerKvHead, cfg.DHead).t(); // [d, dh]
        var wo = b.Wo[.., (head * cfg.DHead)..((head + 1) * cfg.DHead)].t(); // [dh, d]
        return new FactoredMatrix(wv, wo);
    }

    /// <summary>OV copying scores of every head over the full token circuit W_E·OV·W_U.</summary>
    public static OvCopyingScore[] CopyingScores(HookedTransformer model)
    {
        var cfg = model.Config;
        var result = new List<OvCopyingScore>();
        using var scope = NewDisposeScope();
        var we = model.Weights.WE.to(ScalarType.Float64);
        var wu = model.Weights.WU.to(ScalarType.Float64).t();
        for (int l = 0; l < cfg.NLayers; l++)
            for (int h = 0; h < cfg.NHeads; h++)
            {
                using var ov = OV(model, l, h);
                using var full = new FactoredMatrix(matmul(we, ov.A), matmul(ov.B, wu));
                var eig = full.Eigenvalues();
                double sum = eig.Sum(e => e.Re), abs = eig.Sum(e => Math.Sqrt(e.Re * e.Re + e.Im * e.Im));
                result.Add(new OvCopyingScore(l, h, abs == 0 ? 0 : sum / abs));
            }
        return result.ToArray();
    }

    /// <summary>Q-, K- and V-composition scores between every pair of heads in different layers.</summary>
    public static CompositionScore[] CompositionScores(HookedTransformer model)
    {
        var cfg = model.Config;
        var ovs = new FactoredMatrix[cfg.NLayers, cfg.NHeads];
        var qks = new FactoredMatrix[cfg.NLayers, cfg.NHeads];
        for (int l = 0; l < cfg.NLayers; l++)
            for (int h = 0; h < cfg.NHeads; h++) { ovs[l, h] = OV(model, l, h); qks[l, h] = QK(model, l, h); }
        var scores = new List<CompositionScore>();
        try
        {
            for (int l1 = 0; l1 < cfg.NLayers; l1++)
                for (int h1 = 0; h1 < cfg.NHeads; h1++)
                    for (int l2 = l1 + 1; l2 < cfg.NLayers; l2++)
                        for (int h2 = 0; h2 < cfg.NHeads; h2++)
                        {
                            using var scope = NewDisposeScope();
                            var ov = ovs[l1, h1];
                            double nOv = ov.FrobeniusNorm();
                            double Comp(FactoredMatrix reader, bool transposeReader)
                            {
                                using var r = transposeReader ? new FactoredMatrix(reader.B.t(), reader.A.t()) : new FactoredMatrix(reader.A, reader.B);
                                using var product = ov.Then(r);
                                return product.FrobeniusNorm() / (nOv * r.FrobeniusNorm());
                            }
                            // Q: the earlier head writes what the later head's queries read; K: its keys; V: its values.
                            scores.Add(new CompositionScore("Q", l1, h1, l2, h2, Comp(qks[l2, h2], false)));
                            scores.Add(new CompositionScore("K", l1, h1, l2, h2, Comp(qks[l2, h2], true)));
                            scores.Add(new CompositionScore("V", l1, h1, l2, h2, Comp(ovs[l2, h2], false)));
                        }
        }
        finally
        {
            foreach (var m in ovs) m.Dispose();
            foreach (var m in qks) m.Dispose();
        }
        return scores.ToArray();
    }
}
