using Mechanist.Tensors;
using Mechanist.Microscope;
using Mechanist.Models;
using Mechanist.Tests.Cli;
using static TorchSharp.torch;

namespace Mechanist.Tests.Microscope;

public class MicroscopeTests
{
    static readonly string[] Sentences =
    {
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.",
        "One day, she saw a big, red ball. She wanted to play with it, but it was too high.",
        "Tom and his mom went to the store. They bought some apples and a cake.",
        "The dog ran to the tree. It was happy and wagged its tail.",
        "Lily said, \"I want to play with your ball.\" Her friend smiled and gave it to her.",
        "The sun was bright and the sky was blue. The birds sang in the trees.",
        "Ben had a toy car. He liked to push it on the floor and make it go fast.",
        "Mom said, \"It is time for bed.\" Lily was sad, but she went to sleep.",
    };

    /// <summary>Least squares by the normal equations in plain doubles (Gauss-Jordan), independent of torch.</summary>
    static double IndependentLinearity(double[,] x, double[,] y)
    {
        int n = x.GetLength(0), d = x.GetLength(1), e = y.GetLength(1);
        double[,] Centre(double[,] m, int cols)
        {
            var r = new double[n, cols]; double norm = 0;
            for (int j = 0; j < cols; j++)
            {
                double mean = 0; for (int i = 0; i < n; i++) mean += m[i, j]; mean /= n;
                for (int i = 0; i < n; i++) { r[i, j] = m[i, j] - mean; norm += r[i, j] * r[i, j]; }
            }
            norm = Math.Sqrt(norm);
            for (int i = 0; i < n; i++) for (int j = 0; j < cols; j++) r[i, j] /= norm;
            return r;
        }
        var xn = Centre(x, d); var yn = Centre(y, e);
        var aug = new double[d, d + e];
        for (int a = 0; a < d; a++)
        {
            for (int b = 0; b < d; b++) { double s = 0; for (int i = 0; i < n; i++) s += xn[i, a] * xn[i, b]; aug[a, b] = s; }
            for (int b = 0; b < e; b++) { double s = 0; for (int i = 0; i < n; i++) s += xn[i, a] * yn[i, b]; aug[a, d + b] = s; }
        }
        for (int c = 0; c < d; c++)
        {
            int pivot = c; for (int r = c + 1; r < d; r++) if (Math.Abs(aug[r, c]) > Math.Abs(aug[pivot, c])) pivot = r;
            for (int k = 0; k < d + e; k++) (aug[c, k], aug[pivot, k]) = (aug[pivot, k], aug[c, k]);
            double p = aug[c, c];
            for (int k = 0; k < d + e; k++) aug[c, k] /= p;
            for (int r = 0; r < d; r++)
            {
                if (r == c) continue;
                double f = aug[r, c];
                for (int k = 0; k < d + e; k++) aug[r, k] -= f * aug[c, k];
            }
        }
        double residual = 0;
        for (int i = 0; i < n; i++)
            for (int b = 0; b < e; b++)
            {
                double pred = 0; for (int a = 0; a < d; a++) pred += xn[i, a] * aug[a, d + b];
                residual += (pred - yn[i, b]) * (pred - yn[i, b]);
            }
        return 1 - residual;
    }

    static double[,] ToArray(Tensor t)
    {
        var data = t.to(ScalarType.Float64).contiguous().data<double>().ToArray();
        int rows = (int)t.shape[0], cols = (int)t.shape[1];
        var a = new double[rows, cols];
        for (int i = 0; i < rows; i++) for (int j = 0; j < cols; j++) a[i, j] = data[i * cols + j];
        return a;
    }

