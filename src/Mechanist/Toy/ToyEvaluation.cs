using Mechanist.Analysis;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Toy;

/// <summary>Accuracy on one group of evaluation prompts.</summary>
/// <param name="Group">"indirect object (held-out names)", "two-hop, seen cities", ...</param>
/// <param name="Correct">Prompts answered right (every answer token is the greedy choice).</param>
/// <param name="Total">Prompts.</param>
/// <param name="MeanLogitDiff">For indirect objects: mean logit(IO) − logit(S).</param>
public sealed record ToyAccuracy(string Group, int Correct, int Total, double? MeanLogitDiff)
{
    /// <summary>Correct / total.</summary>
    public double Accuracy => Total == 0 ? double.NaN : (double)Correct / Total;
}

/// <summary>Evaluates a toy model on the corpus's held-out and fact prompts.</summary>
public static class ToyEvaluation
{
    /// <summary>Accuracy per group, plus the best induction score of any head.</summary>
    public static (ToyAccuracy[] Groups, double BestInduction, string BestInductionHead) Run(HookedTransformer model, int seed = 99)
    {
        var tok = model.Tokenizer ?? throw new MechanistException("the toy model has no tokenizer");
        var prompts = new ToyCorpus(seed).EvaluationPrompts().ToList();
        var groups = new Dictionary<string, (int Correct, int Total, List<double> Diffs)>();
        foreach (var p in prompts)
        {
            using var scope = NewDisposeScope();
            var answer = tok.Encode(" " + p.Answer, prependBos: false);
            var promptIds = tok.Encode(p.Prompt).ToList();
            var full = promptIds.Concat(answer).Select(i => (long)i).ToArray();
            var logits = model.Run(tensor(full, new long[] { 1, full.Length }))[0];
            bool correct = true;
            for (int i = 0; i < answer.Length; i++)
                correct &= logits[promptIds.Count - 1 + i].argmax().item<long>() == answer[i];
            string group = p.Kind switch
            {
                ToyLineKind.IndirectObject => "indirect object (held-out name pairs)",
                ToyLineKind.CityInState => "one-hop: city is in state",
                ToyLineKind.CapitalOf => "one-hop: capital of state",
                _ => p.HeldOut ? "two-hop, held-out cities" : "two-hop, seen cities",
            };
            var g = groups.TryGetValue(group, out var existing) ? existing : (Correct: 0, Total: 0, Diffs: new List<double>());
            if (p.Wrong != null)
            {
                long wrong = tok.Encode(" " + p.Wrong, prependBos: false)[0];
                var last = logits[promptIds.Count - 1];
                g.Diffs.Add(last[answer[0]].item<float>() - last[wrong].item<float>());
            }
            groups[group] = (g.Correct + (correct ? 1 : 0), g.Total + 1, g.Diffs);
        }
        // Random sequences of the corpus's content words (names, places, objects, states, cities, common words):
        // the toy vocabulary's remaining ids are punctuation and special tokens.
        var heads = HeadDetector.Run(model, new HeadDetectionSettings(Batch: 16, Seed: seed));
        var best = heads.Heads.OrderByDescending(h => h.InductionStripe).First();
        return (groups.Select(kv => new ToyAccuracy(kv.Key, kv.Value.Correct, kv.Value.Total, kv.Value.Diffs.Count > 0 ? kv.Value.Diffs.Average() : null))
            .OrderBy(a => a.Group).ToArray(), best.InductionStripe, $"L{best.Layer}H{best.Head}");
    }
}
