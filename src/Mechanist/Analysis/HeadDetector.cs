using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>Scores of one head.</summary>
/// <param name="Layer">Layer.</param>
/// <param name="Head">Head.</param>
/// <param name="PreviousToken">Attention mass on the previous token.</param>
/// <param name="DuplicateToken">Attention mass on earlier copies of the current token.</param>
/// <param name="Induction">Attention mass on the token after an earlier copy of the current token (TransformerLens's detector, over all rows: at most about ½ on [BOS, r, r]).</param>
/// <param name="InductionStripe">TransformerLens's demo induction score: mean attention from each position of the repeated half to the token after its first occurrence (1 for a perfect induction head).</param>
public sealed record HeadScores(int Layer, int Head, double PreviousToken, double DuplicateToken, double Induction, double InductionStripe);

/// <summary>Head detection on repeated random tokens.</summary>
/// <param name="SequenceLength">Length of the random sequence (it is repeated once).</param>
/// <param name="Batch">Number of sequences.</param>
/// <param name="Heads">Every head's scores.</param>
/// <param name="InductionLossPerPosition">Mean loss per position over the batch (positions 1..2·len): high in the first half, low in the second for a model with induction heads.</param>
/// <param name="FirstHalfLoss">Mean loss on the first (random) half.</param>
/// <param name="SecondHalfLoss">Mean loss on the repeated half.</param>
public sealed record HeadDetectionResult(int SequenceLength, int Batch, HeadScores[] Heads, double[] InductionLossPerPosition, double FirstHalfLoss, double SecondHalfLoss);

/// <summary>
/// Previous-token, duplicate-token and induction scores for every head, computed as
/// TransformerLens's head detector does ("mul" method): the share of each query row's attention that
/// falls on the positions the detection pattern marks, averaged over rows and sequences.
/// </summary>
public static class HeadDetector
{
    /// <summary>Runs on <paramref name="batch"/> sequences of BOS + r + r, r uniform random tokens.</summary>
    /// <param name="model">The model.</param>
    /// <param name="sequenceLength">Length of the random sequence.</param>
    /// <param name="batch">Number of sequences.</param>
    /// <param name="seed">Random seed.</param>
    /// <param name="lowToken">Smallest id drawn (ids below are usually special tokens).</param>
    /// <param name="tokenPool">Draw only these ids (e.g. a toy model's content words) instead of every id from <paramref name="lowToken"/> up.</param>
    public static HeadDetectionResult Run(HookedTransformer model, int sequenceLength = 20, int batch = 8, long seed = 0, int? lowToken = null,
        IReadOnlyList<long>? tokenPool = null)
    {
        var cfg = model.Config;
        if (2 * sequenceLength + 1 > cfg.NCtx) throw new MechanistException($"a repeated sequence of {sequenceLength} does not fit the context of {cfg.NCtx}");
        using var scope = NewDisposeScope();
        var generator = new Generator((ulong)seed);
        // Avoid special tokens at the start of the vocabulary (ids below 4 are BOS/EOS/PAD/UNK in most vocabularies).
        int low = lowToken ?? Math.Min(4, cfg.VocabSize - 1);
        var random = tokenPool is { Count: > 0 }
            ? tensor(tokenPool.ToArray()).index_select(0, randint(0, tokenPool.Count, new long[] { batch * sequenceLength }, generator: generator)).view(batch, sequenceLength)
            : randint(low, cfg.VocabSize, new long[] { batch, sequenceLength }, generator: generator);
        long bos = cfg.BosTokenId ?? model.Tokenizer?.BosId ?? 0;
        var tokens = cat(new[] { full(new long[] { batch, 1 }, bos, ScalarType.Int64), random, random }, 1);
        var (logits, cache) = model.RunWithCache(tokens, n => n.EndsWith("hook_pattern"));
        using var _c = cache;
        var ids = tokens.to(ScalarType.Int64);
        int n = (int)tokens.shape[1];

        // Detection patterns [batch, query, key].
        var q = arange(n).unsqueeze(1); var k = arange(n).unsqueeze(0);
        var previous = (k == q - 1).to(ScalarType.Float32).expand(batch, n, n);
        var same = ids.unsqueeze(2) == ids.unsqueeze(1); // token[q] == token[k]
        var duplicate = same.logical_and((k < q).unsqueeze(0)).to(ScalarType.Float32);
        var shifted = cat(new[] { full(new long[] { batch, 1 }, -1L, ScalarType.Int64), ids[.., ..^1] }, 1); // token[k-1]
        var induction = (ids.unsqueeze(2) == shifted.unsqueeze(1)).logical_and((k <= q).unsqueeze(0)).logical_and((k >= 1).unsqueeze(0)).to(ScalarType.Float32);

        var heads = new List<HeadScores>();
        for (int l = 0; l < cfg.NLayers; l++)
        {
            var pattern = cache["pattern", l].to(ScalarType.Float32); // [batch, head, q, k]
            double Score(Tensor det, int h) => ((pattern[.., h] * det).sum(new long[] { 1, 2 }) / pattern[.., h].sum(new long[] { 1, 2 })).mean().item<float>();
            // Query 1 + L + i (second copy of token i) attends to key 1 + i + 1 (the token after the first copy): offset 1 − L.
            var stripe = pattern.diagonal(1 - sequenceLength, -2, -1)[.., .., 2..]; // queries L + 1 .. 2L, the repeated half
            for (int h = 0; h < cfg.NHeads; h++)
                heads.Add(new HeadScores(l, h, Score(previous, h), Score(duplicate, h), Score(induction, h), stripe[.., h].mean().item<float>()));
        }

        var logProbs = logits.to(ScalarType.Float32).log_softmax(-1);
        var loss = -logProbs[.., ..^1].gather(2, ids[.., 1..].unsqueeze(2)).squeeze(2); // [batch, n-1]
        var perPosition = loss.mean(new long[] { 0 }).data<float>().Select(x => (double)x).ToArray();
        double first = perPosition.Take(sequenceLength).Average(), second = perPosition.Skip(sequenceLength).Average();
        return new HeadDetectionResult(sequenceLength, batch, heads.ToArray(), perPosition, first, second);
    }

    /// <summary>
    /// TransformerLens's detector on a given prompt and a custom detection pattern [pos, pos]: the share of
    /// each head's attention falling on the marked positions.
    /// </summary>
    public static double[,] Score(HookedTransformer model, Tensor tokens, Tensor detectionPattern)
    {
        using var scope = NewDisposeScope();
        var (_, cache) = model.RunWithCache(tokens, n => n.EndsWith("hook_pattern"));
        using var _c = cache;
        var scores = new double[model.Config.NLayers, model.Config.NHeads];
        var det = detectionPattern.to(ScalarType.Float32);
        for (int l = 0; l < model.Config.NLayers; l++)
        {
            var pattern = cache["pattern", l].to(ScalarType.Float32);
            for (int h = 0; h < model.Config.NHeads; h++)
                scores[l, h] = ((pattern[.., h] * det).sum(new long[] { 1, 2 }) / pattern[.., h].sum(new long[] { 1, 2 })).mean().item<float>();
        }
        return scores;
    }
}
