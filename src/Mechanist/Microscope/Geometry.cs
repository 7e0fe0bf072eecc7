using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Microscope;

/// <summary>Linearity, intrinsic dimension and anisotropy of point clouds (rows = tokens), in float64.</summary>
public static class Geometry
{
    /// <summary>A fitted layer-to-layer linear map with the normalisation it was fitted under.</summary>
    public sealed class LinearFit : IDisposable
    {
        internal LinearFit(Tensor meanX, Tensor meanY, double normX, double normY, Tensor a, double score)
        { MeanX = meanX; MeanY = meanY; NormX = normX; NormY = normY; A = a; Score = score; }

        /// <summary>Column means subtracted from X / Y.</summary>
        public Tensor MeanX { get; }
        /// <summary>Column means subtracted from Y.</summary>
        public Tensor MeanY { get; }
        /// <summary>Frobenius norms X / Y were divided by.</summary>
        public double NormX { get; }
        /// <summary>Frobenius norm of the centred Y.</summary>
        public double NormY { get; }
        /// <summary>The least-squares map [d, d].</summary>
        public Tensor A { get; }
        /// <summary>1 − ‖XA − Y‖²_F on the normalised data.</summary>
        public double Score { get; }

        /// <summary>
        /// Per-row residual norms ‖x̃ᵢA − ỹᵢ‖ for new rows, scaled by √N of the fit so that their mean
        /// square over the fitted rows is 1 − score.
        /// </summary>
        public double[] RowErrors(Tensor x, Tensor y, long fittedRows)
        {
            using var scope = NewDisposeScope();
            var xt = (x.to(ScalarType.Float64) - MeanX).Div(NormX);
            var yt = (y.to(ScalarType.Float64) - MeanY).Div(NormY);
            return (matmul(xt, A) - yt).norm(1, false).Mul(Math.Sqrt(fittedRows)).data<double>().ToArray();
        }

        /// <inheritdoc/>
        public void Dispose() { MeanX.Dispose(); MeanY.Dispose(); A.Dispose(); }
    }

    /// <summary>
    /// The centred second moments of rows X [N, d] and Y [N, e] in float64: their column means, XcᵀXc, XcᵀYc and ‖Yc‖²_F, accumulated
    /// over blocks of rows (so the float64 copies are a block's, not N rows').
    /// </summary>
    public sealed class CentredMoments : IDisposable
    {
        /// <summary>Rows summed over.</summary>
        public long Rows { get; }
        /// <summary>Column means of X [1, d] and Y [1, e].</summary>
        public Tensor MeanX { get; }
        /// <inheritdoc cref="MeanX"/>
        public Tensor MeanY { get; }
        /// <summary>XcᵀXc [d, d].</summary>
        public Tensor XtX { get; }
        /// <summary>XcᵀYc [d, e].</summary>
        public Tensor XtY { get; }
        /// <summary>‖Yc‖²_F.</summary>
        public double YtY { get; }

        CentredMoments(long rows, Tensor meanX, Tensor meanY, Tensor xtx, Tensor xty, double yty)
        { Rows = rows; MeanX = meanX; MeanY = meanY; XtX = xtx; XtY = xty; YtY = yty; }

        /// <summary>The most float64 values a block of rows holds per side: 8M (64 MB).</summary>
        const long BlockValues = 1L << 23;

        /// <summary>The moments of <paramref name="x"/> and <paramref name="y"/> (any float dtype; the same rows).</summary>
        public static CentredMoments Of(Tensor x, Tensor y) => Of(x, y, 0);

        /// <summary>As <see cref="Of(Tensor, Tensor)"/>, in blocks of <paramref name="blockRows"/> rows (0: as many as 64 MB hold).</summary>
        internal static CentredMoments Of(Tensor x, Tensor y, long blockRows)
        {
            if (x.dim() != 2 || y.dim() != 2 || x.shape[0] != y.shape[0]) throw new ArgumentException("X and Y need to be [N, d] and [N, e] with the same rows");
            long n = x.shape[0], d = x.shape[1], e = y.shape[1];
            using var scope = NewDisposeScope();
            // Centred before the products: hidden states carry large constant offsets in a few dimensions, and Σxxᵀ − N·x̄x̄ᵀ would
            // cancel most of their digits.
            var mx = x.sum(new long[] { 0 }, keepdim: true, type: ScalarType.Float64).Div(Math.Max(1, n));
            var my = y.sum(new long[] { 0 }, keepdim: true, type: ScalarType.Float64).Div(Math.Max(1, n));
            var xtx = zeros(d, d, dtype: ScalarType.Float64); var xty = zeros(d, e, dtype: ScalarType.Float64);
            double yty = 0;
            long block = blockRows > 0 ? blockRows : Math.Max(64, BlockValues / Math.Max(d, e));
            for (long start = 0; start < n; start += block)
            {
                using var inner = NewDisposeScope();
                long rows = Math.Min(block, n - start);
                var xc = x.narrow(0, start, rows).to(ScalarType.Float64).Sub(mx);
                var yc = y.narrow(0, start, rows).to(ScalarType.Float64).Sub(my);
                xtx.AddInPlace(matmul(xc.t(), xc)); xty.AddInPlace(matmul(xc.t(), yc));
                yty += yc.Square().sum().item<double>();
            }
            return new CentredMoments(n, mx.DetachFromDisposeScope(), my.DetachFromDisposeScope(), xtx.DetachFromDisposeScope(), xty.DetachFromDisposeScope(), yty);
        }

