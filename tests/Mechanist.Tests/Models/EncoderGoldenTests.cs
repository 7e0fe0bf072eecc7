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

    [Fact]
    public void BertsLensEndsAtHfLogitsAndMeasuresLossAgainstTheInputTokens()
    {
        var (model, reference) = Open();
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var ids = reference.Read("input_ids")[..1];
        var lens = Mechanist.Analysis.LogitLens.Run(model, ids, topK: 1);
        Assert.Equal("input token", lens.LossTarget);
        // The final layer is the model's output: HF's logits give its top tokens, and its loss is the masked LM's at every position.
        var hf = reference.Read("logits")[0].log_softmax(-1);
        var tokens = ids[0].data<long>().ToArray();
        var last = lens.Layers[^1];
        for (int p = 0; p < tokens.Length; p++) Assert.Equal(hf[p].argmax().item<long>(), last.Positions[p].Top[0].Id);
        double loss = Enumerable.Range(0, tokens.Length).Average(p => -hf[p, tokens[p]].item<float>());
        Assert.True(Math.Abs(loss - last.Loss) < 1e-4, $"{loss} vs {last.Loss}");
    }
}

/// <summary>T5 (encoder-decoder) against Hugging Face's own outputs: encoder and decoder states, self- and cross-attention, padding, greedy generation.</summary>
public class EncoderDecoderGoldenTests
{
    const double Tol = 1e-4;

