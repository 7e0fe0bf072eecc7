using Mechanist.Hooks;
using Mechanist.IO;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Models;

/// <summary>BERT (masked LM, an encoder) against Hugging Face's own outputs: logits, hidden states, patterns, a right-padded batch.</summary>
public class EncoderGoldenTests
{
    const double Tol = 1e-4;

    static (HookedTransformer Model, SafetensorsFile Reference) Open()
    {
        string dir = SharedData.PathOf("golden", "models", "bert");
        return (HookedTransformer.Load(dir, new LoadOptions { Open = new ModelOpenOptions { Offline = true } }), SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors")));
    }

    [Fact]
    public void BertLogitsHiddenStatesAndBidirectionalPatternsMatch()
    {
        var (model, reference) = Open();
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var (logits, cache) = model.RunWithCache(reference.Read("input_ids"));
        using var _c = cache;
        TensorAssert.Close(reference.Read("logits"), logits, Tol, "bert logits");
        int n = model.Config.NLayers;
        // hidden_states_0 is the normalised embedding sum; hidden_states_i the output of layer i − 1.
        for (int i = 0; i < n; i++) TensorAssert.Close(reference.Read($"hidden_states_{i}"), cache[HookKind.ResidPre, i], Tol, $"bert hidden_states_{i}");
        TensorAssert.Close(reference.Read($"hidden_states_{n}"), cache[HookKind.ResidPost, n - 1], Tol, "bert last hidden state");
        for (int l = 0; l < n; l++) TensorAssert.Close(reference.Read($"attentions_{l}"), cache[HookKind.Pattern, l], Tol, $"bert attentions_{l}");
        // Bidirectional: the first query attends to the last key.
        Assert.True(cache[HookKind.Pattern, 0][0, 0, 0, -1].item<float>() > 0);
    }

    [Fact]
    public void BertRightPaddedBatchMatchesOnRealTokensAndGenerationIsRefused()
    {
        var (model, reference) = Open();
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var mask = reference.Read("attention_mask_padded");
        var (logits, cache) = model.RunWithCache(reference.Read("input_ids_padded"), options: new RunOptions { AttentionMask = mask });
        using var _c = cache;
        var real = mask.to(ScalarType.Bool);
        TensorAssert.Close(reference.Read("logits_padded")[real], logits[real], Tol, "bert padded logits");
        for (int i = 0; i < model.Config.NLayers; i++)
            TensorAssert.Close(reference.Read($"hidden_states_padded_{i}")[real], cache[HookKind.ResidPre, i][real], Tol, $"bert padded hidden_states_{i}");
        for (int l = 0; l < model.Config.NLayers; l++)
            TensorAssert.Close(reference.Read($"attentions_padded_{l}").permute(0, 2, 1, 3)[real], cache[HookKind.Pattern, l].permute(0, 2, 1, 3)[real], Tol, $"bert padded attentions_{l}");
        var e = Assert.Throws<MechanistException>(() => model.Generate(new long[] { 1, 2, 3 }, new GenerateOptions { MaxNewTokens = 2 }));
        Assert.Contains("encoder", e.Message);
    }
}
