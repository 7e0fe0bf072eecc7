using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>One predicted token.</summary>
/// <param name="Id">Token id.</param>
/// <param name="Token">Display string.</param>
/// <param name="Logit">Its logit.</param>
/// <param name="Prob">Its probability.</param>
public sealed record TokenPrediction(long Id, string Token, double Logit, double Prob);

/// <summary>The next-token predictions after one prompt (one batch row).</summary>
/// <param name="Ids">Prompt ids (padding dropped).</param>
/// <param name="Tokens">Prompt token strings, when the model has a tokenizer.</param>
/// <param name="Bos">Whether the prompt starts with the model's BOS token.</param>
/// <param name="Top">The most likely next tokens, best first (for an encoder, the tokens at <paramref name="Position"/>).</param>
/// <param name="Position">The position (among <paramref name="Ids"/>) whose logits <paramref name="Top"/> reads: the last, or an encoder's first mask token.</param>
public sealed record PromptPrediction(long[] Ids, string[]? Tokens, bool Bos, TokenPrediction[] Top, int Position = -1);

/// <summary>Top-k next tokens: the one implementation behind <c>run</c>, the web's run view, test_prompt and the lens.</summary>
public static class NextTokens
{
    /// <summary>The <paramref name="k"/> most likely tokens of one row of logits [vocab] (or log-probabilities: probabilities are its softmax).</summary>
    public static TokenPrediction[] Top(HookedTransformer model, Tensor logits, int k) => Top(ids => TokenText.Of(model, ids), logits, k);

    /// <summary>The <paramref name="k"/> most likely tokens of one row of logits [vocab], named by <paramref name="text"/> (any model's tokenizer).</summary>
    public static TokenPrediction[] Top(Func<long[], string[]> text, Tensor logits, int k)
    {
        using var scope = NewDisposeScope();
        var row = logits.to(ScalarType.Float32);
        var probs = row.softmax(-1);
        var (values, indices) = row.topk(Math.Clamp(k, 1, (int)row.shape[0]));
        var ids = indices.cpu().data<long>().ToArray();
        var logitValues = values.cpu().data<float>().ToArray();
        var probValues = probs.index_select(0, indices).cpu().data<float>().ToArray();
        var names = text(ids);
        return ids.Select((id, i) => new TokenPrediction(id, names[i], logitValues[i], probValues[i])).ToArray();
    }

    /// <summary>
    /// Top-k next tokens at the last real position of each row of <paramref name="tokens"/> [batch, pos], given its logits; for an encoder
    /// (a masked LM) the tokens predicted at the row's first mask token when it has one.
    /// </summary>
    public static PromptPrediction[] Predict(HookedTransformer model, Tensor tokens, Tensor? mask, Tensor logits, int k)
    {
        if (k <= 0) throw new MechanistException("top-k must be positive");
        var rows = new PromptPrediction[tokens.shape[0]];
        var all = tokens.cpu().data<long>().ToArray();
        var maskValues = mask?.cpu().to(ScalarType.Int64).data<long>().ToArray();
        int n = (int)tokens.shape[1];
        long? bos = model.Tokenizer?.BosId ?? model.Config.BosTokenId;
        for (int b = 0; b < rows.Length; b++)
        {
            var real = Enumerable.Range(0, n).Where(i => maskValues is null || maskValues[b * n + i] != 0).ToArray();
            if (real.Length == 0) throw new MechanistException($"row {b} has no real tokens (its attention mask is all zero)");
            var ids = real.Select(i => all[b * n + i]).ToArray();
            int at = TokenText.DefaultPosition(model, ids) is >= 0 and var m ? m : ids.Length - 1;
            rows[b] = new PromptPrediction(ids, model.Tokenizer is null ? null : TokenText.Of(model, ids), bos is { } id && ids[0] == id,
                Top(model, logits[b, real[at]], k), at);
        }
        return rows;
    }

    /// <summary>Runs one prompt [1, pos] and returns its top-k next tokens.</summary>
    public static PromptPrediction Run(HookedTransformer model, Tensor tokens, int k = 10)
    {
        using var scope = NewDisposeScope();
        return Predict(model, tokens, null, model.Run(tokens), k)[0];
    }
}
