using Mechanist.Tensors;
using System.Text.Json;
using Mechanist.Cluster;
using Mechanist.IO;
using Mechanist.Models;
using Mechanist.Reporting;
using static TorchSharp.torch;

namespace Mechanist.Microscope;

/// <summary>What a shard of a corpus-scale microscope run holds (kept in its file's metadata).</summary>
/// <param name="Model">Model name.</param>
/// <param name="CorpusHash">SHA-256 of the corpus texts.</param>
/// <param name="CorpusTexts">Texts in the corpus.</param>
/// <param name="ShardIndex">This shard (−1 when merged).</param>
/// <param name="ShardCount">Shards in the plan.</param>
/// <param name="TextsDone">Texts of this shard read.</param>
/// <param name="Tokens">Rows (tokens) added.</param>
/// <param name="Complete">Whether every text of the shard was read.</param>
/// <param name="IncludeBos">Whether BOS rows count.</param>
/// <param name="SampleRows">Rows kept for the intrinsic dimension (those with the smallest hashes).</param>
public sealed record MicroscopeShardInfo(string Model, string CorpusHash, long CorpusTexts, int ShardIndex, int ShardCount, long TextsDone, long Tokens,
    bool Complete, bool IncludeBos, int SampleRows);

/// <summary>
/// The microscope over a corpus too large for memory, as shards: each shard streams its texts (i, i + N, ...) and keeps only sums
/// over tokens — per depth Σx and XᵀX, per consecutive pair XᵀY, the logit lens's loss sums — plus a bottom-k hash sample of rows
/// for TwoNN. Merging adds the sums and keeps the globally smallest hashes, so N shards give exactly the statistics of one pass;
/// the linear maps are refitted from the merged moments (never averaged) and the anisotropy is the merged covariance's.
/// Contextuality and token removal train or rerun on texts and are not sums: they are left to a single-process run.
/// </summary>
public static class MicroscopeShards
{
    /// <summary>File of shard i of N.</summary>
    public static string ShardName(int index, int count) => $"microscope-{index}-of-{count}.safetensors";

    /// <summary>A corpus-scale microscope run as a sharded job: microscope-I-of-N.safetensors per shard; one model, corpus and settings.</summary>
    public static readonly IShardKind<MicroscopeShardInfo> Shards = new MicroscopeShardKind();

    sealed class MicroscopeShardKind : IShardKind<MicroscopeShardInfo>
    {
        public string What => "microscope run";
        public string FileName(ShardPlan plan) => ShardName(plan.Index, plan.Count);
        public string FilePattern => "microscope-*-of-*.safetensors";
        public MicroscopeShardInfo Read(string path) => ReadInfo(path);
        public ShardPlan PlanOf(MicroscopeShardInfo i) => new(i.ShardIndex, i.ShardCount);
        public bool IsComplete(MicroscopeShardInfo i) => i.Complete;
        public IEnumerable<(string Label, string Value)> Identity(MicroscopeShardInfo i) => new[]
        {
            ("model", i.Model), ("corpus", i.CorpusHash), ("setting (BOS rows, sample size)", $"{i.IncludeBos}, {i.SampleRows}"),
        };
    }

    sealed class Moments : IDisposable
    {
        public Tensor[] Sum = null!, Gram = null!, Cross = null!;
        public double[] LensSum = null!, TopSum = null!;
        public long LensCount, TopCount;
        public Tensor Sample = null!, SampleHash = null!;

        public static Moments Empty(int depths, int d) => new()
        {
            Sum = Enumerable.Range(0, depths).Select(_ => zeros(d, dtype: ScalarType.Float64)).ToArray(),
            Gram = Enumerable.Range(0, depths).Select(_ => zeros(d, d, dtype: ScalarType.Float64)).ToArray(),
            Cross = Enumerable.Range(0, depths - 1).Select(_ => zeros(d, d, dtype: ScalarType.Float64)).ToArray(),
            LensSum = new double[depths], TopSum = new double[depths],
            Sample = zeros(0, depths, d, dtype: ScalarType.Float64), SampleHash = zeros(0, dtype: ScalarType.Int64),
        };