        /// <summary>The moments of X and the update Y − X (square maps only): XcᵀUc = XcᵀYc − XcᵀXc, ‖Uc‖² = ‖Yc‖² − 2 tr XcᵀYc + tr XcᵀXc.</summary>
        public CentredMoments OfUpdate()
        {
            if (XtX.shape[1] != XtY.shape[1]) throw new ArgumentException("the update Y − X needs X and Y of the same width");
            using var scope = NewDisposeScope();
            double uu = YtY - 2 * XtY.trace().item<double>() + XtX.trace().item<double>();
            return new CentredMoments(Rows, MeanX.clone().DetachFromDisposeScope(), MeanY.Sub(MeanX).DetachFromDisposeScope(),
                XtX.clone().DetachFromDisposeScope(), XtY.Sub(XtX).DetachFromDisposeScope(), uu);
        }

        /// <inheritdoc/>
        public void Dispose() { MeanX.Dispose(); MeanY.Dispose(); XtX.Dispose(); XtY.Dispose(); }
    }

    /// <summary>
    /// LLM-Microscope's linearity score: centre X and Y, divide each by its Frobenius norm, solve min ‖XA − Y‖ by least squares,
    /// score = 1 − ‖XA − Y‖²_F. Solved in float64 through the normal equations (<see cref="FitLinear(CentredMoments)"/>).
    /// </summary>
    public static LinearFit FitLinear(Tensor x, Tensor y)
    {
        if (x.shape[0] != y.shape[0]) throw new ArgumentException("X and Y need the same rows");
        using var moments = CentredMoments.Of(x, y);
        return FitLinear(moments);
    }

    /// <summary>
    /// The linearity fit from centred moments: with X and Y divided by their Frobenius norms, G = XᵀX and B = XᵀY, A solves G A = B
    /// (least squares, so a rank-deficient G still has an answer), and ‖XA − Y‖² = 1 − 2⟨A, B⟩ + ⟨A, G A⟩.
    /// </summary>
    public static LinearFit FitLinear(CentredMoments m)
    {
        using var scope = NewDisposeScope();
        double nx2 = m.XtX.trace().item<double>(), ny2 = m.YtY;
        // The normal equations: their products are linear in the rows and the solve a fixed d × d one. LAPACK's QR of the tall X cost
        // 3-8x as much on toy-4l's states and jumped with the rows (2,560 rows of 128 took 17 ms, 3,800 rows 11 ms): no pilot run
        // could predict it.
        var (a, score) = Solve(m.XtX, m.XtY, nx2, ny2);
        return new LinearFit(m.MeanX.clone().DetachFromDisposeScope(), m.MeanY.clone().DetachFromDisposeScope(), Math.Sqrt(nx2), Math.Sqrt(ny2),
            a.DetachFromDisposeScope(), score);
    }

    static (Tensor A, double Score) Solve(Tensor cxx, Tensor cxy, double nx2, double ny2)
    {
        if (!(nx2 > 0 && ny2 > 0)) throw new MechanistException("linearity needs varying hidden states (all rows are equal)");
        var g = cxx.Div(nx2); var b = cxy.Div(Math.Sqrt(nx2 * ny2));
        var a = linalg.lstsq(g, b).Solution;
        double residual = 1 - 2 * (a * b).sum().item<double>() + (a * matmul(g, a)).sum().item<double>();
        return (a, 1 - residual);
    }

