using System.Runtime.Intrinsics;
using Mechanist.Tensors;
using Mechanist.IO;
using Mechanist.Analysis;
using Mechanist.Cluster;
using Mechanist.Dictionaries;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Features;

/// <summary>Settings of a feature-store build.</summary>
/// <param name="Sketch">Examples kept per feature.</param>
/// <param name="ShardIndex">This process's shard (texts i, i + N, ...).</param>
/// <param name="ShardCount">Shards in the plan.</param>
/// <param name="CheckpointTokens">Tokens between saves of the shard's state (the resume unit).</param>
/// <param name="BatchTexts">Texts per forward.</param>
/// <param name="Logits">Top and bottom logits kept per feature.</param>
public sealed record FeatureBuildOptions(FeatureSketchSettings Sketch, int ShardIndex = 0, int ShardCount = 1, long CheckpointTokens = 200_000, int BatchTexts = 64, int Logits = 10);

/// <summary>Progress of a build.</summary>
/// <param name="Texts">Texts of the shard read.</param>
/// <param name="Tokens">Tokens read.</param>
public readonly record struct FeatureBuildProgress(long Texts, long Tokens);

/// <summary>
/// Builds feature stores (<c>mechanist features build</c>): one streaming pass of a corpus shard through the model with the
/// dictionary spliced in, keeping per feature only what <see cref="FeatureSketch"/> keeps, so memory does not grow with the
/// corpus. The shard's state is saved as a store every <see cref="FeatureBuildOptions.CheckpointTokens"/> tokens (a killed build
/// resumes from it); <see cref="Merge"/> joins the shards of a plan into <c>features.db</c>.
/// </summary>
public static class FeatureBuild
{
    /// <summary>File name of shard i of N.</summary>
    public static string ShardName(int index, int count) => $"features-{index}-of-{count}.db";

    /// <summary>File name of the merged store.</summary>
    public const string MergedName = "features.db";

    /// <summary>A feature build as a sharded job: features-I-of-N.db per shard (the store is its own state); one model, dictionary, corpus and settings.</summary>
    public static readonly IShardKind<FeatureStoreInfo> Shards = new FeatureShards();

    sealed class FeatureShards : IShardKind<FeatureStoreInfo>
    {
        public string What => "build";
        public string FileName(ShardPlan plan) => ShardName(plan.Index, plan.Count);
        public string FilePattern => "features-*-of-*.db";
        public FeatureStoreInfo Read(string path) => FeatureStore.ReadInfo(path);
        public ShardPlan PlanOf(FeatureStoreInfo i) => new(i.ShardIndex, i.ShardCount);
        public bool IsComplete(FeatureStoreInfo i) => i.Complete;
        public IEnumerable<(string Label, string Value)> Identity(FeatureStoreInfo i) => new[]
        {
            ("model", i.Model), ("dictionary", i.DictionaryId), ("corpus", i.CorpusHash), ("setting of examples per feature", i.Settings.ToString()),
        };
    }

