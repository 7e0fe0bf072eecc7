using Mechanist.Tensors;
using Mechanist.IO;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.IO;

public class CheckpointWriterTests
{
    [Theory]
    [InlineData("gpt2", false)]
    [InlineData("gpt_neox", false)]
    [InlineData("gpt_neox", true)]
    public void WrittenFoldersLoadBackToTheSameLogits(string arch, bool attnOnly)
    {
        var cfg = RandomModels.Gpt2SmallConfig() with { NLayers = 2, DModel = 32, NHeads = 4, NKvHeads = 4, DHead = 8, DMlp = 64, VocabSize = 40, NCtx = 16, AttnScale = 1 / Math.Sqrt(8), AttnOnly = attnOnly };
        if (arch == "gpt_neox") cfg = cfg with { Architecture = "gpt_neox", Positional = PositionKind.Rotary, RotaryDim = 8, Activation = "gelu" };
        using var model = RandomModels.Create(cfg, seed: 5);
        foreach (var (_, t) in model.Weights.Named()) using (no_grad()) t.AddInPlace(randn_like(t).Mul(0.1)); // non-trivial norms and biases
        using var dir = new TempDir();
        HfCheckpointWriter.Write(model, dir.Path);
        using var loaded = HookedTransformer.Load(dir.Path);
        Assert.Equal(attnOnly, loaded.Config.AttnOnly);
        using var tokens = tensor(new long[] { 1, 4, 9, 16, 25, 36, 3, 7 }, new long[] { 1, 8 });
        using var a = model.Run(tokens); using var b = loaded.Run(tokens);
        TensorAssert.Close(a, b, 0, $"{arch} written and read back");
    }
}
