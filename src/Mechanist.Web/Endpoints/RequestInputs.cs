using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Web;

/// <summary>Prompts and token ids from requests, checked against the limits and the model before anything runs.</summary>
public sealed class RequestInputs(WorkbenchOptions options)
{
    /// <summary>Longest encoder or decoder input of an encoder-decoder, in tokens (its relative positions set no limit; its cost is quadratic).</summary>
    public const int MaxEncoderDecoderTokens = 1024;

    /// <summary>A prompt's tokens [1, T]; a clear error for an empty, too long or over-context prompt.</summary>
    public Tensor Tokens(HookedTransformer m, string? prompt, string field = "prompt")
    {
        if (string.IsNullOrEmpty(prompt)) throw new MechanistException($"'{field}' is required");
        CheckLength(prompt, field);
        var tokens = m.ToTokens(prompt);
        if (tokens.shape[1] > m.Config.NCtx)
        {
            long n = tokens.shape[1]; tokens.Dispose();
            throw new MechanistException($"'{field}' is {n} tokens; this model's context is {m.Config.NCtx}");
        }
        return tokens;
    }

    /// <summary>Checks a prompt without keeping its tokens.</summary>
    public void Check(HookedTransformer m, string? prompt, string field = "prompt") { using (Tokens(m, prompt, field)) { } }

    /// <summary>Token ids given by the page (a graph file's prompt_token_ids), checked against the model.</summary>
    public static Tensor TokenIds(HookedTransformer m, long[] ids)
    {
        if (ids.Length > m.Config.NCtx) throw new MechanistException($"'tokens' has {ids.Length} ids; this model's context is {m.Config.NCtx}");
        foreach (long id in ids)
            if (id < 0 || id >= m.Config.VocabSize) throw new MechanistException($"'tokens' holds id {id}, outside the vocabulary (0..{m.Config.VocabSize - 1})");
        return tensor(ids, new long[] { 1, ids.Length }, ScalarType.Int64, m.Device);
    }

    /// <summary>An encoder-decoder's encoder input.</summary>
    public Tensor InputIds(HookedEncoderDecoder m, string? text, string field = "prompt")
    {
        if (string.IsNullOrEmpty(text)) throw new MechanistException($"'{field}' is required");
        return Limited(m.InputIds(CheckLength(text, field)), field);
    }

    /// <summary>An encoder-decoder's decoder input (its start token, then <paramref name="prefix"/>).</summary>
    public Tensor DecoderIds(HookedEncoderDecoder m, string? prefix) =>
        Limited(m.DecoderIds(string.IsNullOrEmpty(prefix) ? null : CheckLength(prefix, "decoder")), "decoder");

    string CheckLength(string text, string field) =>
        text.Length <= options.MaxPromptChars ? text : throw new MechanistException($"'{field}' is {text.Length} characters; the limit is {options.MaxPromptChars}");

    static Tensor Limited(Tensor ids, string field)
    {
        if (ids.shape[1] <= MaxEncoderDecoderTokens) return ids;
        long n = ids.shape[1]; ids.Dispose();
        throw new MechanistException($"'{field}' is {n} tokens; the workbench takes {MaxEncoderDecoderTokens} at most for an encoder-decoder");
    }
}