    /// <summary>Runs (or resumes) one shard and returns its state; <paramref name="corpus"/> enumerates the whole corpus afresh each call.</summary>
    public static FeatureStoreInfo Run(HookedTransformer model, FeatureSource source, string dictionary, Func<IEnumerable<string>> corpus, FeatureBuildOptions o, string dir,
        IProgress<FeatureBuildProgress>? progress = null, CancellationToken ct = default)
    {
        var plan = new ShardPlan(o.ShardIndex, o.ShardCount).Checked();
        if (o.Sketch.TopK < 1 || o.Sketch.TopK > 1000 || o.Sketch.PerInterval < 0 || o.Sketch.PerInterval > 100 || o.Sketch.Before < 0 || o.Sketch.After < 0 || o.Sketch.Before + o.Sketch.After > 1000)
            throw new MechanistException("examples per feature: --top-k in 1..1000, --per-interval in 0..100, context windows of at most 1,000 tokens");
        var tok = model.Tokenizer ?? throw new MechanistException($"{model.Name} has no tokenizer: feature dashboards need text");
        long corpusTexts = 0;
        string hash = ShardedJobs.CorpusHash(corpus().Select(t => { corpusTexts++; return t; }));
        if (corpusTexts == 0) throw new MechanistException("the corpus has no usable text");
        string path = Path.Combine(dir, ShardName(o.ShardIndex, o.ShardCount));
        var info = new FeatureStoreInfo(model.Name, dictionary, source.Identity, source.Kind, source.Layers, source.DDict, hash, corpusTexts,
            o.ShardIndex, o.ShardCount, 0, 0, false, o.Sketch);
        FeatureSketch[] sketches; FeatureEffects[] effects;
        string[] vocab = TokenText.Of(model, Enumerable.Range(0, model.Config.VocabSize).Select(i => (long)i));
        // Stored token strings concatenate into the text; a word-level vocabulary's words need their spaces back.
        if (tok.Kind == "word-level") vocab = vocab.Select(v => " " + v).ToArray();
        if (ShardedJobs.Resume(Shards, dir, plan, info) is { } existing)
        {
            if (existing.Complete) return existing;
            (sketches, effects) = FeatureStore.Open(path).ReadSketches();
            info = existing;
        }
        else
        {
            sketches = source.Layers.Select((_, li) => new FeatureSketch(li, source.DDict, o.Sketch)).ToArray();
            var similar = Similar(source, SimilarCount);
            effects = source.Layers.Select((_, li) => Effects(model, source, li, o.Logits, vocab) with { Similar = similar[li] }).ToArray();
        }

        long textsDone = info.TextsDone, tokens = info.Tokens, sinceSave = 0;
        var shardTexts = plan.Select(corpus()).Skip((int)Math.Min(int.MaxValue, textsDone));
        var batch = new List<(long Index, long[] Ids)>();
        void Flush()
        {
            if (batch.Count == 0) return;
            var nonEmpty = batch.Where(b => b.Ids.Length > (tok.BosId is { } bos && b.Ids[0] == bos ? 1 : 0)).ToList();
            long read = 0;
            // Texts of similar length run together, so that little of each forward is padding.
            foreach (var group in SimilarLengths(nonEmpty, PaddedTokensPerForward)) read += Process(model, source, group, sketches);
            tokens += read; sinceSave += read;
            textsDone += batch.Count;
            batch.Clear();
            progress?.Report(new FeatureBuildProgress(textsDone, tokens));
        }
        foreach (var (text, index) in shardTexts)
        {
            ct.ThrowIfCancellationRequested();
            batch.Add((index, tok.Encode(text).Take(model.Config.NCtx).Select(i => (long)i).ToArray()));
            if (batch.Count < o.BatchTexts) continue;
            Flush();
            if (sinceSave >= o.CheckpointTokens)
            {
                FeatureStore.Write(path, info with { TextsDone = textsDone, Tokens = tokens }, sketches, effects, vocab);
                sinceSave = 0;
                ShardedJobs.PauseIfAsked(dir, plan, ct);
            }
        }
        Flush();
        info = info with { TextsDone = textsDone, Tokens = tokens, Complete = true };
        FeatureStore.Write(path, info, sketches, effects, vocab);
        return info;
    }

    /// <summary>Padded positions (texts × the longest text) a forward takes at most when texts are grouped by length.</summary>
    public const int PaddedTokensPerForward = 2048;

