using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Hooks;

/// <summary>The registry against TransformerLens's own hook names, and the checks it makes.</summary>
public class HookRegistryTests
{
    static HookedTransformer Load(string arch) => HookedTransformer.Load(SharedData.PathOf("golden", "models", arch));

    [Fact]
    public void Gpt2BlockHasTransformerLensHookNamesInForwardOrder()
    {
        using var model = Load("gpt2");
        // TransformerLens's HookedTransformer (gpt2, use_attn_result) lists block 0 in this order.
        string[] expected =
        {
            "blocks.0.hook_resid_pre", "blocks.0.ln1.hook_scale", "blocks.0.ln1.hook_normalized", "blocks.0.attn.hook_q", "blocks.0.attn.hook_k",
            "blocks.0.attn.hook_v", "blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.0.attn.hook_result",
            "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid", "blocks.0.ln2.hook_scale", "blocks.0.ln2.hook_normalized", "blocks.0.mlp.hook_pre",
            "blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post",
        };
        Assert.Equal(expected, model.HookPoints.Points.Where(p => p.Layer == 0).Select(p => p.Name));
        Assert.Equal(new[] { "hook_embed", "hook_pos_embed" }, model.HookPoints.Points.Take(2).Select(p => p.Name));
        Assert.Equal(new[] { "ln_final.hook_scale", "ln_final.hook_normalized", "unembed.hook_in", "unembed.hook_out" }, model.HookPoints.Points.TakeLast(4).Select(p => p.Name));
        var c = model.Config;
        Assert.Equal($"[batch, pos, {c.NHeads}, {c.DHead}]", model.HookPoints.Get(HookKind.Z, 1).Shape.ToString());
        Assert.Equal($"[batch, pos, {c.VocabSize}]", model.HookPoints.Get(HookKind.UnembedOut).Shape.ToString());
        Assert.Equal(c.VocabSize, model.HookPoints.Get(HookKind.UnembedOut).Shape.Width);
        Assert.True(model.HookPoints.Get(HookKind.Pattern, 0).Shape.Fits(new long[] { 2, c.NHeads, 7, 7 }));
        Assert.False(model.HookPoints.Get(HookKind.Pattern, 0).Shape.Fits(new long[] { 2, c.NHeads + 1, 7, 7 }));
        Assert.Equal(HookKind.Pattern, HookRegistry.ParseShortName("attn"));
        Assert.Equal("blocks.2.attn.hook_pattern", HookNames.Act("pattern", 2));
    }

    [Fact]
    public void EveryRegisteredPointFiresAndOnlyThose()
    {
        foreach (var arch in new[] { "gpt2", "llama", "gemma2", "gpt_neox" })
        {
            using var model = Load(arch);
            using var tokens = tensor(new long[] { 5, 17, 300, 42 }, new long[] { 1, 4 });
            var (logits, cache) = model.RunWithCache(tokens, options: new RunOptions { UseAttnResult = true });
            using (logits) using (cache)
                Assert.Equal(model.HookPoints.Points.Select(p => p.Name).Order(), cache.Names.Order());
            var (l2, plain) = model.RunWithCache(tokens);
            using (l2) using (plain)
                Assert.Equal(model.HookPoints.Firing(attnResult: false).Select(p => p.Name).Order(), plain.Names.Order());
        }
    }

    [Fact]
    public void BackwardHookNamesAreCheckedLikeForwardOnes()
    {
        using var model = Load("gpt2");
        using var tokens = tensor(new long[] { 5, 17, 300, 42 }, new long[] { 1, 4 });
        var e = Assert.Throws<MechanistException>(() => model.RunWithCacheAndGrad(tokens, l => l[0, -1, 3], options: new RunOptions
        {
            BackwardHooks = new[] { new BackwardHookSpec("blocks.1.hook_resid_pree", (g, _) => g) },
        }));
        Assert.Contains("unknown backward hook point 'blocks.1.hook_resid_pree'; did you mean 'blocks.1.hook_resid_pre'", e.Message);
        var result = Assert.Throws<MechanistException>(() => model.RunWithHooks(tokens, new[] { new ForwardHookSpec("blocks.0.attn.hook_result", (x, _) => null) }));
        Assert.Contains("fires only in runs with per-head results", result.Message);
    }

    [Fact]
    public void AnalysesSelectByKindNotBySuffix()
    {
        using var model = Load("gpt2");
        // A spliced point named like a pattern must not be taken for one.
        var extended = model.HookPoints.With(new[] { ("blocks.0.attn.hook_z", "hook_pattern", HookShape.BatchPos(4)) });
        Assert.True(extended.Contains("blocks.0.attn.hook_z.hook_pattern"));
        Assert.Equal(HookKind.Spliced, extended.Find("blocks.0.attn.hook_z.hook_pattern")!.Kind);
        var patterns = extended.OfKind(HookKind.Pattern).Select(p => p.Name).ToArray();
        Assert.Equal(Enumerable.Range(0, model.Config.NLayers).Select(l => $"blocks.{l}.attn.hook_pattern"), patterns);
        // Spliced points sit right after their parent in forward order.
        var names = extended.Points.Select(p => p.Name).ToList();
        Assert.Equal(names.IndexOf("blocks.0.attn.hook_z") + 1, names.IndexOf("blocks.0.attn.hook_z.hook_pattern"));
    }

    [Fact]
    public void ConcurrentRunsKeepTheirOwnFusedAttentionSetting()
    {
        using var model = Load("gpt2");
        using var tokens = tensor(new long[] { 5, 17, 300, 42, 7, 99, 123, 8 }, new long[] { 1, 8 });
        // Unfused runs equal each other bit for bit; a fused one differs by rounding.
        var unfused = new RunOptions { FusedAttention = false };
        var reference = model.Run(tokens, unfused);
        using (var fused = model.Run(tokens)) Assert.True((fused - reference).abs().max().item<float>() > 0, "the fused kernel rounds differently here, so a mix-up would show");
        var failures = 0;
        Parallel.For(0, 40, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            using var scope = NewDisposeScope();
            var logits = model.Run(tokens, i % 2 == 0 ? unfused : new RunOptions());
            double diff = (logits - reference).abs().max().item<float>();
            if (i % 2 == 0 && diff != 0) Interlocked.Increment(ref failures);
            if (diff > 1e-4) Interlocked.Increment(ref failures);
        });
        reference.Dispose();
        Assert.Equal(0, failures);
    }
}