    [Fact]
    public void LinearityOnStories260KMatchesAnIndependentSolver()
    {
        using var model = HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin"));
        using var states = CorpusStates.Collect(model, Sentences);
        Assert.True(states.RowCount > 2 * model.Config.DModel, "enough tokens for an overdetermined fit");
        for (int l = 0; l + 1 < states.Layers.Length; l++)
        {
            using var fit = Geometry.FitLinear(states.Layers[l], states.Layers[l + 1]);
            double expected = IndependentLinearity(ToArray(states.Layers[l]), ToArray(states.Layers[l + 1]));
            Assert.Equal(expected, fit.Score, 4);
            // Per-token errors: their mean square over the fitted rows is 1 − score.
            var errors = fit.RowErrors(states.Layers[l], states.Layers[l + 1], states.RowCount);
            Assert.Equal(1 - fit.Score, errors.Select(e => e * e).Average(), 6);
            using var update = states.Layers[l + 1] - states.Layers[l];
            using var centred = Geometry.FitLinear(states.Layers[l], update);
            Assert.Equal(IndependentLinearity(ToArray(states.Layers[l]), ToArray(update)), centred.Score, 4);
        }
    }

    [Fact]
    public void MomentsInBlocksAndTheUpdatesFitMatchAnIndependentSolver()
    {
        // The runner's path: moments summed over blocks of rows (13 here, so the last block is short), and the centred fit (Y − X)
        // read from the same moments, never materialising the update.
        using var model = HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin"));
        using var states = CorpusStates.Collect(model, Sentences);
        Assert.True(states.RowCount % 13 != 0 && states.RowCount > 13 * 4, $"{states.RowCount} rows: several blocks, the last one short");
        for (int l = 0; l + 1 < states.Layers.Length; l++)
        {
            using var moments = Geometry.CentredMoments.Of(states.Layers[l], states.Layers[l + 1], blockRows: 13);
            using var fit = Geometry.FitLinear(moments);
            Assert.Equal(IndependentLinearity(ToArray(states.Layers[l]), ToArray(states.Layers[l + 1])), fit.Score, 4);
            using var ofUpdate = moments.OfUpdate();
            using var centred = Geometry.FitLinear(ofUpdate);
            using var update = states.Layers[l + 1] - states.Layers[l];
            Assert.Equal(IndependentLinearity(ToArray(states.Layers[l]), ToArray(update)), centred.Score, 4);
        }
    }

    [Fact]
    public void ExactlyLinearMapsScoreOneAndNonlinearOnesFarLess()
    {
        manual_seed(1);
        using var x = randn(500, 16, ScalarType.Float64);
        using var a = randn(16, 16, ScalarType.Float64);
        using var linear = Geometry.FitLinear(x, matmul(x, a).Add(3.0));
        Assert.Equal(1.0, linear.Score, 9);
        using var nonlinear = Geometry.FitLinear(x, x.Mul(3L).sin() * x.Square());
        Assert.True(nonlinear.Score < 0.3, $"nonlinear map scored {nonlinear.Score}");
    }

    [Theory]
    [InlineData(2)]
    [InlineData(5)]
    [InlineData(10)]
    public void TwoNNRecoversTheDimensionOfASubspace(int d)
    {
        manual_seed(d);
        using var basis = linalg.qr(randn(64, d, ScalarType.Float64)).Q; // orthonormal [64, d]
        using var points = matmul(rand(2000, d, ScalarType.Float64), basis.t());
        double estimate = Geometry.TwoNN(points);
        Assert.InRange(estimate, 0.85 * d, 1.15 * d);
    }

