using Mechanist.Hooks;
using Mechanist.IO;
using Mechanist.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace Mechanist.Tests.Models;

/// <summary>
/// Every architecture against outputs of Hugging Face transformers itself (../shared/golden):
/// logits, every hidden state, every attention pattern, left-padded batches and greedy generation.
/// </summary>
public class GoldenModelTests
{
    const double Tol = 1e-4;

    public static IEnumerable<object[]> Architectures() =>
        new[] { "gpt2", "gpt_neox", "llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "olmo", "mistral_swa", "gemma2_swa", "llama_rope_llama3", "llama_rope_linear", "qwen3", "gemma3", "starcoder2", "stablelm", "phi", "opt", "gptj", "cohere", "falcon", "olmo2", "bloom", "mixtral", "qwen2_moe" }.Select(a => new object[] { a });

    static (HookedTransformer Model, SafetensorsFile Reference) Open(string arch) => SharedData.Golden(arch);

    [Theory]
    [MemberData(nameof(Architectures))]
    public void LogitsHiddenStatesAndPatternsMatch(string arch)
    {
        var (model, reference) = Open(arch);
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var tokens = reference.Read("input_ids");
        var (logits, cache) = model.RunWithCache(tokens);
        using var _c = cache;
        TensorAssert.Close(reference.Read("logits"), logits, Tol, $"{arch} logits");
        int n = model.Config.NLayers;
        for (int i = 0; i < n; i++)
            TensorAssert.Close(reference.Read($"hidden_states_{i}"), cache["resid_pre", i], Tol, $"{arch} hidden_states_{i}");
        TensorAssert.Close(reference.Read($"hidden_states_{n}"), cache[HookNames.UnembedIn], Tol, $"{arch} final hidden state");
        for (int l = 0; l < n; l++)
            TensorAssert.Close(reference.Read($"attentions_{l}"), cache["pattern", l], Tol, $"{arch} attentions_{l}");
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void PlainRunWithFusedAttentionMatches(string arch)
    {
        // Without hooks or a cache on the scores and pattern, attention runs through libtorch's fused kernel.
        var (model, reference) = Open(arch);
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        TensorAssert.Close(reference.Read("logits"), model.Run(reference.Read("input_ids")), Tol, $"{arch} logits, fused attention");
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void LeftPaddedBatchMatchesOnRealTokens(string arch)
    {
        var (model, reference) = Open(arch);
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var mask = reference.Read("attention_mask_padded");
        var (logits, cache) = model.RunWithCache(reference.Read("input_ids_padded"), options: new RunOptions
        {
            AttentionMask = mask,
            PositionIds = reference.Read("position_ids_padded"),
        });
        using var _c = cache;
        var real = mask.to(ScalarType.Bool);
        Tensor Real(Tensor t) => t[real];
        Assert.Equal(new long[] { 27, model.Config.VocabSize }, Real(logits).shape); // 16 + 11 real tokens
        TensorAssert.Close(Real(reference.Read("logits_padded")), Real(logits), Tol, $"{arch} padded logits");
        int n = model.Config.NLayers;
        for (int i = 0; i < n; i++)
            TensorAssert.Close(Real(reference.Read($"hidden_states_padded_{i}")), Real(cache["resid_pre", i]), Tol, $"{arch} padded hidden_states_{i}");
        for (int l = 0; l < n; l++)
        {
            // Patterns [batch, head, query, key]: compare real query rows only.
            var expected = reference.Read($"attentions_padded_{l}").permute(0, 2, 1, 3)[real];
            var actual = cache["pattern", l].permute(0, 2, 1, 3)[real];
            TensorAssert.Close(expected, actual, Tol, $"{arch} padded attentions_{l}");
        }
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void DefaultPositionsFromMaskMatchPaddedReference(string arch)
    {
        var (model, reference) = Open(arch);
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var mask = reference.Read("attention_mask_padded");
        var logits = model.Run(reference.Read("input_ids_padded"), new RunOptions { AttentionMask = mask });
        var real = mask.to(ScalarType.Bool);
        TensorAssert.Close(reference.Read("logits_padded")[real], logits[real], Tol, $"{arch} padded logits, positions from mask");
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void GreedyGenerationWithKvCacheMatches(string arch)
    {
        var (model, reference) = Open(arch);
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var expected = reference.Read("generated_ids")[0].data<long>().ToArray();
        var prompt = expected.Take(6).ToArray();
        var result = model.Generate(prompt, new GenerateOptions { MaxNewTokens = 12, StopTokens = Array.Empty<int>(), ReturnLogits = true });
        Assert.Equal(expected, result.Ids);
        var stepLogits = tensor(result.StepLogits.SelectMany(x => x).ToArray(), new long[] { 12, model.Config.VocabSize });
        TensorAssert.Close(reference.Read("generated_logits"), stepLogits, Tol, $"{arch} generated logits");
    }

    [Theory]
    [InlineData("mixtral")]
    [InlineData("qwen2_moe")]
    public void RouterLogitsMatchAndOnlyTheChosenExpertsRun(string arch)
    {
        var (model, reference) = Open(arch);
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var moe = model.Config.Moe!;
        var (_, cache) = model.RunWithCache(reference.Read("input_ids"));
        using var _c = cache;
        var mask = reference.Read("attention_mask_padded");
        var (_, padded) = model.RunWithCache(reference.Read("input_ids_padded"), options: new RunOptions { AttentionMask = mask, PositionIds = reference.Read("position_ids_padded") });
        using var _p = padded;
        var real = mask.to(ScalarType.Bool).reshape(-1);
        for (int l = 0; l < model.Config.NLayers; l++)
        {
            TensorAssert.Close(reference.Read($"router_logits_{l}"), cache[HookKind.RouterLogits, l].reshape(-1, moe.Experts), Tol, $"{arch} router_logits_{l}");
            TensorAssert.Close(reference.Read($"router_logits_padded_{l}")[real], padded[HookKind.RouterLogits, l].reshape(-1, moe.Experts)[real], Tol, $"{arch} padded router_logits_{l}");
            // The chosen experts are the top-k of the router's softmax, and their weights are its probabilities (renormalised for Mixtral).
            var probs = reference.Read($"router_logits_{l}").softmax(-1);
            var (w, i) = probs.topk(moe.TopK, -1);
            Assert.Equal(i.data<long>().ToArray(), cache[HookKind.ExpertIndices, l].reshape(-1, moe.TopK).data<long>().ToArray());
            var expected = moe.NormalizeTopK ? w / w.sum(new long[] { -1 }, keepdim: true) : w;
            TensorAssert.Close(expected, cache[HookKind.ExpertWeights, l].reshape(-1, moe.TopK), Tol, $"{arch} expert weights {l}");
            // mlp_out is the weighted sum of the chosen experts' outputs (plus the shared expert for Qwen2-MoE).
            var mixed = (cache[HookKind.ExpertOut, l] * cache[HookKind.ExpertWeights, l].unsqueeze(-1)).sum(new long[] { 2 });
            if (!moe.SharedExpert) TensorAssert.Close(mixed, cache[HookKind.MlpOut, l], 1e-5, $"{arch} mlp_out {l}");
        }
        Assert.False(model.HookPoints.Has(HookKind.MlpPre));
    }
}
