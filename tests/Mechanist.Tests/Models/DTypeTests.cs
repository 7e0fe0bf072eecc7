using Mechanist.Hooks;
using Mechanist.IO;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Models;

/// <summary>Reduced-precision runs.</summary>
public class DTypeTests
{
    [Fact]
    public void BFloat16RunsCloseToFloat32()
    {
        string dir = SharedData.PathOf("golden", "models", "llama");
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var model = HookedTransformer.Load(dir, new LoadOptions { DType = ScalarType.BFloat16, ComputeInFloat32 = false });
        using var scope = NewDisposeScope();
        var logits = model.Run(reference.Read("input_ids"));
        Assert.Equal(ScalarType.BFloat16, logits.dtype);
        TensorAssert.Close(reference.Read("logits"), logits.to(ScalarType.Float32), 0.25, "bf16 logits (bf16 has ~3 significant digits)");
    }

    [Theory]
    [InlineData("llama")]
    [InlineData("gpt2")]
    [InlineData("gemma2")]
    [InlineData("mixtral")]
    public void BFloat16WeightsWidenedToFloat32MatchTheFloat32RunOfTheSameRoundedWeights(string arch)
    {
        // (Not BERT: its loader sums position and token-type embeddings in the load dtype, so bf16 rounds that sum twice and
        // the fp32 model rounded afterwards is not the same weights.)
        string dir = SharedData.PathOf("golden", "models", arch);
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var stored = HookedTransformer.Load(dir, new LoadOptions { DType = ScalarType.BFloat16, ComputeInFloat32 = true });
        using var rounded = HookedTransformer.Load(dir);
        using var scope = NewDisposeScope();
        Assert.Equal((ScalarType.BFloat16, ScalarType.Float32), (stored.StorageDType, stored.DType));
        Assert.All(stored.Weights.Named(), w => Assert.Equal(ScalarType.BFloat16, w.Tensor.dtype));
        foreach (var (_, w) in rounded.Weights.Named()) w.copy_(w.to(ScalarType.BFloat16).to(ScalarType.Float32));
        // At least 17 positions, so that the run widens the weights (shorter runs multiply in bf16, as decoding steps do).
        var ids = reference.Read("input_ids");
        while (ids.shape[0] * ids.shape[1] <= 16) ids = cat(new[] { ids, ids }, 1);
        var (logits, cache) = stored.RunWithCache(ids);
        using var _c = cache;
        Assert.Equal(ScalarType.Float32, logits.dtype);
        Assert.All(cache.Names.Where(k => cache[k].is_floating_point()), k => Assert.Equal(ScalarType.Float32, cache[k].dtype));
        TensorAssert.Close(rounded.Run(ids), logits, 1e-2, "bf16-stored logits vs fp32 logits of the same rounded weights");
        // Generation: the prompt's run widens, so the first new token is the rounded fp32 model's; the decoding steps after it
        // (one position each) multiply in bf16 and stay within bf16's precision of the fp32 logits.
        var prompt = ids.flatten().data<long>().Take(Math.Min(24, stored.Config.NCtx - 6)).ToArray();
        var options = new GenerateOptions { MaxNewTokens = 5, StopTokens = Array.Empty<int>() };
        var generated = stored.Generate(prompt, options).NewIds;
        Assert.True(prompt.Length > 16);
        Assert.Equal(rounded.Generate(prompt, options with { MaxNewTokens = 1 }).NewIds[0], generated[0]);
        Assert.Equal(5, generated.Length);
        var step = tensor(prompt.Concat(generated.Take(1)).ToArray()).unsqueeze(0);
        using var kv = new KvCache(stored.Config.NLayers);
        stored.Run(step[.., ..^1], new RunOptions { KvCache = kv });
        var decoded = stored.Run(step[.., ^1..], new RunOptions { KvCache = kv });
        TensorAssert.Close(rounded.Run(step)[.., ^1..], decoded, 0.25, "a bf16 decoding step against the fp32 logits");
    }

}
