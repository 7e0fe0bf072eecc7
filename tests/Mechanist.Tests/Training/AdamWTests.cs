using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Training;
using Mechanist.Training;
using static TorchSharp.torch;

namespace Mechanist.Tests.Training;

/// <summary>The optimizer and the training step's FLOP count against values worked by hand.</summary>
public class AdamWTests
{
    [Theory]
    [InlineData(ScalarType.Float32)]   // the fused one-pass update
    [InlineData(ScalarType.Float64)]   // libtorch's per-op update
    public void TwoStepsWithTheFirstClipped(ScalarType dtype)
    {
        // Hand-worked (β 0.9 / 0.999, lr 0.1, clip 1): step 1's gradient 3 is clipped to ≈ 1, so m = 0.1, v = 0.001 and
        // p = 1 − 0.1 = 0.9; step 2's gradient 0.5 is not: m = 0.14, v = 0.001249, m̂ = 0.14/0.19, v̂ = 0.001249/0.001999,
        // p = 0.9 − 0.1·m̂/√v̂ = 0.806782033 (unclipped, step 2 would land at 0.82167).
        using var p = tensor(new float[] { 1f }).to(dtype);
        using var optimizer = new AdamW(new[] { p }, beta1: 0.9, beta2: 0.999);
        foreach (var (g, expected) in new[] { (3f, 0.9000000010000003), (0.5f, 0.8067820334202929) })
        {
            optimizer.ZeroGrad();
            using (var loss = p.mul(tensor(g).to(dtype)).sum()) loss.backward();
            double norm = optimizer.Step(0.1, clip: 1.0);
            Assert.Equal(g, norm, 5);
            Assert.Equal(expected, p.to(ScalarType.Float64).item<double>(), 5);
        }
    }

    [Fact]
    public void AVectorOfParametersWithWeightDecayFollowsTheTextbookUpdate()
    {
        // A million and three values (vector lanes, threads' chunks and a scalar tail) against AdamW as written in the paper, in float64:
        // p ← p − lr·(m̂ / (√v̂ + ε) + λp) with λ applied as p·(1 − lr·λ) first (decoupled), three steps, no clipping.
        const int n = 1_000_003;
        const double lr = 0.01, decay = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
        manual_seed(4);
        using var w = randn(1, n);                                         // a matrix: decayed
        using var optimizer = new AdamW(new[] { w }, b1, b2, eps);
        var pv = w.to(ScalarType.Float64).data<double>().ToArray();
        var m = new double[n]; var v = new double[n];
        for (int step = 1; step <= 3; step++)
        {
            using var g = randn(1, n);
            var gv = g.to(ScalarType.Float64).data<double>().ToArray();
            optimizer.ZeroGrad();
            using (var loss = w.mul(g).sum()) loss.backward();
            optimizer.Step(lr, weightDecay: decay);
            for (int j = 0; j < n; j++)
            {
                m[j] = b1 * m[j] + (1 - b1) * gv[j];
                v[j] = b2 * v[j] + (1 - b2) * gv[j] * gv[j];
                double mh = m[j] / (1 - Math.Pow(b1, step)), vh = v[j] / (1 - Math.Pow(b2, step));
                pv[j] = pv[j] * (1 - lr * decay) - lr * mh / (Math.Sqrt(vh) + eps);
            }
        }
        var actual = w.to(ScalarType.Float64).data<double>().ToArray();
        double worst = 0;
        for (int j = 0; j < n; j++) worst = Math.Max(worst, Math.Abs(actual[j] - pv[j]));
        Assert.True(worst < 1e-5, $"the update drifts from the textbook one by {worst}");
    }

    [Fact]
    public void StepFlopsCountTheProductsAStepRuns()
    {
        // A CLT of 4 layers, 1,024 features, d 128, batch 1,024: the decoder writes 4 + 3 + 2 + 1 = 10 layer blocks of 1,024 × 128 (3 products
        // each: forward, input and weight gradients); the encoder 4 blocks (2 each: no gradient for the data). 2 FLOPs a multiply-add.
        var clt = new DictionaryTrainConfig(DictionaryKind.Clt, TrainActivation.TopK, 1024, 16, BatchSize: 1024);
        Assert.Equal(2.0 * 1024 * 1024 * 128 * (3 * 10 + 2 * 4), DictionaryTrainer.StepFlops(clt, 4, 128, 128));
        // A skip transcoder on one layer adds its d_in × d_out skip (2 products); a gated SAE doubles the encoder and adds its auxiliary decode.
        var skip = new DictionaryTrainConfig(DictionaryKind.SkipTranscoder, TrainActivation.TopK, 64, 4, BatchSize: 10);
        Assert.Equal(2.0 * 10 * (3 * 64 * 8 + 2 * 64 * 8 + 2 * 8 * 8), DictionaryTrainer.StepFlops(skip, 1, 8, 8));
        var gated = new DictionaryTrainConfig(DictionaryKind.Sae, TrainActivation.Gated, 64, BatchSize: 10);
        Assert.Equal(2.0 * 10 * (3 * 64 * 8 + 2 * 2 * 64 * 8 + 2 * 64 * 8), DictionaryTrainer.StepFlops(gated, 1, 8, 8));
    }
}