    /// <summary>The texts sorted by length and cut into groups of at most <paramref name="paddedTokens"/> padded positions (one text at least).</summary>
    public static IEnumerable<List<(long Index, long[] Ids)>> SimilarLengths(List<(long Index, long[] Ids)> texts, int paddedTokens)
    {
        var group = new List<(long Index, long[] Ids)>();
        foreach (var t in texts.OrderBy(t => t.Ids.Length).ThenBy(t => t.Index))
        {
            if (group.Count > 0 && (group.Count + 1) * t.Ids.Length > paddedTokens) { yield return group; group = new(); }
            group.Add(t);
        }
        if (group.Count > 0) yield return group;
    }
    /// <summary>Runs one batch and adds every firing to the sketches; returns the tokens read (BOS excluded).</summary>
    static long Process(HookedTransformer model, FeatureSource source, List<(long Index, long[] Ids)> batch, FeatureSketch[] sketches)
    {
        long? bos = model.Tokenizer!.BosId;
        int n = batch.Count, width = batch.Max(b => b.Ids.Length);
        var ids = new long[n * width]; var attention = new long[n * width]; var keep = new bool[n * width];
        var firstKept = new int[n];
        var rowText = new List<int>(); var rowPos = new List<int>();
        for (int b = 0; b < n; b++)
        {
            var t = batch[b].Ids;
            firstKept[b] = bos is { } id && t[0] == id ? 1 : 0;
            for (int p = 0; p < t.Length; p++)
            {
                ids[b * width + p] = t[p]; attention[b * width + p] = 1;
                if (p >= firstKept[b]) { keep[b * width + p] = true; rowText.Add(b); rowPos.Add(p); }
            }
        }
        using var scope = NewDisposeScope();
        var idsT = tensor(ids, new long[] { n, width }, device: model.Device);
        var maskT = tensor(attention, new long[] { n, width }, device: model.Device);
        var keepT = tensor(keep, device: model.Device);
        var wanted = source.InputHooks.ToHashSet();
        var (_, cache) = model.RunWithCache(idsT, wanted.Contains, new RunOptions { AttentionMask = maskT, Splices = source.Splice is { } sp ? new[] { sp } : Array.Empty<Hooks.ISplice>() });
        using (cache)
        {
            for (int li = 0; li < sketches.Length; li++)
            {
                using var layerScope = NewDisposeScope();
                var acts = source.Encode(li, cache[source.InputHooks[li]].reshape(n * width, -1)[keepT]).to(ScalarType.Float32);
                var host = (acts.device_type == TorchSharp.DeviceType.CPU ? acts : acts.cpu()).contiguous();
                unsafe { AddFirings(sketches[li], (float*)TensorMemory.DataPointer(host), source.DDict, batch, firstKept, rowText, rowPos, source.Layers[li]); }
                GC.KeepAlive(host);
                sketches[li].Tokens += rowText.Count;
            }
        }
        return rowText.Count;
    }

    /// <summary>
    /// Adds every firing (activation &gt; 0) of a batch's dense activations ([rows, dDict], row-major at <paramref name="activations"/>)
    /// to the sketch, row by row and feature by feature within a row. The firings are first listed row by row (eight features
    /// compared at a time), so that a kept example's window reads its activations from that short list rather than across the rows.
    /// </summary>
    static unsafe void AddFirings(FeatureSketch sketch, float* activations, int dDict, List<(long Index, long[] Ids)> batch, int[] firstKept, List<int> rowText, List<int> rowPos, int layer)
    {
        int rows = rowText.Count, vectorEnd = dDict / 8 * 8, count = 0;
        // Pooled: a batch's lists are large objects, and allocating them afresh per batch and layer costs collections of the old generation.
        var rowPtr = System.Buffers.ArrayPool<int>.Shared.Rent(rows + 1);
        var feats = System.Buffers.ArrayPool<int>.Shared.Rent(rows * 64); var vals = System.Buffers.ArrayPool<float>.Shared.Rent(rows * 64);
        var zero = Vector256<float>.Zero;
        rowPtr[0] = 0;
        for (int row = 0; row < rows; row++)
        {
            float* values = activations + (long)row * dDict;
            for (int f = 0; f < dDict; f += 8)
            {
                uint mask = 0;
                if (f < vectorEnd) mask = Vector256.ExtractMostSignificantBits(Vector256.GreaterThan(Vector256.Load(values + f), zero));
                else for (int j = 0; f + j < dDict; j++) if (values[f + j] > 0) mask |= 1u << j;
                if (count + 8 > feats.Length) { Grow(ref feats, count); Grow(ref vals, count); }
                for (; mask != 0; mask &= mask - 1)
                {
                    int feature = f + System.Numerics.BitOperations.TrailingZeroCount(mask);
                    feats[count] = feature; vals[count++] = values[feature];
                }
            }
            rowPtr[row + 1] = count;
        }
        var lookup = new WindowSource(batch, firstKept, rowPtr, feats, vals, sketch.Settings);
        for (int row = 0; row < rows; row++)
        {
            int b = rowText[row], pos = rowPos[row];
            long text = batch[b].Index;
            for (int i = rowPtr[row]; i < rowPtr[row + 1]; i++)
            {
                int feature = feats[i];
                ulong hash = FeatureSketch.HashOf(layer, feature, text, pos);
                sketch.Add(feature, vals[i], text, pos, new Window(lookup, b, row, pos, feature, vals[i], hash), hash);
            }
        }
        System.Buffers.ArrayPool<int>.Shared.Return(rowPtr); System.Buffers.ArrayPool<int>.Shared.Return(feats); System.Buffers.ArrayPool<float>.Shared.Return(vals);
    }