    [Fact]
    public void TwoNNIsFaccosEstimatorOverTheDistinctPoints()
    {
        // 700 points (several blocks of rows) with every tenth repeated: the estimator written out from the paper's definition, over
        // brute-force distances between the distinct points.
        using var g = new Generator(11);
        using var raw = randn(new long[] { 630, 6 }, ScalarType.Float64, generator: g);
        var rows = raw.data<double>().ToArray();
        var points = Enumerable.Range(0, 630).Select(i => rows.Skip(i * 6).Take(6).ToArray()).ToList();
        var withRepeats = points.Concat(points.Where((_, i) => i % 9 == 0)).ToList();
        var mu = new List<double>();
        foreach (var p in points)
        {
            var distances = points.Where(q => !ReferenceEquals(p, q)).Select(q => Math.Sqrt(p.Zip(q, (a, b) => (a - b) * (a - b)).Sum())).Order().ToArray();
            mu.Add(distances[1] / distances[0]);
        }
        mu.Sort();
        int n = mu.Count, keep = (int)Math.Floor(n * 0.9);
        double sxy = 0, sxx = 0;
        for (int i = 0; i < keep; i++) { double lx = Math.Log(mu[i]), ly = -Math.Log(1 - (i + 1.0) / n); sxy += lx * ly; sxx += lx * lx; }
        using var tensor = TorchSharp.torch.tensor(withRepeats.SelectMany(p => p).ToArray(), new long[] { withRepeats.Count, 6 });
        Assert.Equal(700, withRepeats.Count);
        Assert.Equal(sxy / sxx, Geometry.TwoNN(tensor), 9);
    }

    [Fact]
    public void AnisotropyOfAnIsotropicGaussianIsOneOverD()
    {
        manual_seed(7);
        int d = 32;
        using var points = randn(20000, d, ScalarType.Float64);
        var (exact, power) = Geometry.Anisotropy(points);
        // The top eigenvalue of a sample covariance exceeds 1 by about 2·sqrt(d/N).
        Assert.InRange(exact, 1.0 / d, (1 + 2.5 * Math.Sqrt((double)d / 20000)) / d);
        Assert.Equal(exact, power, 3);
        using var stretched = points * tensor(Enumerable.Range(0, d).Select(i => i == 0 ? 10.0 : 1.0).ToArray());
        Assert.True(Geometry.Anisotropy(stretched).Exact > 0.7);
    }

    [Fact]
    public void ReportRunsEndToEndWithContextualityAndRemoval()
    {
        using var model = HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin"));
        var report = MicroscopeRunner.Run(model, Sentences, new MicroscopeOptions(
            new ContextualityOptions(ContextDecoder.Small, PrefixLength: 4, Steps: 20, BatchSize: 16, TestFraction: 0.25), new[] { 8, 16 }));
        Assert.Equal(model.Config.NLayers, report.Linearity.Length);
        Assert.Equal(model.Config.NLayers + 1, report.IntrinsicDimension.Length);
        Assert.All(report.Linearity, v => Assert.InRange(v, 0, 1));
        Assert.NotNull(report.Contextuality);
        Assert.Equal(2, report.Contextuality!.PerText.Count);
        Assert.Equal(1.0, report.Contextuality.LayerWeights.Sum(), 5);
        Assert.Contains(report.Removal!, c => c.Removed == WordClasses.Punctuation && c.Points.Length == 2);
        // The last depth's logit-lens loss is the model's own loss (the final norm is applied either way): token for token,
        // −log p(next token) from the model's logits.
        Assert.NotEmpty(report.PerText);
        foreach (var view in report.PerText)
        {
            using var tokens = model.ToTokens(Sentences[view.Index]);
            using var logProbs = model.Run(tokens)[0].to(ScalarType.Float64).log_softmax(-1);
            var ids = tokens[0].data<long>().ToArray();
            var last = view.LensLoss[^1];
            Assert.Equal(ids.Length, last.Length);
            int compared = 0;
            for (int j = 0; j + 1 < ids.Length; j++)
            {
                if (double.IsNaN(last[j])) continue;
                Assert.Equal(-logProbs[j, ids[j + 1]].item<double>(), last[j], 4);
                compared++;
            }
            Assert.True(compared >= ids.Length - 2, $"{compared} of {ids.Length} positions compared");
            Assert.True(double.IsNaN(last[^1]));
        }
    }

