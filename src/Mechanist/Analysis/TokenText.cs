using Mechanist.Models;

namespace Mechanist.Analysis;

/// <summary>Shared helpers: token display and answer-token parsing.</summary>
public static class TokenText
{
    /// <summary>Display strings for ids (the ids themselves when the model has no tokenizer).</summary>
    public static string[] Of(HookedTransformer model, IEnumerable<long> ids) =>
        model.Tokenizer?.DisplayTokens(ids) ?? ids.Select(i => i.ToString()).ToArray();

    /// <summary>One display string.</summary>
    public static string Of(HookedTransformer model, long id) => Of(model, new[] { id })[0];

    /// <summary>
    /// The single token id of an answer such as " Paris" (or "#123" for a raw id). Multi-token answers are
    /// an error naming the pieces, since a logit belongs to one token.
    /// </summary>
    public static long AnswerId(HookedTransformer model, string answer)
    {
        if (answer.StartsWith('#') && long.TryParse(answer[1..], out long raw))
            return raw >= 0 && raw < model.Config.VocabSize ? raw : throw new MechanistException($"token id {raw} is outside the vocabulary");
        var tok = model.Tokenizer ?? throw new MechanistException($"{model.Name} has no tokenizer: give answers as #id");
        // A vocabulary entry first: " Lily" is "▁Lily" in SentencePiece vocabularies and "ĠLily" in byte-level ones,
        // and encoding would add SentencePiece's dummy prefix.
        foreach (var candidate in new[] { answer, answer.Replace(' ', '\u2581'), Tokenization.ByteLevelAlphabet.Encode(answer) })
            if (tok.TokenToId(candidate) is { } direct && !tok.AddedTokens.ContainsKey(direct)) return direct;
        var ids = tok.Encode(answer, prependBos: false);
        if (ids.Length != 1)
            throw new MechanistException($"answer '{answer}' is {ids.Length} tokens ({string.Join("|", tok.ToStrTokens(ids))}); give one token (mind the leading space) or #id");
        // A word the vocabulary lacks encodes to the unknown token: tracking <unk> is never what was asked.
        string piece = tok.ToStrTokens(ids)[0];
        if (piece is "<unk>" or "[UNK]" or "<|unk|>" && answer.Trim() != piece)
            throw new MechanistException($"answer '{answer}' is not in {model.Name}'s vocabulary (it encodes to {piece}); give a token the model knows (mind the leading space) or #id");
        return ids[0];
    }

    /// <summary>A masked LM's mask token ([MASK] or &lt;mask&gt;) in the model's tokenizer, if it has one.</summary>
    public static long? MaskId(HookedTransformer model)
    {
        if (model.Tokenizer is not { } tok) return null;
        int? mask = tok.TokenToId("[MASK]") ?? tok.TokenToId("<mask>");
        foreach (var (id, text) in tok.AddedTokens) if (mask is null && text is "[MASK]" or "<mask>") mask = id;
        return mask;
    }

    /// <summary>The position an analysis reads by default: the last (−1), or for an encoder the prompt's first mask token when it has one.</summary>
    public static int DefaultPosition(HookedTransformer model, long[] ids)
    {
        if (model.Config.Causal || MaskId(model) is not { } mask) return -1;
        return Array.IndexOf(ids, mask);
    }
}