    static (HookedEncoderDecoder Model, SafetensorsFile Reference) Open()
    {
        string dir = SharedData.PathOf("golden", "models", "t5");
        return (HookedEncoderDecoder.Load(dir, new ModelOpenOptions { Offline = true }), SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors")));
    }

    static void CheckStates(HookedEncoderDecoder model, SafetensorsFile reference, ActivationCache cache, Tensor logits, string suffix, Tensor? encoderRows)
    {
        Tensor Enc(Tensor t) => encoderRows is null ? t : t[encoderRows];
        TensorAssert.Close(reference.Read($"logits{suffix}"), logits, Tol, $"t5 logits{suffix}");
        var encNames = new[] { "hook_embed" }.Concat(Enumerable.Range(0, model.Config.EncoderLayers - 1).Select(l => $"encoder.{l}.hook_resid_post")).Append("encoder_final_ln.hook_normalized").ToArray();
        for (int i = 0; i < encNames.Length; i++)
            TensorAssert.Close(Enc(reference.Read($"encoder_hidden_states{suffix}_{i}")), Enc(cache[encNames[i]]), Tol, $"t5 encoder_hidden_states{suffix}_{i}");
        var decNames = new[] { "hook_decoder_embed" }.Concat(Enumerable.Range(0, model.Config.DecoderLayers - 1).Select(l => $"decoder.{l}.hook_resid_post")).Append("decoder_final_ln.hook_normalized").ToArray();
        for (int i = 0; i < decNames.Length; i++)
            TensorAssert.Close(reference.Read($"decoder_hidden_states{suffix}_{i}"), cache[decNames[i]], Tol, $"t5 decoder_hidden_states{suffix}_{i}");
        for (int l = 0; l < model.Config.EncoderLayers; l++)
            TensorAssert.Close(Enc(reference.Read($"encoder_attentions{suffix}_{l}").permute(0, 2, 1, 3)), Enc(cache[$"encoder.{l}.attn.hook_pattern"].permute(0, 2, 1, 3)), Tol, $"t5 encoder_attentions{suffix}_{l}");
        for (int l = 0; l < model.Config.DecoderLayers; l++)
        {
            TensorAssert.Close(reference.Read($"decoder_attentions{suffix}_{l}"), cache[$"decoder.{l}.attn.hook_pattern"], Tol, $"t5 decoder_attentions{suffix}_{l}");
            TensorAssert.Close(reference.Read($"cross_attentions{suffix}_{l}"), cache[$"decoder.{l}.cross_attn.hook_pattern"], Tol, $"t5 cross_attentions{suffix}_{l}");
        }
    }

    [Fact]
    public void T5EncoderDecoderStatesCrossAttentionAndPaddingMatch()
    {
        var (model, reference) = Open();
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var (logits, cache) = model.RunWithCache(reference.Read("input_ids"), reference.Read("decoder_input_ids"));
        using (cache) CheckStates(model, reference, cache, logits, "", null);
        var mask = reference.Read("attention_mask_padded");
        (logits, cache) = model.RunWithCache(reference.Read("input_ids_padded"), reference.Read("decoder_input_ids"), mask);
        using (cache) CheckStates(model, reference, cache, logits, "_padded", mask.to(ScalarType.Bool));
        Assert.Contains("decoder.1.cross_attn.hook_pattern", model.HookNames);
        Assert.Contains("did you mean 'decoder.1.cross_attn.hook_pattern'", Assert.Throws<MechanistException>(() => model.CheckHook("decoder.1.cross_attn.hook_patern")).Message);
    }

    [Fact]
    public void T5HooksRunOnTheSharedRuntimeCheckedAndScopedAsEveryModels()
    {
        var (model, reference) = Open();
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var input = reference.Read("input_ids"); var decoder = reference.Read("decoder_input_ids");
        var c = model.Config;
        // The registry knows both stacks by kind, with shapes as numbers.
        var cross = model.HookPoints.Get(HookStack.Decoder, HookKind.CrossPattern, 1);
        Assert.Equal("decoder.1.cross_attn.hook_pattern", cross.Name);
        Assert.Equal("[batch, " + c.NHeads + ", dec_pos, enc_pos]", cross.Shape.ToString());
        Assert.Equal(c.DModel, model.HookPoints.Get(HookStack.Encoder, HookKind.ResidPost, 0).Shape.Width);
        // A hook returning the wrong shape is refused, as in a decoder model (it used to be taken silently).
        string point = model.HookPoints.Name(HookStack.Encoder, HookKind.ResidPost, 0);
        var bad = new ForwardHookSpec(point, (x, _) => x[.., ..1]);
        Assert.Contains($"hook at '{point}' returned shape", Assert.Throws<MechanistException>(() => model.Forward(input, decoder, null, new[] { bad })).Message);
        // Scoped hooks apply to every run in their scope, then stop; the cache is an ActivationCache read by stack, kind and layer.
        var plain = model.Forward(input, decoder);
        using (model.Hooks(new ForwardHookSpec(model.HookPoints.Name(HookStack.Decoder, HookKind.MlpOut, 0), (x, _) => zeros_like(x))))
        {
            var (ablated, cache) = model.RunWithCache(input, decoder);
            using (cache)
            {
                Assert.Equal(0.0, cache[HookStack.Decoder, HookKind.MlpOut, 0].abs().sum().item<float>());
                Assert.True((ablated - plain).abs().max().item<float>() > 1e-4);
            }
        }
        TensorAssert.Close(plain, model.Forward(input, decoder), 0, "after the scope");
        Assert.Throws<MechanistException>(() => model.Hooks(new ForwardHookSpec("decoder.9.hook_mlp_out", (x, _) => x)));

        // The lens's last row is the model's own output, and its records hold logits as logits (a decoder model's lens does too):
        // the top token's logit is the model's logit there, its probability the softmax.
        var lens = Mechanist.Analysis.EncoderDecoderAnalyses.Lens(model, input[..1], decoder[..1]);
        var last = model.Forward(input[..1], decoder[..1])[0];
        for (int p = 0; p < lens.Ids.Length; p++)
        {
            var top = lens.Layers[^1].Positions[p].Top[0];
            Assert.Equal(last[p].argmax().item<long>(), top.Id);
            Assert.Equal(last[p].max().item<float>(), top.Logit, 3);
            Assert.Equal(last[p].softmax(-1).max().item<float>(), top.Prob, 4);
        }
    }

    [Fact]
    public void T5GreedyGenerationFromTheDecoderStartTokenMatches()
    {
        var (model, reference) = Open();
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var (ids, steps) = model.Generate(reference.Read("generation_encoder_input_ids"), 12, stopAtEos: false);
        Assert.Equal(reference.Read("generated_ids")[0].data<long>().ToArray(), ids);
        TensorAssert.Close(reference.Read("generated_logits"), tensor(steps.SelectMany(x => x).ToArray(), new long[] { 12, model.Config.VocabSize }), Tol, "t5 generated logits");
    }

    [Fact]
    public void T5GenerationWithTheKvCacheMatchesRerunningTheDecoderFarPastTheGoldenSteps()
    {
        // Past 16 positions the relative-position buckets turn logarithmic (max distance 16 in this model): 40 steps cover them.
        var (model, reference) = Open();
        using var _m = model; using var _r = reference;
        using var scope = NewDisposeScope();
        var input = reference.Read("generation_encoder_input_ids");
        var (cachedIds, cachedSteps) = model.Generate(input, 40, stopAtEos: false);
        var (fullIds, fullSteps) = model.Generate(input, 40, stopAtEos: false, useCache: false);
        Assert.Equal(fullIds, cachedIds);
        Assert.True(cachedIds.Skip(1).Distinct().Count() > 3, "the continuation varies");
        TensorAssert.Close(tensor(fullSteps.SelectMany(x => x).ToArray()), tensor(cachedSteps.SelectMany(x => x).ToArray()), 1e-4, "cached vs rerun logits");
    }
}

/// <summary>The CLI with an encoder-decoder: run with a tokens file and a cache dump, generate, hooks, and clear refusals elsewhere.</summary>
public class EncoderDecoderCliTests
{
    [Fact]
    public void RunDumpsTheCacheFromATokensFileGenerateDecodesAndOtherCommandsRefuseByKind()
    {
        string dir = SharedData.PathOf("golden", "models", "t5");
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var tmp = new TempDir();
        using (var scope = NewDisposeScope())
            SafetensorsWriter.Write(tmp.File("tokens.safetensors"), new Dictionary<string, Tensor>
            {
                ["input_ids"] = reference.Read("input_ids_padded"), ["attention_mask"] = reference.Read("attention_mask_padded"),
                ["decoder_input_ids"] = reference.Read("decoder_input_ids"),
            });
        var (code, stdout, err) = Mechanist.Tests.Cli.CliRunner.Run("run", "--model", dir, "--tokens-file", tmp.File("tokens.safetensors"), "--dump-cache", tmp.File("cache.safetensors"), "--json");
        Assert.True(code == 0, err);
        using (var cache = SafetensorsFile.Open(tmp.File("cache.safetensors")))
        using (var scope = NewDisposeScope())
        {
            TensorAssert.Close(reference.Read("logits_padded"), cache.Read("logits"), 1e-4, "dumped t5 logits");
            TensorAssert.Close(reference.Read("cross_attentions_padded_1"), cache.Read("decoder.1.cross_attn.hook_pattern"), 1e-4, "dumped cross-attention");
            Assert.Contains("encoder.2.attn.hook_pattern", cache.Names);
        }
        (code, stdout, err) = Mechanist.Tests.Cli.CliRunner.Run("generate", "--model", dir, "--tokens", string.Join(",", reference.Read("generation_encoder_input_ids")[0].data<long>().ToArray()), "-n", "12", "--json");
        Assert.True(code == 0, err);
        var ids = System.Text.Json.JsonDocument.Parse(stdout).RootElement.GetProperty("ids").EnumerateArray().Select(x => x.GetInt64()).ToArray();
        Assert.Equal(reference.Read("generated_ids")[0].data<long>().ToArray().Take(ids.Length), ids);
        (code, stdout, _) = Mechanist.Tests.Cli.CliRunner.Run("hooks", "--model", dir);
        Assert.Contains("decoder.0.cross_attn.hook_pattern", stdout);
        (code, stdout, err) = Mechanist.Tests.Cli.CliRunner.Run("lens", "--model", dir, "--tokens", "1,2,3", "--json");
        Assert.True(code == 0, err);
        Assert.Equal("dec_emb", System.Text.Json.JsonDocument.Parse(stdout).RootElement.GetProperty("layers")[0].GetProperty("label").GetString());
        (code, _, err) = Mechanist.Tests.Cli.CliRunner.Run("heads", "--model", dir);
        Assert.Equal(2, code);
        Assert.Contains("encoder-decoder", err);
        (code, _, err) = Mechanist.Tests.Cli.CliRunner.Run("run", "--model", dir, "--tokens", "1,2,3", "--dtype", "bfloat16");
        Assert.Equal(2, code);
        Assert.Contains("float32 for now", err);
    }
}

/// <summary>The logit lens and activation patching on T5.</summary>
public class EncoderDecoderAnalysisTests
{
    [Fact]
    public void TheDecoderLensEndsAtHfLogitsAndPatchingObeysItsIdentities()
    {
        string dir = SharedData.PathOf("golden", "models", "t5");
        using var model = HookedEncoderDecoder.Load(dir, new ModelOpenOptions { Offline = true });
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var scope = NewDisposeScope();
        var input = reference.Read("input_ids")[..1]; var decoder = reference.Read("decoder_input_ids")[..1];
        var lens = Mechanist.Analysis.EncoderDecoderAnalyses.Lens(model, input, decoder, target: 330);
        Assert.Equal(model.Config.DecoderLayers + 1, lens.Layers.Length);
        // The last lens layer is the model's output: HF's logits give its top tokens and its teacher-forced loss.
        var hf = reference.Read("logits")[0].log_softmax(-1);
        var last = lens.Layers[^1];
        for (int p = 0; p < decoder.shape[1]; p++) Assert.Equal(hf[p].argmax().item<long>(), last.Positions[p].Top[0].Id);
        var ids = decoder[0].data<long>().ToArray();
        double loss = Enumerable.Range(0, ids.Length - 1).Average(p => -hf[p, ids[p + 1]].item<float>());
        Assert.True(Math.Abs(loss - last.Loss) < 1e-4, $"{loss} vs {last.Loss}");
        Assert.Equal((int)(hf[^1] > hf[^1, 330]).sum().item<long>(), last.Positions[^1].TargetRank);

        // Patching: the corrupted input differs from the clean one at position 3 only.
        var corrupted = input.clone(); corrupted[0, 3] = (input[0, 3].item<long>() + 1) % model.Config.VocabSize;
        var start = tensor(new long[] { 0 }, new long[] { 1, 1 });
        var grids = Mechanist.Analysis.EncoderDecoderAnalyses.Patch(model, input, corrupted, start, 330, 332);
        var enc = grids[0]; var dec = grids[1];
        // The encoder's first input is the embedding: restoring the one differing token restores everything; the others change nothing.
        for (int p = 0; p < input.shape[1]; p++) Assert.True(Math.Abs(enc.Scores[0][p] - (p == 3 ? 1 : 0)) < 1e-5, $"encoder 0 at {p}: {enc.Scores[0][p]}");
        // The decoder's first input is its own embedding, the same in both runs.
        Assert.True(Math.Abs(dec.Scores[0][0]) < 1e-6);
        Assert.Contains("same on the clean and the corrupted", Assert.Throws<MechanistException>(() => Mechanist.Analysis.EncoderDecoderAnalyses.Patch(model, input, input, start, 330, 332)).Message);
    }
}
