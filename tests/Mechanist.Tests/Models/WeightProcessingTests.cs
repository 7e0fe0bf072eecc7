using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Models;

public class WeightProcessingTests
{
    public static IEnumerable<object[]> Architectures() =>
        new[] { "gpt2", "gpt_neox", "llama", "qwen2", "gemma", "gemma2", "phi3", "olmo", "opt", "gptj", "bloom", "phi", "stablelm", "falcon", "starcoder2", "cohere" }.Select(a => new object[] { a });

    [Theory]
    [MemberData(nameof(Architectures))]
    public void LogProbsAreUnchanged(string arch)
    {
        string dir = SharedData.PathOf("golden", "models", arch);
        using var reference = Mechanist.IO.SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var model = HookedTransformer.Load(dir);
        using var scope = NewDisposeScope();
        var tokens = reference.Read("input_ids");
        var before = model.Run(tokens).log_softmax(-1);
        WeightProcessing.Apply(model, new WeightProcessingOptions());
        Assert.Null(model.Weights.LnFinalW);
        var after = model.Run(tokens);
        TensorAssert.Close(before, after.log_softmax(-1), 1e-4, $"{arch} log-probs after weight processing");
        // The HF golden log-probs too, so the check does not rest on the model's own first run.
        TensorAssert.Close(reference.Read("logits").log_softmax(-1), after.log_softmax(-1), 1e-4, $"{arch} vs HF");
        if (model.Config.Norm == NormKind.LayerNorm)
        {
            // Centred writing weights: the embedding and every write to the residual are mean-zero.
            Assert.True(model.Weights.WE.mean(new long[] { -1 }).abs().max().item<float>() < 1e-5);
            Assert.True(model.Weights.Blocks[0].Wo.mean(new long[] { 0 }).abs().max().item<float>() < 1e-5);
        }
        if (model.Weights.Blocks[0].Bv is { } bv) Assert.Equal(0f, bv.abs().max().item<float>());
    }

    [Theory]
    [InlineData("qwen3", "q/k norms")]
    [InlineData("gemma3", "q/k norms")]
    [InlineData("olmo2", "q/k norms")]
    [InlineData("bert", "post-LN")]
    [InlineData("mixtral", "router")]
    public void FoldingIsRefusedWhereItWouldChangeTheModel(string arch, string why)
    {
        using var model = HookedTransformer.Load(SharedData.PathOf("golden", "models", arch));
        var e = Assert.Throws<MechanistException>(() => WeightProcessing.Apply(model, new WeightProcessingOptions()));
        Assert.Contains(why, e.Message);
    }
}
