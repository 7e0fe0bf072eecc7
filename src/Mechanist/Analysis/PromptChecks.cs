using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>How a prompt's next token compares with an expected answer (TransformerLens's test_prompt).</summary>
/// <param name="Tokens">Prompt tokens.</param>
/// <param name="Answer">Answer token.</param>
/// <param name="Rank">Rank of the answer (0 = top).</param>
/// <param name="Probability">Its probability.</param>
/// <param name="Logit">Its logit.</param>
/// <param name="Top">The most likely tokens.</param>
public sealed record AnswerCheck(string[] Tokens, string Answer, int Rank, double Probability, double Logit, TokenPrediction[] Top);

/// <summary>The logit difference of two answers with and without BOS (TransformerLens's BOS demo).</summary>
/// <param name="WithBos">logit(answer) − logit(wrong) with BOS prepended.</param>
/// <param name="WithoutBos">The same without BOS.</param>
public sealed record BosComparison(double WithBos, double WithoutBos);

/// <summary>TransformerLens's test_prompt and the BOS comparison.</summary>
public static class PromptChecks
{
    /// <summary>Rank, probability and logit of <paramref name="answer"/> after <paramref name="prompt"/>.</summary>
    public static AnswerCheck Check(HookedTransformer model, string prompt, string answer, int topK = 10, bool? prependBos = null)
    {
        using var scope = NewDisposeScope();
        long id = TokenText.AnswerId(model, answer);
        var tokens = model.ToTokens(prompt, prependBos);
        var logits = model.Run(tokens)[0, -1].to(ScalarType.Float32);
        var probs = logits.softmax(-1);
        int rank = (int)(logits > logits[id]).sum().item<long>();
        return new AnswerCheck(TokenText.Of(model, tokens[0].cpu().data<long>().ToArray()), TokenText.Of(model, id), rank,
            probs[id].item<float>(), logits[id].item<float>(), NextTokens.Top(model, logits, topK));
    }

    /// <summary>The logit difference of <paramref name="answer"/> over <paramref name="wrong"/>, with and without BOS.</summary>
    public static BosComparison CompareBos(HookedTransformer model, string prompt, string answer, string wrong)
    {
        using var scope = NewDisposeScope();
        long a = TokenText.AnswerId(model, answer), w = TokenText.AnswerId(model, wrong);
        double Diff(bool bos)
        {
            var logits = model.Run(model.ToTokens(prompt, bos))[0, -1];
            return logits[a].item<float>() - logits[w].item<float>();
        }
        return new BosComparison(Diff(true), Diff(false));
    }
}