    static void Grow<T>(ref T[] pooled, int used)
    {
        var larger = System.Buffers.ArrayPool<T>.Shared.Rent(pooled.Length * 2);
        Array.Copy(pooled, larger, used);
        System.Buffers.ArrayPool<T>.Shared.Return(pooled);
        pooled = larger;
    }

    /// <summary>What a batch's windows are cut from: the texts, and the layer's firings listed row by row (features ascending within a row).</summary>
    sealed record WindowSource(List<(long Index, long[] Ids)> Batch, int[] FirstKept, int[] RowPtr, int[] Feats, float[] Vals, FeatureSketchSettings Settings)
    {
        /// <summary>The activation of <paramref name="feature"/> at a row (0 when it did not fire there).</summary>
        public float Value(int row, int feature)
        {
            int at = Array.BinarySearch(Feats, RowPtr[row], RowPtr[row + 1] - RowPtr[row], feature);
            return at >= 0 ? Vals[at] : 0;
        }
    }

    readonly struct Window(WindowSource s, int b, int row, int pos, int feature, float activation, ulong hash) : FeatureSketch.IWindow
    {
        public FeatureExample Build()
        {
            var tokens = s.Batch[b].Ids;
            int start = Math.Max(0, pos - s.Settings.Before), end = Math.Min(tokens.Length, pos + s.Settings.After + 1);
            var acts = new float[end - start];
            // A text's kept positions are consecutive rows.
            for (int q = Math.Max(start, s.FirstKept[b]); q < end; q++) acts[q - start] = s.Value(row + q - pos, feature);
            return new FeatureExample(s.Batch[b].Index, pos, activation, hash, start, tokens[start..end], acts);
        }
    }

    /// <summary>The top and bottom logits of every feature of a layer (its output direction · W_U) and, for a CLT, its decoder norms.</summary>
    /// <summary>Similar features kept per feature.</summary>
    public const int SimilarCount = 8;

    /// <summary>
    /// Per dictionary layer and feature, the <paramref name="k"/> other features (of any layer) whose output directions (a CLT
    /// feature's: the sum of its decoders) have the largest cosine with its own, largest first; dead directions (zero) have none.
    /// </summary>
    public static SimilarFeature[][][] Similar(FeatureSource source, int k)
    {
        using var scope = NewDisposeScope();
        int layers = source.Layers.Length, f = source.DDict;
        var all = cat(Enumerable.Range(0, layers).Select(li => source.OutputDirections(li)).ToArray(), 0);          // [layers·f, d]
        var norms = all.norm(1, true);
        var unit = all.div(norms.ClampMin(1e-12));
        k = Math.Min(k, layers * f - 1);
        var result = Enumerable.Range(0, layers).Select(_ => new SimilarFeature[f][]).ToArray();
        var alive = norms.squeeze(1).Gt(0).data<bool>().ToArray();
        for (int s = 0; s < layers * f; s += 512)
        {
            using var chunk = NewDisposeScope();
            int e = Math.Min(layers * f, s + 512);
            var cos = matmul(unit[s..e], unit.t());                                                                   // [rows, layers·f]
            cos.index_put_(SafeOps.Full(new long[] { e - s }, -2f), SafeOps.Arange(e - s), SafeOps.Arange(s, e));      // never oneself
            var (values, indices) = cos.topk(Math.Max(1, k), 1);
            var v = values.data<float>().ToArray(); var ix = indices.data<long>().ToArray();
            for (int row = s; row < e; row++)
            {
                int j = row - s;
                result[row / f][row % f] = !alive[row] || k < 1 ? Array.Empty<SimilarFeature>()
                    : Enumerable.Range(0, k).Where(x => alive[ix[j * k + x]]).Select(x => new SimilarFeature(source.Layers[(int)(ix[j * k + x] / f)], (int)(ix[j * k + x] % f), Math.Round(v[j * k + x], 4))).ToArray();
            }
        }
        return result;
    }

