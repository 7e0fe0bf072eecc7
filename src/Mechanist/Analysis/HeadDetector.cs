using Mechanist.Tensors;
using Mechanist.Hooks;
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

/// <summary>
/// The one parameter set of head detection: the CLI, the web and the toy evaluation all run it through this
/// record, so one model gets one set of scores.
/// </summary>
/// <param name="SequenceLength">Length of the random sequence (repeated once); default min(20, (context − 1) / 2).</param>
/// <param name="Batch">Number of sequences.</param>
/// <param name="Seed">Random seed.</param>
/// <param name="LowToken">Smallest id drawn when no pool is used (ids below are usually special tokens).</param>
/// <param name="TokenPool">Draw only these ids; default: <see cref="HeadDetector.DefaultTokenPool"/>.</param>
public sealed record HeadDetectionSettings(int? SequenceLength = null, int Batch = 8, long Seed = 0, int LowToken = 3, IReadOnlyList<long>? TokenPool = null);

/// <summary>Head detection on repeated random tokens.</summary>
/// <param name="SequenceLength">Length of the random sequence (it is repeated once).</param>
/// <param name="Batch">Number of sequences.</param>
/// <param name="Seed">Random seed.</param>
/// <param name="PoolSize">Number of ids drawn from (the vocabulary from LowToken up, or the pool).</param>
/// <param name="Heads">Every head's scores.</param>
/// <param name="InductionLossPerPosition">Mean loss per position over the batch (positions 1..2·len): high in the first half, low in the second for a model with induction heads.</param>
/// <param name="FirstHalfLoss">Mean loss on the first (random) half.</param>
/// <param name="SecondHalfLoss">Mean loss on the repeated half.</param>
public sealed record HeadDetectionResult(int SequenceLength, int Batch, long Seed, int PoolSize, HeadScores[] Heads, double[] InductionLossPerPosition, double FirstHalfLoss, double SecondHalfLoss);

/// <summary>
/// Previous-token, duplicate-token and induction scores for every head, computed as
/// TransformerLens's head detector does ("mul" method): the share of each query row's attention that
/// falls on the positions the detection pattern marks, averaged over rows and sequences.
/// </summary>
public static class HeadDetector
{
    /// <summary>
    /// The ids random sequences are drawn from by default: the toy corpus's content words when the model's
    /// vocabulary has them as single tokens (a built-in toy model: its other ids are punctuation and special
    /// tokens, which never repeat in training), else null (every id from LowToken up).
    /// </summary>
    public static IReadOnlyList<long>? DefaultTokenPool(HookedTransformer model)
    {
        if (model.Tokenizer is not { } tok) return null;
        var words = Toy.ToyCorpus.InductionWords;
        var ids = words.Select(w => tok.TokenToId(w)).Where(id => id != null).Select(id => (long)id!.Value).Distinct().ToList();
        return ids.Count * 2 >= words.Length ? ids : null;
    }

    /// <summary>Runs on <c>Batch</c> sequences of BOS + r + r, r random tokens.</summary>
    public static HeadDetectionResult Run(HookedTransformer model, HeadDetectionSettings? settings = null)
    {
        settings ??= new HeadDetectionSettings();
        var cfg = model.Config;
        int sequenceLength = settings.SequenceLength ?? Math.Min(20, (cfg.NCtx - 1) / 2);
        int batch = settings.Batch;
        if (sequenceLength < 1 || batch < 1) throw new MechanistException("head detection needs a sequence length and batch of at least 1");
        if (2 * sequenceLength + 1 > cfg.NCtx) throw new MechanistException($"a repeated sequence of {sequenceLength} does not fit the context of {cfg.NCtx}");
        var pool = settings.TokenPool ?? DefaultTokenPool(model);
        int low = Math.Clamp(settings.LowToken, 0, cfg.VocabSize - 1);
        using var scope = NewDisposeScope();
        using var generator = new Generator((ulong)settings.Seed);
        var random = (pool is { Count: > 0 }
            ? tensor(pool.ToArray()).index_select(0, randint(0, pool.Count, new long[] { batch * sequenceLength }, generator: generator)).view(batch, sequenceLength)
            : randint(low, cfg.VocabSize, new long[] { batch, sequenceLength }, generator: generator)).to(model.Device);
        long bos = cfg.BosTokenId ?? model.Tokenizer?.BosId ?? 0;
        var tokens = cat(new[] { SafeOps.FullInt(new long[] { batch, 1 }, bos, ScalarType.Int64, model.Device), random, random }, 1);
        var (logits, cache) = model.RunWithCache(tokens, model.HookPoints.Selector(HookKind.Pattern));
        using var _c = cache;
        var ids = tokens.to(ScalarType.Int64);
        int n = (int)tokens.shape[1];

        // Detection patterns [batch, query, key].
        var q = SafeOps.Arange(n, device: model.Device).unsqueeze(1); var k = SafeOps.Arange(n, device: model.Device).unsqueeze(0);
        var previous = (k == q.Sub(1)).to(ScalarType.Float32).expand(batch, n, n);
        var same = ids.unsqueeze(2) == ids.unsqueeze(1); // token[q] == token[k]
        var duplicate = same.logical_and((k < q).unsqueeze(0)).to(ScalarType.Float32);
        var shifted = cat(new[] { SafeOps.FullInt(new long[] { batch, 1 }, -1L, ScalarType.Int64, model.Device), ids[.., ..^1] }, 1); // token[k-1]
        var induction = (ids.unsqueeze(2) == shifted.unsqueeze(1)).logical_and((k <= q).unsqueeze(0)).logical_and(k.Ge(1).unsqueeze(0)).to(ScalarType.Float32);

        var heads = new List<HeadScores>();
        for (int l = 0; l < cfg.NLayers; l++)
        {
            var pattern = cache[HookKind.Pattern, l].to(ScalarType.Float32); // [batch, head, q, k]
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
        return new HeadDetectionResult(sequenceLength, batch, settings.Seed, pool is { Count: > 0 } ? pool.Count : cfg.VocabSize - low, heads.ToArray(), perPosition, first, second);
    }

    /// <summary>
    /// TransformerLens's detector on a given prompt [batch, pos] and a custom detection pattern [pos, pos]: for each
    /// head, the share of its attention falling on the marked positions, averaged over rows and prompts; [layer][head].
    /// </summary>
    public static double[][] Score(HookedTransformer model, Tensor tokens, Tensor detectionPattern)
    {
        long n = tokens.shape[1];
        if (!detectionPattern.shape.SequenceEqual(new[] { n, n })) throw new MechanistException($"the detection pattern must be [{n}, {n}] for a prompt of {n} tokens");
        using var scope = NewDisposeScope();
        var (_, cache) = model.RunWithCache(tokens, model.HookPoints.Selector(HookKind.Pattern));
        using var _c = cache;
        var det = detectionPattern.to(ScalarType.Float32, model.Device);
        return Enumerable.Range(0, model.Config.NLayers).Select(l =>
        {
            var pattern = cache[HookKind.Pattern, l].to(ScalarType.Float32); // [batch, head, q, k]
            var share = ((pattern * det).sum(new long[] { 2, 3 }) / pattern.sum(new long[] { 2, 3 })).mean(new long[] { 0 }); // [head]
            return share.cpu().data<float>().Select(x => (double)x).ToArray();
        }).ToArray();
    }
}
