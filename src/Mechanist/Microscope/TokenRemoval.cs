using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Microscope;

/// <summary>The effect of removing one class of tokens, for texts cut to one length.</summary>
/// <param name="Length">Tokens per text before removal (BOS included).</param>
/// <param name="Texts">Texts long enough.</param>
/// <param name="RemovedShare">Share of tokens removed.</param>
/// <param name="BaseLoss">Mean loss of the remaining tokens with everything in place.</param>
/// <param name="RemovedLoss">Mean loss of the same tokens after the removal.</param>
public sealed record RemovalPoint(int Length, int Texts, double RemovedShare, double BaseLoss, double RemovedLoss)
{
    /// <summary>RemovedLoss − BaseLoss.</summary>
    public double Increase => RemovedLoss - BaseLoss;
}

/// <summary>The loss-increase curve of one removed class.</summary>
/// <param name="Removed">"punctuation", "determiner", "stop word", or "custom".</param>
/// <param name="Points">One point per text length.</param>
public sealed record RemovalCurve(string Removed, RemovalPoint[] Points);

/// <summary>
/// Token removal (LLM-Microscope §5): delete every token of a class from a text and measure how much
/// the loss of the remaining tokens rises, as a function of text length.
/// </summary>
public static class TokenRemoval
{
    /// <summary>Curves for each class (and the custom word list, when given).</summary>
    public static RemovalCurve[] Run(HookedTransformer model, CorpusStates corpus, int[] lengths, IReadOnlyCollection<string>? customWords = null)
    {
        var groups = new List<(string Name, Func<string, string, bool> Removes)>
        {
            (WordClasses.Punctuation, (cls, _) => cls == WordClasses.Punctuation),
            (WordClasses.Determiner, (cls, _) => cls == WordClasses.Determiner),
            (WordClasses.StopWord, (cls, _) => cls == WordClasses.StopWord || cls == WordClasses.Determiner),
        };
        if (customWords is { Count: > 0 })
        {
            var set = customWords.Select(w => w.Trim()).ToHashSet(StringComparer.OrdinalIgnoreCase);
            groups.Add(("custom", (_, tok) => set.Contains(tok.Replace('\u2581', ' ').Trim())));
        }
        return groups.Select(g => new RemovalCurve(g.Name, lengths.Select(len => Point(model, corpus, len, g.Removes)).Where(p => p.Texts > 0).ToArray())).ToArray();
    }

    static RemovalPoint Point(HookedTransformer model, CorpusStates corpus, int length, Func<string, string, bool> removes)
    {
        double baseSum = 0, removedSum = 0; long counted = 0, removedTokens = 0, allTokens = 0; int texts = 0;
        foreach (var text in corpus.Texts)
        {
            if (text.Ids.Length < length) continue;
            var keep = Enumerable.Range(0, length).Where(i => text.Classes[i] == "bos" || !removes(text.Classes[i], text.Tokens[i])).ToArray();
            if (keep.Length < 3 || keep.Length == length) { if (keep.Length == length) { texts++; allTokens += length; } continue; }
            using var scope = NewDisposeScope();
            var ids = text.Ids[..length];
            var fullLoss = TokenLosses(model, ids);
            var reduced = keep.Select(i => ids[i]).ToArray();
            var reducedLoss = TokenLosses(model, reduced);
            // Token keep[j] (j >= 1) is predicted at position j - 1 of the reduced text and keep[j] - 1 of the full one.
            for (int j = 1; j < keep.Length; j++)
            {
                baseSum += fullLoss[keep[j] - 1];
                removedSum += reducedLoss[j - 1];
                counted++;
            }
            texts++; allTokens += length; removedTokens += length - keep.Length;
        }
        return counted == 0 ? new RemovalPoint(length, texts, 0, 0, 0)
            : new RemovalPoint(length, texts, (double)removedTokens / allTokens, baseSum / counted, removedSum / counted);
    }

    /// <summary>Loss of predicting token i+1 at each position i.</summary>
    static double[] TokenLosses(HookedTransformer model, long[] ids)
    {
        var logits = model.Run(tensor(ids, new long[] { 1, ids.Length }, device: model.Device))[0, ..^1].to(ScalarType.Float32);
        var next = tensor(ids[1..], device: model.Device).unsqueeze(1);
        return (-logits.log_softmax(-1).gather(1, next).squeeze(1)).cpu().data<float>().Select(x => (double)x).ToArray();
    }
}
