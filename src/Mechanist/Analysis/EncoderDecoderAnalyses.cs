using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>One attention stack's patterns: rows are query tokens, columns key tokens.</summary>
/// <param name="Name">"encoder", "decoder" (self-attention) or "cross" (decoder queries over encoder keys).</param>
/// <param name="Hook">The hook point the patterns come from, with L for the layer (e.g. <c>decoder.L.cross_attn.hook_pattern</c>).</param>
/// <param name="Queries">Query tokens.</param>
/// <param name="Keys">Key tokens.</param>
/// <param name="Causal">Whether each query sees only earlier keys.</param>
/// <param name="Layers">Layers of the stack.</param>
/// <param name="HeadsPerLayer">Heads per layer.</param>
/// <param name="Heads">The selected heads' patterns.</param>
/// <param name="Thumbnail">When set, patterns were block-averaged to at most this many rows and columns; null: full patterns.</param>
public sealed record AttentionStack(string Name, string Hook, string[] Queries, string[] Keys, bool Causal, int Layers, int HeadsPerLayer, HeadPattern[] Heads, int? Thumbnail = null);

/// <summary>An encoder-decoder's attention on one input: encoder self-attention, decoder self-attention and cross-attention.</summary>
/// <param name="Stacks">The three stacks, in that order.</param>
public sealed record EncoderDecoderAttentionResult(AttentionStack[] Stacks);

/// <summary>What an encoder-decoder says for one input.</summary>
/// <param name="Input">Encoder tokens.</param>
/// <param name="Decoder">Decoder tokens the prediction follows (start token first).</param>
/// <param name="Top">Top next decoder tokens after them.</param>
/// <param name="Generated">Greedy output from the decoder start token (start token first, EOS last when reached).</param>
public sealed record EncoderDecoderPrediction(string[] Input, string[] Decoder, TokenPrediction[] Top, string[] Generated);

/// <summary>
/// The analyses that carry over to an encoder-decoder (T5), as the same records the decoder analyses return: the logit lens
/// over the decoder's residual stream, and activation patching of the encoder input (clean → corrupted) at every encoder and
/// decoder layer and position.
/// </summary>
public static class EncoderDecoderAnalyses
{
    /// <summary>
    /// The logit lens on the decoder: the decoder embedding and each decoder block's output, decoded through the final norm and unembedding,
    /// at every decoder position; losses against the teacher-forced next decoder token (the same lens and records as a decoder model's).
    /// </summary>
    public static LogitLensResult Lens(HookedEncoderDecoder model, Tensor inputIds, Tensor decoderIds, Tensor? mask = null, long? target = null, int topK = 5)
    {
        if (decoderIds.shape[0] != 1) throw new MechanistException("the lens takes one prompt");
        using var scope = NewDisposeScope();
        var reg = model.HookPoints;
        var names = new[] { reg.Name(HookStack.Decoder, HookKind.Embed) }
            .Concat(Enumerable.Range(0, model.Config.DecoderLayers).Select(l => reg.Name(HookStack.Decoder, HookKind.ResidPost, l))).ToArray();
        var (_, cache) = model.RunWithCache(inputIds, decoderIds, mask, names.Contains);
        using var _c = cache;
        var ids = decoderIds[0].data<long>().ToArray();
        var labels = new[] { "dec_emb" }.Concat(Enumerable.Range(1, model.Config.DecoderLayers).Select(l => $"dec {l}")).ToArray();
        var residuals = stack(names.Select(n => cache[n][0]).ToArray());                 // [layers, dec_pos, d]
        var layers = LogitLens.Layers(labels, model.UnembedDecoderResidual(residuals), ids, Texts(model), target, topK, causal: true);
        return new LogitLensResult(Texts(model)(ids), ids, target is { } tt ? model.TokenText(tt) : null, target, layers);
    }

    static Func<long[], string[]> Texts(HookedEncoderDecoder model) => ids => ids.Select(model.TokenText).ToArray();

    /// <summary>
    /// Activation patching of the encoder input: the corrupted encoder input runs with one residual activation (an encoder layer's input
    /// at one encoder position, or a decoder layer's input at one decoder position) taken from the clean run; the score is the answer −
    /// wrong logit difference at the last decoder position, normalised so that the clean run is 1 and the corrupted run 0.
    /// </summary>
    public static PatchGrid[] Patch(HookedEncoderDecoder model, Tensor clean, Tensor corrupted, Tensor decoderIds, long answer, long? wrong = null, CancellationToken ct = default)
    {
        if (!clean.shape.SequenceEqual(corrupted.shape)) throw new MechanistException($"clean and corrupted inputs differ in length ({clean.shape[1]} vs {corrupted.shape[1]} tokens)");
        if (clean.shape[0] != 1) throw new MechanistException("patching takes one clean and one corrupted prompt");
        using var scope = NewDisposeScope();
        double Metric(Tensor logits)
        {
            var last = logits[0, -1];
            return last[answer].item<float>() - (wrong is { } w ? last[w].item<float>() : 0);
        }
        var reg = model.HookPoints;
        string[] Inputs(HookStack stack, int layers) => Enumerable.Range(0, layers).Select(l => reg.Name(stack, HookKind.ResidPre, l)).ToArray();
        var encoder = Inputs(HookStack.Encoder, model.Config.EncoderLayers);
        var decoder = Inputs(HookStack.Decoder, model.Config.DecoderLayers);
        var (cleanLogits, cleanCache) = model.RunWithCache(clean, decoderIds, null, encoder.Concat(decoder).ToHashSet().Contains);
        using var _c = cleanCache;
        double cleanMetric = Metric(cleanLogits), corruptMetric = Metric(model.Forward(corrupted, decoderIds));
        string metric = wrong is null ? $"logit of {model.TokenText(answer)}" : $"logit({model.TokenText(answer)}) − logit({model.TokenText(wrong.Value)})";
        double Patched(ForwardHookSpec hook) => Metric(model.Forward(corrupted, decoderIds, null, new[] { hook }));
        var encTokens = clean[0].data<long>().ToArray().Select((id, p) => $"{p} {model.TokenText(id)}").ToArray();
        var decTokens = decoderIds[0].data<long>().ToArray().Select((id, p) => $"{p} {model.TokenText(id)}").ToArray();
        return new[]
        {
            ActivationPatching.PositionGrid($"encoder: {metric}", encoder, encoder.Select((_, l) => $"encoder {l}").ToArray(), encTokens, cleanCache, Patched, cleanMetric, corruptMetric, ct),
            ActivationPatching.PositionGrid($"decoder: {metric}", decoder, decoder.Select((_, l) => $"decoder {l}").ToArray(), decTokens, cleanCache, Patched, cleanMetric, corruptMetric, ct),
        };
    }

