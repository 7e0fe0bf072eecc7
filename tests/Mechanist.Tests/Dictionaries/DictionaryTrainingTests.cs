using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Formats;
using Mechanist.Dictionaries.Training;
using Mechanist.Hooks;
using Mechanist.Models;
using Mechanist.Training;
using static TorchSharp.torch;

namespace Mechanist.Tests.Dictionaries;

/// <summary>Training, evaluation and formats of dictionaries on hand-checkable cases.</summary>
public class DictionaryTrainingTests
{
    static HookedTransformer Stories() => HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin"));

    [Fact]
    public void LayerMetricsOfAPerfectAndAnEmptyDictionary()
    {
        manual_seed(0);
        int d = 4;
        using var x = randn(100, 1, d);
        using var data = new ActivationSet(x.clone(), x.clone(), 1);
        var eye = TorchSharp.torch.eye(d);
        using var identity = new Transcoder(cat(new[] { eye, -eye }, 0), zeros(2 * d), cat(new[] { eye, -eye }, 0), zeros(d));
        var perfect = DictionaryEvaluation.Layers(identity, data, chunk: 32)[0];
        Assert.Equal(0.0, perfect.Fvu, 9);
        // L0 by hand: every nonzero coordinate fires exactly one of its two features.
        Assert.Equal((x != 0).to(ScalarType.Float64).sum().item<double>() / 100, perfect.L0, 9);
        using var empty = new Transcoder(zeros(3, d), full(3, -1f), zeros(3, d), zeros(d));
        var none = DictionaryEvaluation.Layers(empty, data)[0];
        // Reconstructing nothing leaves the whole second moment: FVU = E‖x‖² / E‖x − x̄‖².
        double second = x.pow(2).sum(-1).mean().item<float>(), variance = (x - x.mean(new long[] { 0 })).pow(2).sum(-1).mean().item<float>();
        Assert.Equal(second / variance, none.Fvu, 4);
        Assert.Equal(1.0, none.DeadFraction);
        Assert.Equal(0.0, none.L0);
    }
}
