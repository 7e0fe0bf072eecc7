using Mechanist.Hooks;
using Mechanist.IO;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Hooks;

/// <summary>The cache's residual decompositions and its file.</summary>
public class ActivationCacheTests
{
    static Tensor Tokens() => tensor(new long[] { 5, 17, 300, 42, 7, 99, 123, 8 }, new long[] { 1, 8 });

    [Theory]
    [InlineData("gpt2")]
    [InlineData("gemma")]
    [InlineData("olmo")]
    public void DirectLogitAttributionsSumToTheLogit(string arch)
    {
        using var model = HookedTransformer.Load(SharedData.PathOf("golden", "models", arch));
        using var scope = NewDisposeScope();
        var (logits, cache) = model.RunWithCache(Tokens());
        using var _c = cache;
        long target = 77;
        var (stack, labels) = cache.DecomposeResid(applyLn: true);
        var lastPos = stack[.., 0, -1].unsqueeze(1); // [components, batch=1, d]
        var attrs = cache.LogitAttrs(lastPos, new[] { target });
        // The constant parts: final norm bias through the unembedding, and the unembedding bias.
        double constant = 0;
        if (model.Weights.LnFinalB is { } b) constant += (b * model.Weights.WU[target]).sum().item<float>();
        if (model.Weights.BU is { } bu) constant += bu[target].item<float>();
        double total = attrs.sum().item<float>() + constant;
        Assert.Equal(logits[0, -1, target].item<float>(), total, 4);
    }

    [Fact]
    public void SavedCacheHoldsLogitsAndActivations()
    {
        using var model = HookedTransformer.Load(SharedData.PathOf("golden", "models", "gpt2"));
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        var (logits, cache) = model.RunWithCache(Tokens(), n => n.EndsWith("hook_pattern"));
        using var _c = cache;
        cache.Save(dir.File("cache.safetensors"), new Dictionary<string, Tensor> { ["logits"] = logits });
        using var st = SafetensorsFile.Open(dir.File("cache.safetensors"));
        Assert.Equal(new[] { "blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern", "blocks.2.attn.hook_pattern", "logits" }, st.Names.OrderBy(n => n));
        TensorAssert.Close(cache["pattern", 2], st.Read("blocks.2.attn.hook_pattern"), 0, "saved pattern");
    }
}