    /// <summary>Top and bottom logits (and for a CLT decoder norms) of each feature of dictionary layer <paramref name="layerIndex"/>.</summary>
    public static FeatureEffects Effects(HookedTransformer model, FeatureSource source, int layerIndex, int k, string[] vocab)
    {
        using var scope = NewDisposeScope();
        var dirs = source.OutputDirections(layerIndex).to(model.Device);
        var wu = model.Weights.WU.to(ScalarType.Float32);
        int f = source.DDict; k = Math.Min(k, model.Config.VocabSize);
        var top = new TokenValue[f][]; var bottom = new TokenValue[f][];
        for (int s = 0; s < f; s += 256)
        {
            using var chunk = NewDisposeScope();
            int e = Math.Min(f, s + 256);
            var logits = matmul(dirs[s..e], wu.t());
            var (hv, hi) = logits.topk(k, 1, largest: true);
            var (lv, lo) = logits.topk(k, 1, largest: false);
            float[] hvA = hv.cpu().data<float>().ToArray(), lvA = lv.cpu().data<float>().ToArray();
            long[] hiA = hi.cpu().data<long>().ToArray(), loA = lo.cpu().data<long>().ToArray();
            for (int j = 0; j < e - s; j++)
            {
                top[s + j] = Enumerable.Range(0, k).Select(x => new TokenValue(vocab[hiA[j * k + x]], hiA[j * k + x], hvA[j * k + x])).ToArray();
                bottom[s + j] = Enumerable.Range(0, k).Select(x => new TokenValue(vocab[loA[j * k + x]], loA[j * k + x], lvA[j * k + x])).ToArray();
            }
        }
        return new FeatureEffects(top, bottom, source.DecoderNorms(layerIndex));
    }

    /// <summary>
    /// Checks that the shard stores in <paramref name="dir"/> form one complete build (one model, dictionary, corpus, settings and
    /// shard plan; every shard present once and complete) and writes <c>features.db</c> over all of them, keeping the user labels
    /// and explanations of a previous <c>features.db</c> of the same dictionary.
    /// </summary>
    public static FeatureStoreInfo Merge(string dir)
    {
        var shards = ShardedJobs.CheckComplete(Shards, dir).Select(s => FeatureStore.Open(s.Path)).ToList();
        var first = shards[0].Info;
        string path = Path.Combine(dir, MergedName);
        var labels = File.Exists(path) && FeatureStore.ReadInfo(path) is var old && old.DictionaryId == first.DictionaryId ? FeatureStore.Open(path).Labels() : null;
        var merged = first with { ShardIndex = -1, TextsDone = shards.Sum(s => s.Info.TextsDone), Tokens = shards.Sum(s => s.Info.Tokens), Complete = true };
        if (shards.Count == 1)
        {
            // One shard is already the whole store: copy it rather than read and rewrite every example.
            FeatureStore.CopyAs(shards[0].Path, path, merged, labels);
            return merged;
        }
        var (sketches, effects) = shards[0].ReadSketches();
        foreach (var s in shards.Skip(1))
        {
            var (other, _) = s.ReadSketches();
            for (int li = 0; li < sketches.Length; li++) sketches[li].MergeFrom(other[li]);
        }
        FeatureStore.Write(path, merged, sketches, effects, shards[0].Vocab(), labels);
        return merged;
    }
}