    [Fact]
    public void MicroscopeCommandWritesJsonHtmlAndPngs()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir.File("texts.txt"), Sentences);
        var (code, _, err) = CliRunner.Run("microscope", "-m", SharedData.PathOf("models", "stories260K", "stories260K.bin"),
            "--text-file", dir.File("texts.txt"), "--contextuality", "small", "--ctx-steps", "10", "--removal-lengths", "8",
            "--json", dir.File("report.json"), "--html", dir.File("report.html"), "--png", dir.File("png"));
        Assert.True(code == 0, err);
        // The JSON is the report record itself; the last token's lens loss (no next token) is NaN, written as "NaN" and read back.
        string text = File.ReadAllText(dir.File("report.json"));
        var json = System.Text.Json.JsonDocument.Parse(text);
        Assert.Equal(5, json.RootElement.GetProperty("linearity").GetArrayLength());
        Assert.Equal("NaN", json.RootElement.GetProperty("perText")[0].GetProperty("lensLoss")[0].EnumerateArray().Last().GetString());
        var back = System.Text.Json.JsonSerializer.Deserialize<MicroscopeReport>(text, Mechanist.Reporting.JsonFormat.Options)!;
        Assert.True(double.IsNaN(back.PerText[0].LensLoss[0][^1]));
        Assert.Equal(json.RootElement.GetProperty("linearity")[0].GetDouble(), back.Linearity[0]);
        Assert.True(new FileInfo(dir.File("png/linearity.png")).Length > 1000);
        Assert.Contains("<img src=\"data:image/png;base64,", File.ReadAllText(dir.File("report.html")));
    }

    [Fact]
    public void WordClassesOfTokens()
    {
        Assert.Equal(WordClasses.Punctuation, WordClasses.Of(","));
        Assert.Equal(WordClasses.Punctuation, WordClasses.Of(" ."));
        Assert.Equal(WordClasses.Determiner, WordClasses.Of(" the"));
        Assert.Equal(WordClasses.Determiner, WordClasses.Of("\u2581A"));
        Assert.Equal(WordClasses.StopWord, WordClasses.Of(" was"));
        Assert.Equal(WordClasses.Other, WordClasses.Of(" ball"));
    }
}

/// <summary>The microscope command's handling of one text and of BOS rows.</summary>
public class MicroscopeCommandTests
{
    static readonly string Stories = SharedData.PathOf("models", "stories260K", "stories260K.bin");

    [Fact]
    public void OneTextWorksWithContextualitySkippedAndSaidSo()
    {
        using var dir = new TempDir();
        var (code, _, err) = CliRunner.Run("microscope", "-m", Stories, "--text", "Once upon a time, there was a little girl named Lily. She loved to play.",
            "--removal-lengths", "", "--json", dir.File("r.json"));
        Assert.True(code == 0, err);
        Assert.Contains("contextuality skipped", err);
        var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(dir.File("r.json"))).RootElement;
        Assert.Equal(System.Text.Json.JsonValueKind.Null, json.GetProperty("contextuality").ValueKind);
        Assert.Equal(5, json.GetProperty("linearity").GetArrayLength());
    }

    [Fact]
    public void IncludeBosAddsOneRowPerTextToTheStatistics()
    {
        using var dir = new TempDir();
        string[] texts = { "Lily saw a big dog.", "Tom ran to the park.", "The sun was warm." };
        File.WriteAllLines(dir.File("t.txt"), texts);
        int Tokens(params string[] extra)
        {
            var (code, _, err) = CliRunner.Run(new[] { "microscope", "-m", Stories, "--text-file", dir.File("t.txt"), "--contextuality", "none", "--removal-lengths", "", "--json", dir.File("r.json") }.Concat(extra).ToArray());
            Assert.True(code == 0, err);
            return System.Text.Json.JsonDocument.Parse(File.ReadAllText(dir.File("r.json"))).RootElement.GetProperty("tokens").GetInt32();
        }
        using var model = Mechanist.Models.HookedTransformer.Load(Stories);
        int withBos = texts.Sum(t => model.Tokenizer!.Encode(t).Length);
        Assert.Equal(withBos - texts.Length, Tokens());
        Assert.Equal(withBos, Tokens("--include-bos"));
    }
}
