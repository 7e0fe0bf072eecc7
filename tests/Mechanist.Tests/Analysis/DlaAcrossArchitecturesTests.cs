using Mechanist.Analysis;
using Mechanist.IO;
using Mechanist.Models;
using Mechanist.Tests.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Analysis;

/// <summary>
/// Direct logit attribution on every golden architecture: the components and the constant add up to the logit (difference) the model
/// itself outputs, or the attribution is refused with the reason it would not.
/// </summary>
public class DlaAcrossArchitecturesTests
{
    [Theory]
    [MemberData(nameof(GoldenModelTests.Architectures), MemberType = typeof(GoldenModelTests))]
    public void ComponentsSumToTheModelsLogitDifferenceOrAreRefused(string arch)
    {
        string dir = SharedData.PathOf("golden", "models", arch);
        using var model = HookedTransformer.Load(dir, new LoadOptions { Open = new ModelOpenOptions { Offline = true } });
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var scope = NewDisposeScope();
        var tokens = reference.Read("input_ids")[..1];
        if (arch.StartsWith("gemma2"))
        {
            Assert.Contains("soft-capping", Assert.Throws<MechanistException>(() => DirectLogitAttribution.Compute(model, tokens, 5, 7)).Message);
            return;
        }
        foreach (int position in new[] { -1, 2 })
        {
            var r = DirectLogitAttribution.Compute(model, tokens, 5, 7, position);
            var logits = model.Run(tokens)[0, r.Position];
            double want = logits[5].item<float>() - logits[7].item<float>();
            Assert.Equal(want, r.Metric, 4);
            double sum = r.Components.Sum(c => c.Value) + r.Constant;
            Assert.True(Math.Abs(sum - want) < 1e-3 * Math.Max(1, Math.Abs(want)), $"{arch} at {r.Position}: components sum to {sum}, the model says {want}");
        }
    }

    [Fact]
    public void APostLnEncoderIsRefusedWithTheReason()
    {
        string dir = SharedData.PathOf("golden", "models", "bert");
        using var model = HookedTransformer.Load(dir, new LoadOptions { Open = new ModelOpenOptions { Offline = true } });
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var scope = NewDisposeScope();
        var e = Assert.Throws<MechanistException>(() => DirectLogitAttribution.Compute(model, reference.Read("input_ids")[..1], 5, 7));
        Assert.Contains("post-LN", e.Message);
    }
}
