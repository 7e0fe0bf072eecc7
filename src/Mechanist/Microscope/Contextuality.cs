using Mechanist.Tensors;
using Mechanist.Models;
using Mechanist.Training;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Mechanist.Microscope;

/// <summary>Which decoder regenerates prefixes.</summary>
public enum ContextDecoder
{
    /// <summary>A trainable copy of the model itself (as in the paper).</summary>
    ModelCopy,
    /// <summary>A small two-layer transformer trained from scratch (cheaper; measures what is linearly and shallowly decodable).</summary>
    Small,
}

/// <summary>Contextuality settings.</summary>
/// <param name="Decoder">Decoder kind.</param>
/// <param name="PrefixLength">How many preceding tokens are regenerated.</param>
/// <param name="Steps">Training steps.</param>
/// <param name="BatchSize">Tokens per step.</param>
/// <param name="LearningRate">Adam learning rate.</param>
/// <param name="Seed">Seed (initialisation, sampling, train/test split).</param>
/// <param name="TestFraction">Share of texts held out for scoring.</param>
public sealed record ContextualityOptions(ContextDecoder Decoder = ContextDecoder.ModelCopy, int PrefixLength = 8, int Steps = 400,
    int BatchSize = 64, double LearningRate = 1e-3, int Seed = 0, double TestFraction = 0.25);

/// <summary>Contextuality scores.</summary>
/// <param name="Decoder">Decoder used.</param>
/// <param name="PrefixLength">Prefix length.</param>
/// <param name="LayerWeights">Learned pooling weights over depths (softmax).</param>
/// <param name="FinalTrainLoss">Training loss at the end (mean of the last 20 steps).</param>
/// <param name="ClassMeans">Mean score per token class on held-out texts (lower = more context kept).</param>
/// <param name="ClassCounts">Held-out tokens per class.</param>
/// <param name="PerText">Per held-out text (index into the corpus), the score of each token (null for BOS).</param>
public sealed record ContextualityResult(string Decoder, int PrefixLength, double[] LayerWeights, double FinalTrainLoss,
    Dictionary<string, double> ClassMeans, Dictionary<string, int> ClassCounts, Dictionary<int, double?[]> PerText);