        public void Add(Moments o, int sampleRows)
        {
            for (int l = 0; l < Sum.Length; l++) { Sum[l].AddInPlace(o.Sum[l]); Gram[l].AddInPlace(o.Gram[l]); }
            for (int l = 0; l < Cross.Length; l++) Cross[l].AddInPlace(o.Cross[l]);
            for (int l = 0; l < LensSum.Length; l++) { LensSum[l] += o.LensSum[l]; TopSum[l] += o.TopSum[l]; }
            LensCount += o.LensCount; TopCount += o.TopCount;
            KeepSample(cat(new[] { Sample, o.Sample }, 0), cat(new[] { SampleHash, o.SampleHash }, 0), sampleRows);
        }

        /// <summary>Keeps the rows with the smallest hashes (compared as unsigned 64-bit numbers), in hash order.</summary>
        public void KeepSample(Tensor rows, Tensor hashes, int max)
        {
            // Flipping the sign bit turns unsigned order into signed order.
            var order = (hashes ^ long.MinValue).argsort();
            if (order.shape[0] > max) order = order[..max];
            var keptRows = rows.index_select(0, order); var keptHashes = hashes.index_select(0, order);
            Sample.Dispose(); SampleHash.Dispose();
            Sample = keptRows; SampleHash = keptHashes;
        }

        public Dictionary<string, Tensor> Tensors()
        {
            var t = new Dictionary<string, Tensor>();
            for (int l = 0; l < Sum.Length; l++) { t[$"sum.{l}"] = Sum[l]; t[$"gram.{l}"] = Gram[l]; }
            for (int l = 0; l < Cross.Length; l++) t[$"cross.{l}"] = Cross[l];
            t["lens_sum"] = tensor(LensSum); t["top_sum"] = tensor(TopSum);
            t["counts"] = tensor(new[] { LensCount, TopCount });
            t["sample"] = Sample.contiguous(); t["sample_hash"] = SampleHash;
            return t;
        }

        public static Moments Read(SafetensorsFile f, int depths) => new()
        {
            Sum = Enumerable.Range(0, depths).Select(l => f.Read($"sum.{l}")).ToArray(),
            Gram = Enumerable.Range(0, depths).Select(l => f.Read($"gram.{l}")).ToArray(),
            Cross = Enumerable.Range(0, depths - 1).Select(l => f.Read($"cross.{l}")).ToArray(),
            LensSum = f.Read("lens_sum").data<double>().ToArray(), TopSum = f.Read("top_sum").data<double>().ToArray(),
            LensCount = f.Read("counts").data<long>()[0], TopCount = f.Read("counts").data<long>()[1],
            Sample = f.Read("sample"), SampleHash = f.Read("sample_hash"),
        };

        public void Dispose()
        {
            foreach (var t in Sum.Concat(Gram).Concat(Cross)) t.Dispose();
            Sample.Dispose(); SampleHash.Dispose();
        }
    }

    /// <summary>Reads a shard's metadata; a clear error for a file that is not one.</summary>
    public static MicroscopeShardInfo ReadInfo(string path)
    {
        try
        {
            using var f = SafetensorsFile.Open(path);
            return JsonSerializer.Deserialize<MicroscopeShardInfo>(f.Metadata.GetValueOrDefault("microscope") ?? throw new JsonException("no 'microscope' metadata"), JsonFormat.Options)
                ?? throw new JsonException("empty");
        }
        catch (Exception e) when (e is JsonException or IOException or InvalidDataException or MechanistException)
        {
            throw new MechanistException($"{path}: not a microscope shard ({e.Message})");
        }
    }

