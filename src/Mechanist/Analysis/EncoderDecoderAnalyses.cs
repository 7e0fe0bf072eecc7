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
    /// at every decoder position; losses against the teacher-forced next decoder token.
    /// </summary>
    public static LogitLensResult Lens(HookedEncoderDecoder model, Tensor inputIds, Tensor decoderIds, Tensor? mask = null, long? target = null, int topK = 5)
    {
        if (decoderIds.shape[0] != 1) throw new MechanistException("the lens takes one prompt");
        using var scope = NewDisposeScope();
        var names = new[] { "hook_decoder_embed" }.Concat(Enumerable.Range(0, model.Config.DecoderLayers).Select(l => $"decoder.{l}.hook_resid_post")).ToArray();
        var (_, cache) = model.RunWithCache(inputIds, decoderIds, mask, names.Contains);
        try
        {
            var ids = decoderIds[0].data<long>().ToArray();
            var labels = new[] { "dec_emb" }.Concat(Enumerable.Range(1, model.Config.DecoderLayers).Select(l => $"dec {l}")).ToArray();
            var layers = names.Select((name, i) =>
            {
                var logProbs = model.UnembedDecoderResidual(cache[name][0]).log_softmax(-1);
                var probs = logProbs.exp();
                var cells = Enumerable.Range(0, ids.Length).Select(p =>
                {
                    var (v, idx) = logProbs[p].topk(Math.Min(topK, model.Config.VocabSize));
                    var top = idx.data<long>().ToArray().Select((id, j) => new TokenPrediction(id, model.TokenText(id), v[j].item<float>(), probs[p, id].item<float>())).ToArray();
                    int? rank = null; double? prob = null, logit = null;
                    if (target is { } t)
                    {
                        rank = (int)(logProbs[p] > logProbs[p, t]).sum().item<long>();
                        prob = probs[p, t].item<float>(); logit = logProbs[p, t].item<float>();
                    }
                    return new LensCell(top, rank, prob, logit);
                }).ToArray();
                double loss = ids.Length < 2 ? double.NaN : Enumerable.Range(0, ids.Length - 1).Average(p => -logProbs[p, ids[p + 1]].item<float>());
                double topLoss = Enumerable.Range(0, ids.Length).Average(p => -logProbs[p].max().item<float>());
                return new LensLayer(labels[i], cells, loss, topLoss);
            }).ToArray();
            return new LogitLensResult(ids.Select(model.TokenText).ToArray(), ids, target is { } tt ? model.TokenText(tt) : null, target, layers);
        }
        finally { foreach (var t in cache.Values) t.Dispose(); }
    }

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
        var names = Enumerable.Range(0, model.Config.EncoderLayers).Select(l => $"encoder.{l}.hook_resid_pre")
            .Concat(Enumerable.Range(0, model.Config.DecoderLayers).Select(l => $"decoder.{l}.hook_resid_pre")).ToHashSet();
        var (cleanLogits, cleanCache) = model.RunWithCache(clean, decoderIds, null, names.Contains);
        try
        {
            double cleanMetric = Metric(cleanLogits), corruptMetric = Metric(model.Forward(corrupted, decoderIds));
            double span = cleanMetric - corruptMetric;
            if (Math.Abs(span) < 1e-9) throw new MechanistException("the metric is the same on the clean and the corrupted input: nothing to patch");
            string metric = wrong is null ? $"logit of {model.TokenText(answer)}" : $"logit({model.TokenText(answer)}) − logit({model.TokenText(wrong.Value)})";
            PatchGrid Grid(string stack, int layers, int positions, string[] columns)
            {
                var scores = new double[layers][];
                for (int l = 0; l < layers; l++)
                {
                    scores[l] = new double[positions];
                    string name = $"{stack}.{l}.hook_resid_pre";
                    var source = cleanCache[name];
                    for (int p = 0; p < positions; p++)
                    {
                        ct.ThrowIfCancellationRequested();
                        using var step = NewDisposeScope();
                        int at = p;
                        var hook = new ForwardHookSpec(HookFilter.Named(name), (x, _) => { var y = x.clone(); y[.., at] = source[.., at]; return y; });
                        scores[l][p] = (Metric(model.Forward(corrupted, decoderIds, null, new[] { hook })) - corruptMetric) / span;
                    }
                }
                return new PatchGrid(PatchTarget.Resid, PatchMethod.Exact, $"{stack}: {metric}", Enumerable.Range(0, layers).Select(l => $"{stack} {l}").ToArray(),
                    columns, scores, cleanMetric, corruptMetric);
            }
            var encTokens = clean[0].data<long>().ToArray().Select((id, p) => $"{p} {model.TokenText(id)}").ToArray();
            var decTokens = decoderIds[0].data<long>().ToArray().Select((id, p) => $"{p} {model.TokenText(id)}").ToArray();
            return new[] { Grid("encoder", model.Config.EncoderLayers, (int)clean.shape[1], encTokens), Grid("decoder", model.Config.DecoderLayers, (int)decoderIds.shape[1], decTokens) };
        }
        finally { foreach (var t in cleanCache.Values) t.Dispose(); }
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
        var stacks = new (string Name, string Hook, int Layers)[] { ("encoder", "encoder.L.attn.hook_pattern", c.EncoderLayers), ("decoder", "decoder.L.attn.hook_pattern", c.DecoderLayers), ("cross", "decoder.L.cross_attn.hook_pattern", c.DecoderLayers) };
        // A layer asked for must exist in some stack; each stack returns the asked layers it has.
        int deepest = Math.Max(c.EncoderLayers, c.DecoderLayers);
        var (wantedLayers, wantedHeads) = AttentionPatterns.Select(deepest, c.NHeads, layers, heads);
        using var scope = NewDisposeScope();
        var names = stacks.SelectMany(st => wantedLayers.Where(l => l < st.Layers).Select(l => st.Hook.Replace(".L.", $".{l}."))).ToHashSet();
        var (_, cache) = model.RunWithCache(inputIds, decoderIds, null, names.Contains);
        try
        {
            var enc = inputIds[0].data<long>().ToArray().Select(model.TokenText).ToArray();
            var dec = decoderIds[0].data<long>().ToArray().Select(model.TokenText).ToArray();
            return new EncoderDecoderAttentionResult(stacks.Select(st =>
            {
                var patterns = wantedLayers.Where(l => l < st.Layers).SelectMany(l => AttentionPatterns.Of(cache[st.Hook.Replace(".L.", $".{l}.")][0], l, wantedHeads, thumbnail)).ToArray();
                return new AttentionStack(st.Name, st.Hook, st.Name == "encoder" ? enc : dec, st.Name == "decoder" ? dec : enc, st.Name == "decoder", st.Layers, c.NHeads, patterns, thumbnail);
            }).ToArray());
        }
        finally { foreach (var t in cache.Values) t.Dispose(); }
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