/// <summary>
/// LLM-Microscope's context memory: how much of a token's preceding text can be regenerated from that
/// token's hidden states alone. A learned softmax pooling over depths and a two-layer MLP adapter turn
/// the token's states into one input embedding of a decoder, which is trained to regenerate the
/// (up to) K preceding tokens; the score of a token is the mean −log P of its prefix (lower = the
/// token's state holds more of its context).
/// </summary>
public static class Contextuality
{
    /// <summary>Trains the pooling, adapter and decoder on some texts and scores the held-out ones.</summary>
    public static ContextualityResult Run(HookedTransformer model, CorpusStates states, ContextualityOptions o, IProgress<(int Step, int Steps, double Loss)>? progress = null)
    {
        int depths = states.Layers.Length, d = model.Config.DModel, k = o.PrefixLength;
        var rng = new Random(o.Seed);
        var order = Enumerable.Range(0, states.Texts.Count).OrderBy(_ => rng.Next()).ToList();
        int testCount = Math.Max(1, (int)Math.Round(states.Texts.Count * o.TestFraction));
        if (states.Texts.Count < 2) throw new MechanistException("contextuality needs at least two texts (one to train on, one to score)");
        var test = order.Take(testCount).ToHashSet();
        var items = Items(states);
        var train = items.Where(i => !test.Contains(i.Text)).ToList();
        if (train.Count == 0) throw new MechanistException("no training tokens for contextuality");

        manual_seed(o.Seed);
        using var decoder = o.Decoder == ContextDecoder.ModelCopy ? CopyOf(model) : RandomModels.Create(SmallConfig(model, k), o.Seed);
        int dd = decoder.Config.DModel;
        var dev = model.Device;
        var poolLogits = zeros(depths, ScalarType.Float32, dev).DetachFromDisposeScope();
        var w1 = randn(2 * d, d).Div(Math.Sqrt(d)).to(dev).DetachFromDisposeScope(); var b1 = zeros(2 * d, device: dev).DetachFromDisposeScope();
        var w2 = randn(dd, 2 * d).Div(Math.Sqrt(2 * d)).to(dev).DetachFromDisposeScope(); var b2 = zeros(dd, device: dev).DetachFromDisposeScope();
        var stacked = stack(states.Layers.Select(l => l.to(ScalarType.Float32)).ToArray(), 1).to(dev).DetachFromDisposeScope(); // [rows, depths, d]
        var parameters = new List<Tensor> { poolLogits, w1, b1, w2, b2 }.Concat(decoder.Weights.Named().Select(p => p.Tensor)).ToList();
        List<double> losses;
        using (var adam = new AdamW(parameters, beta2: 0.999))
        {
            Tensor Loss(int step)
            {
                var batch = Enumerable.Range(0, o.BatchSize).Select(_ => train[rng.Next(train.Count)]).ToList();
                return BatchLoss(decoder, stacked, poolLogits, w1, b1, w2, b2, batch, states, k, reduce: true).Loss;
            }
            losses = TrainingLoop.Run(adam, Loss, new TrainingLoopOptions(o.Steps, new LearningRateSchedule.Constant(o.LearningRate), GradClip: 1.0),
                progress is null ? null : new SyncProgress<TrainProgress>(p => progress.Report((p.Step, p.Steps, p.Loss))));
        }

        var perText = new Dictionary<int, double?[]>();
        var sums = WordClasses.All.ToDictionary(c => c, _ => 0.0); var counts = WordClasses.All.ToDictionary(c => c, _ => 0);
        using (no_grad())
            foreach (var t in test.OrderBy(x => x))
            {
                var text = states.Texts[t];
                var scores = new double?[text.Ids.Length];
                var textItems = items.Where(i => i.Text == t).ToList();
                for (int start = 0; start < textItems.Count; start += 256)
                {
                    using var scope = NewDisposeScope();
                    var chunk = textItems.Skip(start).Take(256).ToList();
                    var perItem = BatchLoss(decoder, stacked, poolLogits, w1, b1, w2, b2, chunk, states, k, reduce: false).PerItem!;
                    for (int j = 0; j < chunk.Count; j++)
                    {
                        double s = perItem[j];
                        scores[chunk[j].Token] = s;
                        string cls = text.Classes[chunk[j].Token];
                        if (sums.ContainsKey(cls)) { sums[cls] += s; counts[cls]++; }
                    }
                }
                perText[t] = scores;
            }
        var weights = poolLogits.softmax(0).cpu().data<float>().Select(x => (double)x).ToArray();
        foreach (var t in new[] { poolLogits, w1, b1, w2, b2, stacked }) t.Dispose();
        return new ContextualityResult(o.Decoder.ToString(), k, weights, losses.Skip(Math.Max(0, losses.Count - 20)).Average(),
            WordClasses.All.Where(c => counts[c] > 0).ToDictionary(c => c, c => sums[c] / counts[c]), counts, perText);
    }

    /// <summary>A scored token: its text, its index in the text and its row in the state tensors.</summary>
    readonly record struct Item(int Text, int Token, int Row);

    static List<Item> Items(CorpusStates states)
    {
        var items = new List<Item>();
        for (int t = 0; t < states.Texts.Count; t++)
        {
            var (start, count, offset) = states.Rows[t];
            // Tokens with at least one preceding token (BOS counts) have a prefix to regenerate.
            for (int j = 0; j < count; j++) if (offset + j >= 1) items.Add(new Item(t, offset + j, start + j));
        }
        return items;
    }