    /// <summary>Runs (or resumes) one shard; <paramref name="corpus"/> enumerates the whole corpus afresh on each call.</summary>
    public static MicroscopeShardInfo Run(HookedTransformer model, Func<IEnumerable<string>> corpus, int shardIndex, int shardCount, string dir, bool includeBos = false,
        int sampleRows = 3000, long checkpointTokens = 50_000, int chunkTexts = 64, IProgress<(long Texts, long Tokens)>? progress = null, CancellationToken ct = default)
    {
        var plan = new ShardPlan(shardIndex, shardCount).Checked();
        if (sampleRows < 3) throw new MechanistException("the intrinsic dimension needs a sample of at least 3 rows");
        CorpusStates.RequireCausal(model);
        long corpusTexts = 0;
        string hash = ShardedJobs.CorpusHash(corpus().Where(t => !string.IsNullOrWhiteSpace(t)).Select(t => { corpusTexts++; return t; }));
        if (corpusTexts == 0) throw new MechanistException("the microscope needs at least one non-empty text");
        string path = Path.Combine(dir, ShardName(shardIndex, shardCount));
        int depths = model.Config.NLayers + 1, d = model.Config.DModel;
        var info = new MicroscopeShardInfo(model.Name, hash, corpusTexts, shardIndex, shardCount, 0, 0, false, includeBos, sampleRows);
        Moments state;
        if (ShardedJobs.Resume(Shards, dir, plan, info) is { } e)
        {
            if (e.Complete) return e;
            using var f = SafetensorsFile.Open(path);
            state = Moments.Read(f, depths);
            info = e;
        }
        else state = Moments.Empty(depths, d);
        using (state)
        {
            void Save()
            {
                using var scope = NewDisposeScope();
                SafetensorsWriter.Write(path, state.Tensors(), new Dictionary<string, string> { ["microscope"] = JsonFormat.Serialize(info), ["producer"] = "mechanist microscope" });
            }
            long sinceSave = 0;
            var texts = plan.Select(corpus().Where(t => !string.IsNullOrWhiteSpace(t))).Select(x => (Text: x.Item, x.Index)).Skip((int)Math.Min(int.MaxValue, info.TextsDone));
            foreach (var chunk in texts.Chunk(chunkTexts))
            {
                ct.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                using var states = CorpusStates.Collect(model, chunk.Select(c => c.Text), includeBos: includeBos);
                var lens = MicroscopeRunner.LensTotals(model, states);
                // The sums in float64 (the states are held in float32), widened two depths at a time.
                var sum = new Tensor[depths]; var gram = new Tensor[depths]; var cross = new Tensor[depths - 1];
                Tensor? below = null;
                for (int l = 0; l < depths; l++)
                {
                    var x = states.Layers[l].to(ScalarType.Float64);
                    sum[l] = x.sum(new long[] { 0 }); gram[l] = matmul(x.t(), x);
                    if (below is not null) { cross[l - 1] = matmul(below.t(), x); below.Dispose(); }
                    below = x;
                }
                below?.Dispose();
                var part = new Moments
                {
                    Sum = sum, Gram = gram, Cross = cross,
                    LensSum = lens.LossSum, TopSum = lens.TopSum, LensCount = lens.LossCount, TopCount = lens.TopCount,
                };
                // Each row's sampling hash is a function of (text index, position), so the sample does not depend on the shard plan.
                var hashes = new long[states.RowCount];
                for (int t = 0; t < states.Texts.Count; t++)
                {
                    var (start, count, offset) = states.Rows[t];
                    for (int j = 0; j < count; j++) hashes[start + j] = unchecked((long)Features.FeatureSketch.HashOf(-1, 0, chunk[t].Index, offset + j));
                }
                using (var sample = stack(states.Layers, 1)) part.Sample = sample.to(ScalarType.Float64);
                part.SampleHash = tensor(hashes);
                state.Add(part, sampleRows);
                // The running sums were added in place; the new sample was made in this scope and must outlive it.
                state.Sample.MoveToOuterDisposeScope(); state.SampleHash.MoveToOuterDisposeScope();
                info = info with { TextsDone = info.TextsDone + chunk.Length, Tokens = info.Tokens + states.RowCount };
                sinceSave += states.RowCount;
                progress?.Report((info.TextsDone, info.Tokens));
                if (sinceSave >= checkpointTokens) { Save(); sinceSave = 0; ShardedJobs.PauseIfAsked(dir, plan, ct); }
            }
            info = info with { Complete = true };
            Save();
            return info;
        }
    }