    /// <summary>
    /// Attention patterns of one input [1, enc_pos] with decoder ids [1, dec_pos]: the selected layers and heads (all when null) of the
    /// encoder's self-attention, the decoder's self-attention and the decoder's cross-attention (block-averaged to at most
    /// <paramref name="thumbnail"/> cells a side when given, as <see cref="AttentionPatterns.Compute"/>).
    /// </summary>
    public static EncoderDecoderAttentionResult Attention(HookedEncoderDecoder model, Tensor inputIds, Tensor decoderIds, IReadOnlyCollection<int>? layers = null, IReadOnlyCollection<int>? heads = null,
        int? thumbnail = null)
    {
        AttentionPatterns.CheckThumbnail(thumbnail);
        if (inputIds.shape[0] != 1 || decoderIds.shape[0] != 1) throw new MechanistException("attention patterns take one input");
        var c = model.Config;
        var reg = model.HookPoints;
        var stacks = new (string Name, HookStack Stack, HookKind Kind, int Layers)[]
        {
            ("encoder", HookStack.Encoder, HookKind.Pattern, c.EncoderLayers), ("decoder", HookStack.Decoder, HookKind.Pattern, c.DecoderLayers),
            ("cross", HookStack.Decoder, HookKind.CrossPattern, c.DecoderLayers),
        };
        string Hook((string Name, HookStack Stack, HookKind Kind, int Layers) st, int l) => reg.Name(st.Stack, st.Kind, l);
        // The record names the stack's hook with L for the layer, as the registry spells layer 0's.
        string Display((string Name, HookStack Stack, HookKind Kind, int Layers) st) => Hook(st, 0).Replace(".0.", ".L.");
        // A layer asked for must exist in some stack; each stack returns the asked layers it has.
        int deepest = Math.Max(c.EncoderLayers, c.DecoderLayers);
        var (wantedLayers, wantedHeads) = AttentionPatterns.Select(deepest, c.NHeads, layers, heads);
        using var scope = NewDisposeScope();
        var names = stacks.SelectMany(st => wantedLayers.Where(l => l < st.Layers).Select(l => Hook(st, l))).ToHashSet();
        var (_, cache) = model.RunWithCache(inputIds, decoderIds, null, names.Contains);
        using (cache)
        {
            var enc = inputIds[0].data<long>().ToArray().Select(model.TokenText).ToArray();
            var dec = decoderIds[0].data<long>().ToArray().Select(model.TokenText).ToArray();
            return new EncoderDecoderAttentionResult(stacks.Select(st =>
            {
                var patterns = wantedLayers.Where(l => l < st.Layers).SelectMany(l => AttentionPatterns.Of(cache[Hook(st, l)][0], l, wantedHeads, thumbnail)).ToArray();
                return new AttentionStack(st.Name, Display(st), st.Name == "encoder" ? enc : dec, st.Name == "decoder" ? dec : enc, st.Name == "decoder", st.Layers, c.NHeads, patterns, thumbnail);
            }).ToArray());
        }
    }

    /// <summary>The top next decoder tokens after <paramref name="decoderIds"/> [1, dec_pos], and the greedy output from the start token.</summary>
    public static EncoderDecoderPrediction Predict(HookedEncoderDecoder model, Tensor inputIds, Tensor decoderIds, int topK = 10, int maxNewTokens = 20)
    {
        if (inputIds.shape[0] != 1 || decoderIds.shape[0] != 1) throw new MechanistException("a prediction takes one input");
        using var scope = NewDisposeScope();
        var last = model.Forward(inputIds, decoderIds)[0, -1].to(ScalarType.Float32);
        var probs = last.softmax(-1);
        var (v, i) = last.topk(Math.Min(topK, model.Config.VocabSize));
        var top = i.data<long>().ToArray().Select((id, j) => new TokenPrediction(id, model.TokenText(id), v[j].item<float>(), probs[id].item<float>())).ToArray();
        var (generated, _) = model.Generate(inputIds, maxNewTokens);
        return new EncoderDecoderPrediction(inputIds[0].data<long>().ToArray().Select(model.TokenText).ToArray(),
            decoderIds[0].data<long>().ToArray().Select(model.TokenText).ToArray(), top, generated.Select(model.TokenText).ToArray());
    }
}