    static (Tensor Loss, double[]? PerItem) BatchLoss(HookedTransformer decoder, Tensor stacked, Tensor poolLogits, Tensor w1, Tensor b1, Tensor w2, Tensor b2,
        List<Item> batch, CorpusStates states, int k, bool reduce)
    {
        int n = batch.Count;
        var dev = stacked.device;
        var rows = tensor(batch.Select(b => (long)b.Row).ToArray(), device: dev);
        var h = stacked.index_select(0, rows);                                   // [n, depths, d]
        var pooled = (h * poolLogits.softmax(0).view(1, -1, 1)).sum(1);            // [n, d]
        var soft = F.linear(F.gelu(F.linear(pooled, w1, b1)), w2, b2).unsqueeze(1); // [n, 1, dd]
        // Targets: the (up to) k tokens before the scored token, oldest first; padding is ignored.
        var targetData = new long[n * k]; var inputData = new long[n * (k - 1)];
        Array.Fill(targetData, -100L);
        for (int i = 0; i < n; i++)
        {
            var ids = states.Texts[batch[i].Text].Ids;
            int end = batch[i].Token, begin = Math.Max(0, end - k);
            for (int j = begin; j < end; j++)
            {
                targetData[i * k + (j - begin)] = ids[j];
                if (j + 1 < end) inputData[i * (k - 1) + (j - begin)] = ids[j];
            }
        }
        var targets = tensor(targetData, new long[] { n, k }, device: dev);
        var inputs = tensor(inputData, new long[] { n, k - 1 }, device: dev);
        var embedded = decoder.Weights.WE.index_select(0, inputs.flatten()).view(n, k - 1, -1);
        var sequence = cat(new[] { soft, embedded }, 1);                           // [n, k, dd]
        var logits = decoder.Run(sequence, new RunOptions { InputIsEmbeddings = true, EnableGrad = reduce });
        var flat = F.cross_entropy(logits.reshape(n * k, -1), targets.flatten(), ignore_index: -100, reduction: nn.Reduction.None).view(n, k);
        var mask = targets.Ne(-100).to(ScalarType.Float32);
        var perItem = (flat * mask).sum(1) / mask.sum(1);
        return reduce ? (perItem.mean(), null) : (perItem.mean(), perItem.cpu().data<float>().Select(x => (double)x).ToArray());
    }

    static HookedTransformer CopyOf(HookedTransformer model)
    {
        var w = model.Weights;
        static Tensor? C(Tensor? t) => t?.DetachedClone().DetachFromDisposeScope();
        var copy = new TransformerWeights
        {
            WE = C(w.WE)!, WPos = C(w.WPos), LnFinalW = C(w.LnFinalW), LnFinalB = C(w.LnFinalB), BU = C(w.BU),
            Blocks = w.Blocks.Select(b => new BlockWeights
            {
                Ln1W = C(b.Ln1W), Ln1B = C(b.Ln1B), Ln2W = C(b.Ln2W), Ln2B = C(b.Ln2B), PostAttnNormW = C(b.PostAttnNormW),
                PostMlpNormW = C(b.PostMlpNormW), QNormW = C(b.QNormW), KNormW = C(b.KNormW),
                Wq = C(b.Wq)!, Wk = C(b.Wk)!, Wv = C(b.Wv)!, Wo = C(b.Wo)!, Bq = C(b.Bq), Bk = C(b.Bk), Bv = C(b.Bv), Bo = C(b.Bo),
                WIn = C(b.WIn)!, WUp = C(b.WUp), WOut = C(b.WOut)!, BIn = C(b.BIn), BUp = C(b.BUp), BOut = C(b.BOut),
            }).ToArray(),
        };
        copy.WU = ReferenceEquals(w.WU, w.WE) ? copy.WE : C(w.WU)!;
        return new HookedTransformer(model.Config, copy, model.Tokenizer, model.Name + " (decoder copy)");
    }

    static TransformerConfig SmallConfig(HookedTransformer model, int k) => RandomModels.Gpt2SmallConfig() with
    {
        DModel = 64, NLayers = 2, NHeads = 4, NKvHeads = 4, DHead = 16, DMlp = 256, VocabSize = model.Config.VocabSize,
        NCtx = k + 1, AttnScale = 0.25, TiedEmbeddings = true,
    };
}