    /// <summary>
    /// Checks that the shards in <paramref name="dir"/> form one complete run (one model, corpus, settings and plan; every shard present
    /// once and complete), adds them up and computes the report from the merged moments.
    /// </summary>
    public static MicroscopeReport Merge(HookedTransformer? model, string dir)
    {
        var shards = ShardedJobs.CheckComplete(Shards, dir).Select(s => (File: s.Path, Info: s.State)).ToList();
        var first = shards[0].Info;
        if (model is not null && model.Name != first.Model) throw new MechanistException($"the shards are for model '{first.Model}', not '{model.Name}'");

        Moments? total = null;
        try
        {
            foreach (var (file, _) in shards)
            {
                using var f = SafetensorsFile.Open(file);
                int depths = f.Names.Count(n => n.StartsWith("sum."));
                var part = Moments.Read(f, depths);
                if (total is null) total = part;
                else using (part) total.Add(part, first.SampleRows);
            }
            return Report(total!, first, shards.Sum(s => s.Info.TextsDone), shards.Sum(s => s.Info.Tokens));
        }
        finally { total?.Dispose(); }
    }

    static MicroscopeReport Report(Moments m, MicroscopeShardInfo info, long texts, long rows)
    {
        int depths = m.Sum.Length;
        var linearity = new double[depths - 1]; var centred = new double[depths - 1];
        for (int l = 0; l + 1 < depths; l++)
        {
            using var scope = NewDisposeScope();
            double yy = m.Gram[l + 1].trace().item<double>();
            linearity[l] = Geometry.LinearityFromMoments(rows, m.Sum[l], m.Sum[l + 1], m.Gram[l], m.Cross[l], yy);
            // The block's update Y − X: Xᵀ(Y − X) = XᵀY − XᵀX, Σ‖y − x‖² = tr(YᵀY) − 2 tr(XᵀY) + tr(XᵀX).
            double uu = yy - 2 * m.Cross[l].trace().item<double>() + m.Gram[l].trace().item<double>();
            centred[l] = Geometry.LinearityFromMoments(rows, m.Sum[l], m.Sum[l + 1] - m.Sum[l], m.Gram[l], m.Cross[l] - m.Gram[l], uu);
        }
        var id = new double[depths]; var aniso = new double[depths]; var power = new double[depths];
        for (int l = 0; l < depths; l++)
        {
            using var scope = NewDisposeScope();
            var cov = (m.Gram[l] - outer(m.Sum[l], m.Sum[l]).Div(rows)).Div(Math.Max(1, rows - 1));
            (aniso[l], power[l]) = Geometry.AnisotropyOfCovariance(cov);
            // TwoNN on the sample in row order of (text, position) is order-free; the sample is the rows with the smallest hashes.
            id[l] = Geometry.TwoNN(m.Sample.select(1, l));
        }
        var lens = m.LensSum.Select(s => m.LensCount == 0 ? double.NaN : s / m.LensCount).ToArray();
        var top = m.TopSum.Select(s => m.TopCount == 0 ? double.NaN : s / m.TopCount).ToArray();
        var labels = Enumerable.Range(0, depths).Select(l => l == 0 ? "emb" : l.ToString()).ToArray();
        return new MicroscopeReport(info.Model, (int)Math.Min(int.MaxValue, texts), (int)Math.Min(int.MaxValue, rows), labels, linearity, centred, id, aniso, power, lens, top,
            Array.Empty<TextView>(), null, null);
    }
}
