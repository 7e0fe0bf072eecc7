using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Training;
using Mechanist.Tensors;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Mechanist.Tests.Dictionaries;

/// <summary>
/// TopK training's written-out step against autograd over the dense expression it replaces: x·W_encᵀ + b_enc, the k largest per row
/// kept and ReLU'd, scattered into dense activations, decoded (per layer or cross-layer, with the skip), for every parameter's gradient.
/// </summary>
public class TopKCodeFunctionTests
{
    /// <summary>The dense reference: autograd through gather, scatter and einsum.</summary>
    static (Tensor Recon, Tensor Pre) Reference(TrainableDictionary dict, Tensor x)
    {
        var pre = einsum("bld,lfd->blf", x, dict.WEnc).Add(dict.BEnc);
        var idx = pre.detach().topk(dict.K, dim: -1).indexes;
        var acts = zeros_like(pre).scatter(-1, idx, F.relu(pre.gather(-1, idx)));
        Tensor recon;
        if (dict.Kind == DictionaryKind.Clt)
        {
            var perTarget = new Tensor[dict.Layers];
            for (int t = 0; t < dict.Layers; t++)
            {
                var sum = dict.BDec[t].unsqueeze(0);
                for (int s = 0; s <= t; s++) sum = sum.Add(acts.select(1, s).matmul(dict.WDecCross![s].select(1, t - s)));
                perTarget[t] = sum;
            }
            recon = stack(perTarget, 1);
        }
        else recon = einsum("blf,lfd->bld", acts, dict.WDec!).Add(dict.BDec);
        if (dict.WSkip is not null) recon = recon.Add(einsum("bli,loi->blo", x, dict.WSkip));
        return (recon, pre);
    }

    static List<float[]> Gradients(TrainableDictionary dict, Func<Tensor, Tensor, Tensor> loss, bool written, Tensor x, Tensor weightsRecon, Tensor weightsPre)
    {
        foreach (var p in dict.Parameters) p.grad?.zero_();
        using var scope = NewDisposeScope();
        var (recon, pre) = written ? dict.TopKCode(x) : Reference(dict, x);
        loss(recon.mul(weightsRecon).sum(), pre.mul(weightsPre).sum()).backward();
        return dict.Parameters.Select(p => p.grad is null ? Array.Empty<float>() : p.grad.data<float>().ToArray()).ToList();
    }

    public static TheoryData<DictionaryKind, int> Layouts => new()
    {
        { DictionaryKind.Clt, 3 }, { DictionaryKind.SkipTranscoder, 2 }, { DictionaryKind.Transcoder, 3 }, { DictionaryKind.Sae, 1 },
    };

    [Theory]
    [MemberData(nameof(Layouts))]
    public void EveryGradientMatchesAutogradOverTheDenseExpression(DictionaryKind kind, int layers)
    {
        int d = 6, f = 20, k = 4;
        manual_seed(11);
        using var mean = randn(layers, d);
        using var dict = new TrainableDictionary(kind, TrainActivation.TopK, layers, d, d, f, k, mean, seed: 3);
        using (no_grad())
        {
            // Negative biases: about one pre-activation in five is positive, so some rows keep values ≤ 0 (ReLU's zero gradient), a skip that is not zero.
            dict.BEnc.copy_(randn(layers, f).Mul(0.5).Sub(1.0));
            dict.WSkip?.copy_(randn(layers, d, d).Mul(0.2));
        }
        using var x = randn(9, layers, d);
        using var wr = randn(9, layers, d);
        using var wp = randn(9, layers, f);
        var cases = new (string Name, Func<Tensor, Tensor, Tensor> Loss)[]
        {
            ("reconstruction only (the pre-activations unread)", (r, p) => r),
            ("reconstruction and pre-activations (an auxiliary loss)", (r, p) => r.Add(p.Mul(0.5))),
        };
        for (int step = 0; step < 2; step++)   // the second step runs on buffers the first one wrote to and reset
            foreach (var (name, loss) in cases)
            {
                var expected = Gradients(dict, loss, written: false, x, wr, wp);
                var actual = Gradients(dict, loss, written: true, x, wr, wp);
                for (int i = 0; i < expected.Count; i++)
                {
                    Assert.True(expected[i].Length == actual[i].Length, $"{kind}, {name}: parameter {i} has {actual[i].Length} gradient values, expected {expected[i].Length}");
                    double scale = expected[i].Select(Math.Abs).DefaultIfEmpty(0).Max() + 1e-6;
                    double worst = expected[i].Zip(actual[i], (a, b) => Math.Abs(a - b)).DefaultIfEmpty(0).Max();
                    Assert.True(worst <= 1e-5 * scale + 1e-6, $"{kind}, {name}, step {step}: parameter {i} differs by {worst} (max |g| {scale})");
                }
            }
        // The values too, and the statistics the trainer reads from the kept entries.
        using var scope = NewDisposeScope();
        var (refRecon, refPre) = Reference(dict, x);
        var (recon, pre) = dict.TopKCode(x);
        Assert.True(recon.detach().allclose(refRecon.detach(), 1e-5, 1e-5), $"{kind}: reconstruction differs");
        Assert.True(pre.detach().allclose(refPre.detach(), 1e-5, 1e-5), $"{kind}: pre-activations differ");
        var refActs = DictionaryActivations.Apply(DictionaryActivation.TopK, refPre.detach(), k: k);
        var (fired, active) = dict.TopKActivity();
        Assert.True(fired.eq(refActs.amax(new long[] { 0 }).Gt(0)).all().item<bool>(), $"{kind}: fired features differ");
        Assert.Equal(refActs.count_nonzero().item<long>(), active.item<long>());
    }

    [Fact]
    public void AForwardWithoutItsBackwardLeavesNoActivationsBehind()
    {
        manual_seed(5);
        using var mean = zeros(2, 4);
        using var dict = new TrainableDictionary(DictionaryKind.Clt, TrainActivation.TopK, 2, 4, 4, 12, 3, mean, seed: 1);
        using var x1 = randn(5, 2, 4);
        using var x2 = randn(5, 2, 4);
        using var scope = NewDisposeScope();
        dict.TopKCode(x1);                          // never differentiated: its entries stay in the buffer until the next forward
        var (recon, _) = dict.TopKCode(x2);
        recon.sum().backward();
        var written = dict.Parameters.Select(p => p.grad!.clone()).ToList();
        foreach (var p in dict.Parameters) p.grad!.zero_();
        Reference(dict, x2).Recon.sum().backward();
        for (int i = 0; i < written.Count; i++)
            Assert.True(written[i].allclose(dict.Parameters[i].grad!, 1e-5, 1e-6), $"parameter {i}: the first forward's activations leaked into the second");
    }
}