    /// <summary>
    /// TwoNN intrinsic dimension (Facco et al. 2017): μ = r₂/r₁ from each point's two nearest neighbours,
    /// a line through the origin fitted to (log μ, −log(1 − F(μ))) over the 90% smallest μ.
    /// </summary>
    public static double TwoNN(Tensor points, double discardFraction = 0.1)
    {
        using var scope = NewDisposeScope();
        // Repeated tokens give identical points (zero distances): estimate on the distinct points.
        var x = points.to(ScalarType.Float64).unique(true, false, false, 0).Item1;
        if (x.shape[0] < 3) throw new MechanistException("TwoNN needs at least three distinct points");
        var (r1, r2) = TwoNearest(x);
        var valid = r1.Gt(0);
        var mu = (r2[valid] / r1[valid]).sort().Values.data<double>().ToArray();
        int n = mu.Length;
        if (n < 3) throw new MechanistException("TwoNN needs at least three distinct points");
        int keep = (int)Math.Floor(n * (1 - discardFraction));
        double sxy = 0, sxx = 0;
        for (int i = 0; i < keep; i++)
        {
            double xi = Math.Log(mu[i]), yi = -Math.Log(1 - (i + 1.0) / n);
            sxy += xi * yi; sxx += xi * xi;
        }
        return sxx == 0 ? double.NaN : sxy / sxx;
    }

    /// <summary>
    /// Each row's distances to its nearest and second-nearest other row ([n] each), as <c>cdist</c> computes Euclidean distances
    /// (‖a‖² + ‖b‖² − 2a·b, at least 1e-30, square-rooted), a block of rows at a time: the n × n matrix is never held (at 3,000
    /// points its float64 copies cost more in page faults than the products do).
    /// </summary>
    static (Tensor Nearest, Tensor Second) TwoNearest(Tensor x)
    {
        const long Block = 256;
        long n = x.shape[0];
        var squares = x.Square().sum(1);
        var nearest = new Tensor[(n + Block - 1) / Block];
        for (long start = 0, b = 0; start < n; start += Block, b++)
        {
            using var blockScope = NewDisposeScope();
            long rows = Math.Min(Block, n - start);
            var d2 = squares.unsqueeze(0).addmm(x.narrow(0, start, rows), x.t(), 1, -2);
            d2.AddInPlace(squares.narrow(0, start, rows).unsqueeze(1));
            d2.narrow(1, start, rows).diagonal().FillInPlace(double.PositiveInfinity);
            nearest[b] = d2.topk(2, dim: 1, largest: false).values.ClampMin(1e-30).sqrt().DetachFromDisposeScope();
        }
        using var all = cat(nearest, 0);
        foreach (var t in nearest) t.Dispose();
        using var first = all[.., 0];                 // held while cloned (a temporary could be finalized mid-call)
        using var second = all[.., 1];
        return (first.clone(), second.clone());
    }

    /// <summary>Largest eigenvalue / trace of the covariance: exactly (symmetric eigendecomposition) and by power iteration.</summary>
    public static (double Exact, double PowerIteration) Anisotropy(Tensor points, int iterations = 200, long seed = 0)
    {
        using var scope = NewDisposeScope();
        var x = points.to(ScalarType.Float64);
        var xc = x - x.mean(new long[] { 0 }, keepdim: true);
        return AnisotropyOfCovariance(matmul(xc.t(), xc).Div(Math.Max(1, x.shape[0] - 1)), iterations, seed);
    }

    /// <summary>Largest eigenvalue / trace of a covariance matrix [d, d] (float64), exactly and by power iteration.</summary>
    public static (double Exact, double PowerIteration) AnisotropyOfCovariance(Tensor cov, int iterations = 200, long seed = 0)
    {
        using var scope = NewDisposeScope();
        double trace = cov.trace().item<double>();
        if (trace == 0) return (double.NaN, double.NaN);
        double exact = linalg.eigvalsh(cov).max().item<double>() / trace;
        using var generator = new Generator((ulong)seed);
        var v = randn(new long[] { cov.shape[0] }, ScalarType.Float64, generator: generator);
        for (int i = 0; i < iterations; i++) { v = matmul(cov, v); v = v / v.norm(); }
        double power = (v * matmul(cov, v)).sum().item<double>() / trace;
        return (exact, power);
    }

    /// <summary>
    /// The linearity score from sufficient statistics of N rows: Σx, Σy, XᵀX, XᵀY and Σ‖y‖² (what shards of a corpus add up to).
    /// The same fit as <see cref="FitLinear(CentredMoments)"/> (the same solve) from raw moments, centred here: each side divided by
    /// its Frobenius norm, least squares through the normal equations in float64; score = 1 − ‖XA − Y‖²_F.
    /// </summary>
    public static double LinearityFromMoments(long n, Tensor sumX, Tensor sumY, Tensor xtx, Tensor xty, double sumYSquared)
    {
        using var scope = NewDisposeScope();
        var cxx = xtx - outer(sumX, sumX).Div(n);
        var cxy = xty - outer(sumX, sumY).Div(n);
        double nx2 = cxx.trace().item<double>();
        double ny2 = sumYSquared - sumY.dot(sumY).item<double>() / n;
        return Solve(cxx, cxy, nx2, ny2).Score;
    }
}
