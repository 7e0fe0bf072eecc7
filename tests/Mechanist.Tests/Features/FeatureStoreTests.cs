using Mechanist.Tensors;
using System.Net;
using System.Text;
using System.Text.Json;
using Mechanist.Dictionaries.Formats;
using Mechanist.Features;
using Mechanist.Hooks;
using Mechanist.Models;
using Mechanist.Tests.Cli;
using Mechanist.Toy;
using static TorchSharp.torch;

namespace Mechanist.Tests.Features;

/// <summary>Feature stores: the streaming build against a brute-force reference, shards, resume, labels, search, export and LLM explanations.</summary>
public sealed class FeatureStoreTests
{
    static string ModelDir => Path.Combine(SharedData.RepoRoot, "models", "toy-4l");
    static string CltDir => Path.Combine(ModelDir, "clt");
    static readonly FeatureSketchSettings Small = new(TopK: 5, PerInterval: 2, Before: 3, After: 2);
    static Func<IEnumerable<string>> Corpus(int n) => () => new ToyCorpus(1000).Lines(n);

    static FeatureStoreInfo Build(HookedTransformer model, FeatureSource source, string dir, int n, int shard = 0, int shards = 1, int batch = 16, CancellationToken ct = default,
        IProgress<FeatureBuildProgress>? progress = null) =>
        FeatureBuild.Run(model, source, CltDir, Corpus(n), new FeatureBuildOptions(Small, shard, shards, CheckpointTokens: 500, BatchTexts: batch), dir, progress, ct);

    /// <summary>
    /// Brute force: every text run alone, every layer's activations encoded densely, every firing listed; top examples by sorting
    /// (one per repeated window), counts, maxima, quarter-octave histograms and the per-octave samples (smallest hashes) recomputed
    /// from the list and compared with the streaming store.
    /// </summary>
    [Fact]
    public void TheStreamingBuildKeepsWhatABruteForcePassOverEveryFiringFinds()
    {
        using var model = HookedTransformer.Load(ModelDir);
        using var source = FeatureSource.Load(model, CltDir);
        using var bundle = CircuitTracerFormat.Load(CltDir);
        using var dir = new TempDir();
        const int n = 120;
        var info = Build(model, source, dir.Path, n, batch: 1);
        FeatureBuild.Merge(dir.Path);
        var store = FeatureStore.Open(Path.Combine(dir.Path, FeatureBuild.MergedName));

        var texts = Corpus(n)().ToList();
        var firings = Enumerable.Range(0, 4).Select(_ => new List<(int F, float A, long Text, int Pos, long[] Window)>()).ToArray();
        long tokens = 0;
        for (int t = 0; t < texts.Count; t++)
        {
            using var scope = NewDisposeScope();
            var ids = model.Tokenizer!.Encode(texts[t]).Select(i => (long)i).ToArray();
            // With an attention mask as the build passes (the masked path rounds differently; repeated windows pick their best occurrence by it).
            var (_, cache) = model.RunWithCache(tensor(ids, new long[] { 1, ids.Length }), name => name.EndsWith("hook_resid_mid"),
                new RunOptions { AttentionMask = ones(1, ids.Length, dtype: ScalarType.Int64) });
            tokens += ids.Length - 1;
            using (cache)
                for (int l = 0; l < 4; l++)
                {
                    // Rows after BOS (the BOS row is never a firing).
                    var acts = bundle.Dictionary.Encode(l, cache[model.HookPoints.Name(HookKind.ResidMid, l)][0, 1..]).data<float>().ToArray();
                    for (int p = 1; p < ids.Length; p++)
                        for (int f = 0; f < 1024; f++)
                            if (acts[(p - 1) * 1024 + f] > 0)
                                firings[l].Add((f, acts[(p - 1) * 1024 + f], t, p, ids[Math.Max(0, p - 3)..Math.Min(ids.Length, p + 3)]));
                }
        }
        Assert.Equal(tokens, info.Tokens);
        int checkedTop = 0, ambiguous = 0;
        foreach (int l in new[] { 0, 3 })
            foreach (var group in firings[l].GroupBy(x => x.F).Where(g => g.Key % 7 == 0))
            {
                var d = store.Dashboard(l, group.Key);
                Assert.Equal(group.Count(), d.Summary.Count);
                Near(group.Max(x => x.A), d.Summary.Max);
                Near(group.Average(x => x.A), d.Summary.Mean);
                // Histogram: quarter octaves from 2^-10.
                var hist = new long[80];
                foreach (var x in group) hist[Math.Clamp((int)Math.Floor(4 * (Math.Log2(x.A) + 10)), 0, 79)]++;
                Assert.Equal(hist.Where(c => c > 0), d.Histogram.Select(b => b.Count));
                // Top examples: sorted by activation (ties: earlier text and position), a repeated window once (its best occurrence).
                var reps = new List<(float A, long Text, int Pos, long[] W)>();
                foreach (var x in group.OrderByDescending(x => x.A).ThenBy(x => x.Text).ThenBy(x => x.Pos))
                    if (!reps.Any(y => y.W.SequenceEqual(x.Window))) reps.Add((x.A, x.Text, x.Pos, x.Window));
                var top = reps.Take(Small.TopK + 1).ToList();
                // Skip the features whose k-th and (k+1)-th activations are too close to order robustly.
                if (top.Count > Small.TopK && top[Small.TopK - 1].A - top[Small.TopK].A < 1e-4) { ambiguous++; continue; }
                var want = top.Take(Small.TopK).ToList();
                Assert.Equal(want.Select(x => (x.Text, x.Pos)), d.Top.Select(e => (e.Text, e.Position)));
                for (int i = 0; i < want.Count; i++) Near(want[i].A, d.Top[i].Activation);
                // The firing token is marked and its activation is in the window.
                foreach (var e in d.Top) Assert.Equal(e.Activation, e.Acts[e.MaxIndex]);
                // Per octave: the distinct windows whose smallest hash of (layer, feature, text, position) over their occurrences is
                // smallest, each as that occurrence (a repeated text never shows twice).
                foreach (var interval in d.Intervals)
                {
                    int i = (int)Math.Round(Math.Log2(Math.Max(interval.Low, Math.Pow(2, -10)))) + 10;
                    var inInterval = group.Where(x => Math.Clamp((int)Math.Floor(Math.Log2(x.A)) + 10, 0, 19) == i).ToList();
                    Assert.Equal(inInterval.Count, interval.Count);
                    var distinct = new List<(ulong Hash, long Text, int Pos, long[] W)>();
                    foreach (var x in inInterval.OrderBy(x => FeatureSketch.HashOf(l, group.Key, x.Text, x.Pos)))
                        if (!distinct.Any(y => y.W.SequenceEqual(x.Window))) distinct.Add((FeatureSketch.HashOf(l, group.Key, x.Text, x.Pos), x.Text, x.Pos, x.Window));
                    Assert.Equal(distinct.Take(Small.PerInterval).Select(x => (x.Text, x.Pos)), interval.Examples.Select(e => (e.Text, e.Position)));
                    Assert.Equal(interval.Examples.Length, interval.Examples.Select(e => string.Join(",", e.Tokens)).Distinct().Count());
                }
                checkedTop++;
            }
        Assert.True(checkedTop > 100, $"{checkedTop} features checked");
        Assert.True(ambiguous * 10 < checkedTop, $"{ambiguous} ambiguous of {checkedTop}");
        // Logit effects: the decoder summed over the layers a layer-0 feature writes to, times W_U.
        var d0 = store.Dashboard(0, 776);
        using (var rows = Enumerable.Range(0, 4).Select(t => bundle.Dictionary.DecoderRows(0, t, tensor(new long[] { 776 }))).Aggregate((a, b) => a.Add(b)))
        using (var logits = matmul(rows, model.Weights.WU.t())[0])
        {
            var (values, indices) = logits.topk(3);
            Assert.Equal(indices.data<long>().ToArray(), d0.TopLogits.Take(3).Select(t => t.Id));
            Near(values.data<float>()[0], d0.TopLogits[0].Value);
            // Decoder norms per output layer.
            Near(bundle.Dictionary.DecoderRows(0, 2, tensor(new long[] { 776 })).norm().item<float>(), d0.DecoderNorms![2]);
        }
        // Similar features: by hand from the CLT's decoders W_dec_l [f, L − l, d] summed over their target layers, cosine with every
        // feature of every layer, itself excluded.
        var clt = (Mechanist.Dictionaries.CrossLayerTranscoder)bundle.Dictionary;
        using (var directions = cat(Enumerable.Range(0, 4).Select(l => clt.WDec(l).sum(1)).ToArray(), 0))
        using (var unit = directions / directions.norm(1, true))
        using (var cos = matmul(unit[776], unit.t()))
        {
            cos[776] = -2;
            var (values, indices) = cos.topk(FeatureBuild.SimilarCount);
            var want = indices.data<long>().ToArray().Select(i => ((int)(i / 1024), (int)(i % 1024))).ToArray();
            Assert.Equal(want, d0.Similar!.Select(n => (n.Layer, n.Feature)));
            Near(values.data<float>()[0], d0.Similar![0].Cosine, 1e-3);
        }
    }

    static void Near(double expected, double actual, double tolerance = 1e-4) =>
        Assert.True(Math.Abs(expected - actual) <= tolerance * Math.Max(1, Math.Abs(expected)), $"expected {expected}, got {actual}");

    [Fact]
    public void ThreeShardsMergeIntoExactlyTheSingleRunAndAKilledShardResumesWhereItStopped()
    {
        using var model = HookedTransformer.Load(ModelDir);
        using var source = FeatureSource.Load(model, CltDir);
        using var one = new TempDir(); using var three = new TempDir(); using var killed = new TempDir();
        const int n = 150;
        Build(model, source, one.Path, n, batch: 1);
        var single = FeatureBuild.Merge(one.Path);
        for (int s = 0; s < 3; s++) Build(model, source, three.Path, n, s, 3, batch: 1);
        var merged = FeatureBuild.Merge(three.Path);
        Assert.Equal(single.Tokens, merged.Tokens);
        Assert.Equal(n, merged.TextsDone);
        var a = FeatureStore.Open(Path.Combine(one.Path, FeatureBuild.MergedName)).ReadSketches().Sketches;
        var b = FeatureStore.Open(Path.Combine(three.Path, FeatureBuild.MergedName)).ReadSketches().Sketches;
        AssertSameSketches(a, b);

        // Cancelled after a few checkpoints (as a killed process: the last saved state is what remains), then resumed.
        using (var cts = new CancellationTokenSource())
        {
            int reports = 0;
            Assert.ThrowsAny<OperationCanceledException>(() => Build(model, source, killed.Path, n, batch: 1, ct: cts.Token,
                progress: new Mechanist.Training.SyncProgress<FeatureBuildProgress>(_ => { if (++reports == 70) cts.Cancel(); })));
        }
        var partial = FeatureStore.ReadInfo(Path.Combine(killed.Path, FeatureBuild.ShardName(0, 1)));
        Assert.False(partial.Complete);
        Assert.InRange(partial.TextsDone, 1, 69);
        Build(model, source, killed.Path, n, batch: 1);
        FeatureBuild.Merge(killed.Path);
        AssertSameSketches(a, FeatureStore.Open(Path.Combine(killed.Path, FeatureBuild.MergedName)).ReadSketches().Sketches);
    }

    static void AssertSameSketches(FeatureSketch[] a, FeatureSketch[] b)
    {
        for (int l = 0; l < a.Length; l++)
        {
            Assert.Equal(a[l].Tokens, b[l].Tokens);
            Assert.Equal(a[l].Count, b[l].Count);
            Assert.Equal(a[l].Max, b[l].Max);
            Assert.Equal(a[l].Histogram, b[l].Histogram);
            for (int f = 0; f < a[l].DDict; f++)
            {
                Assert.Equal(a[l].Sum[f], b[l].Sum[f], 1e-9 * Math.Max(1, Math.Abs(a[l].Sum[f])));
                Assert.Equal(Keys(a[l].Top[f]), Keys(b[l].Top[f]));
            }
            for (int s = 0; s < a[l].Sampled.Length; s++) Assert.Equal(Keys(a[l].Sampled[s]), Keys(b[l].Sampled[s]));
        }
        static IEnumerable<(long, int, float)> Keys(List<FeatureExample>? list) => (list ?? new()).Select(e => (e.Text, e.Position, e.Activation));
    }

    [Fact]
    public void AMergeRefusesShardsOfAnotherCorpusOrPlanAndNamesAMissingShard()
    {
        using var model = HookedTransformer.Load(ModelDir);
        using var source = FeatureSource.Load(model, CltDir);
        using var dir = new TempDir(); using var other = new TempDir();
        Build(model, source, dir.Path, 40, 0, 2);
        var e = Assert.Throws<MechanistException>(() => FeatureBuild.Merge(dir.Path));
        Assert.Contains("shard(s) 1 of 2 are missing", e.Message);
        // Shard 1 of the same plan over another corpus.
        FeatureBuild.Run(model, source, CltDir, () => new ToyCorpus(7).Lines(40), new FeatureBuildOptions(Small, 1, 2), other.Path);
        File.Copy(Path.Combine(other.Path, FeatureBuild.ShardName(1, 2)), Path.Combine(dir.Path, FeatureBuild.ShardName(1, 2)));
        e = Assert.Throws<MechanistException>(() => FeatureBuild.Merge(dir.Path));
        Assert.Contains("another corpus", e.Message);
        File.Delete(Path.Combine(dir.Path, FeatureBuild.ShardName(1, 2)));
        // A shard of a 3-shard plan.
        Build(model, source, other.Path, 40, 2, 3);
        File.Copy(Path.Combine(other.Path, FeatureBuild.ShardName(2, 3)), Path.Combine(dir.Path, FeatureBuild.ShardName(2, 3)));
        e = Assert.Throws<MechanistException>(() => FeatureBuild.Merge(dir.Path));
        Assert.Contains("plan of", e.Message);
        // Resuming into a folder of another build is refused, and a corrupt store is named.
        e = Assert.Throws<MechanistException>(() => FeatureBuild.Run(model, source, CltDir, () => new ToyCorpus(7).Lines(40), new FeatureBuildOptions(Small, 0, 2), dir.Path));
        Assert.Contains("another build", e.Message);
        File.WriteAllText(Path.Combine(other.Path, "features.db"), "not sqlite");
        e = Assert.Throws<MechanistException>(() => FeatureStore.Open(Path.Combine(other.Path, "features.db")));
        Assert.Contains("not a feature store", e.Message);
    }

    [Fact]
    public void LabelsSearchAndExportWorkThroughTheCliAndUserLabelsSurviveARebuild()
    {
        using var dir = new TempDir(); using var export = new TempDir();
        var (code, _, err) = CliRunner.Run("features", "build", "--texts", "300", "--top-k", "8", "--out", dir.Path);
        Assert.True(code == 0, err);
        // "Dallas is in Texas ." and the two-hop prompts are in the toy corpus: some feature's top tokens hold Dallas.
        (code, var stdout, err) = CliRunner.Run("features", "search", "--db", dir.Path, "dallas", "--json");
        Assert.True(code == 0, err);
        var hits = JsonSerializer.Deserialize<JsonElement>(stdout);
        Assert.True(hits.GetArrayLength() > 0);
        string first = $"{hits[0].GetProperty("layer").GetInt32()}:{hits[0].GetProperty("feature").GetInt32()}";

        (code, _, err) = CliRunner.Run("features", "label", "--db", dir.Path, first, "Texas cities");
        Assert.True(code == 0, err);
        (code, stdout, _) = CliRunner.Run("features", "search", "--db", dir.Path, "texas cities", "--json");
        Assert.Equal(first, $"{JsonSerializer.Deserialize<JsonElement>(stdout)[0].GetProperty("layer").GetInt32()}:{JsonSerializer.Deserialize<JsonElement>(stdout)[0].GetProperty("feature").GetInt32()}");
        // A rebuild of the same dictionary keeps the user's label.
        Assert.Equal(0, CliRunner.Run("features", "merge", dir.Path).Code);
        (code, stdout, _) = CliRunner.Run("features", "show", "--db", dir.Path, first, "--json");
        var card = JsonSerializer.Deserialize<JsonElement>(stdout);
        Assert.Equal("Texas cities", card.GetProperty("summary").GetProperty("label").GetString());
        Assert.NotEqual("Texas cities", card.GetProperty("summary").GetProperty("autoLabel").GetString());

        (code, stdout, err) = CliRunner.Run("features", "export", "--db", dir.Path, "--out", export.Path, "--layout", "json", "--features", first);
        Assert.True(code == 0, err);
        var parts = first.Split(':').Select(int.Parse).ToArray();
        long index = (long)(parts[0] + parts[1]) * (parts[0] + parts[1] + 1) / 2 + parts[1];
        var file = JsonSerializer.Deserialize<JsonElement>(File.ReadAllText(Path.Combine(export.Path, "features", "clt", $"{index}.json")));
        Assert.Equal(index, file.GetProperty("index").GetInt64());
        var topGroup = file.GetProperty("examples_quantiles")[0];
        Assert.Equal("Top activations", topGroup.GetProperty("quantile_name").GetString());
        var ex = topGroup.GetProperty("examples")[0];
        int at = ex.GetProperty("train_token_ind").GetInt32();
        Assert.Equal(card.GetProperty("top")[0].GetProperty("activation").GetSingle(), ex.GetProperty("tokens_acts_list")[at].GetSingle(), 5);
        Assert.Equal(card.GetProperty("summary").GetProperty("max").GetSingle(), file.GetProperty("act_max").GetSingle(), 5);

        // circuit-tracer's newest layout, read as its frontend reads it: index.json.gz (a list by layer of {filename, offsets}), the
        // feature's byte range of the layer's .bin, a 4-byte little-endian length, zlib-compressed JSON; the Cantor index unpaired.
        using var bin = new TempDir();
        (code, _, err) = CliRunner.Run("features", "export", "--db", dir.Path, "--out", bin.Path);
        Assert.True(code == 0, err);
        var store = FeatureStore.Open(Path.Combine(dir.Path, FeatureBuild.MergedName));
        JsonElement indexJson;
        using (var gz = new System.IO.Compression.GZipStream(File.OpenRead(Path.Combine(bin.Path, "index.json.gz")), System.IO.Compression.CompressionMode.Decompress))
            indexJson = JsonSerializer.Deserialize<JsonElement>(gz);
        long w = (long)Math.Floor((Math.Sqrt(8.0 * index + 1) - 1) / 2), y = index - (w * w + w) / 2, x = w - y;   // cantorUnpair
        Assert.Equal((parts[0], parts[1]), ((int)x, (int)y));
        var entry = indexJson[(int)x];
        var offsets = entry.GetProperty("offsets").EnumerateArray().Select(o => o.GetInt64()).ToArray();
        Assert.Equal(store.Info.DDict + 1, offsets.Length);
        Assert.Equal(new FileInfo(Path.Combine(bin.Path, entry.GetProperty("filename").GetString()!)).Length, offsets[^1]);
        var bytes = File.ReadAllBytes(Path.Combine(bin.Path, entry.GetProperty("filename").GetString()!))[(int)offsets[y]..(int)offsets[y + 1]];
        int length = bytes[0] | bytes[1] << 8 | bytes[2] << 16 | bytes[3] << 24;
        Assert.Equal(bytes.Length - 4, length);
        JsonElement feature;
        using (var z = new System.IO.Compression.ZLibStream(new MemoryStream(bytes, 4, length), System.IO.Compression.CompressionMode.Decompress))
            feature = JsonSerializer.Deserialize<JsonElement>(z);
        var dashboard = store.Dashboard(parts[0], parts[1]);
        Assert.Equal(index, feature.GetProperty("index").GetInt64());
        Assert.Equal(dashboard.Summary.Frequency, feature.GetProperty("activation_frequency").GetDouble(), 9);
        // Percentiles ascending, 100 of them, the last the maximum, each inside the store's quarter-octave bin where its rank falls.
        var q = feature.GetProperty("quantile_values").EnumerateArray().Select(v => v.GetDouble()).ToArray();
        double min = feature.GetProperty("act_min").GetDouble(), max = feature.GetProperty("act_max").GetDouble();
        Assert.Equal(100, q.Length);
        Assert.Equal(q.Order(), q);
        Assert.Equal(dashboard.Summary.Max, q[^1], 5);
        long total = dashboard.Histogram.Sum(b => b.Count), seen = 0;
        foreach (var b in dashboard.Histogram)
        {
            for (int i = 0; i < 99; i++)
            {
                double rank = (i + 1) / 100.0 * total;
                if (rank > seen && rank <= seen + b.Count) Assert.InRange(q[i], b.Low - 1e-9, Math.Min(b.High, dashboard.Summary.Max) + 1e-9);
            }
            seen += b.Count;
        }
        // The histogram counts every firing between act_min and act_max, and every firing shown lies there.
        Assert.Equal(dashboard.Summary.Count, feature.GetProperty("histogram").EnumerateArray().Sum(v => v.GetDouble()), 1);
        foreach (var group in feature.GetProperty("examples_quantiles").EnumerateArray())
            foreach (var e in group.GetProperty("examples").EnumerateArray())
            {
                var acts = e.GetProperty("tokens_acts_list").EnumerateArray().Select(a => a.GetDouble()).ToArray();
                Assert.Equal(e.GetProperty("tokens").GetArrayLength(), acts.Length);
                Assert.All(acts.Where(a => a > 0), a => Assert.InRange(a, min - 1e-6, max + 1e-6));
            }

        // Bad input: unknown feature, bad spec, missing store.
        Assert.Contains("out of range", CliRunner.Run("features", "show", "--db", dir.Path, "0:99999").Err);
        Assert.Contains("LAYER:FEATURE", CliRunner.Run("features", "show", "--db", dir.Path, "abc").Err);
        Assert.Contains("not found", CliRunner.Run("features", "show", "--db", Path.Combine(dir.Path, "none.db"), "0:1").Err);
    }

    [Fact]
    public async Task ExplanationsComeFromAnOpenAiCompatibleServerAndItsFailuresAreClear()
    {
        using var dir = new TempDir();
        Assert.Equal(0, CliRunner.Run("features", "build", "--texts", "200", "--out", dir.Path).Code);
        var store = FeatureStore.Open(Path.Combine(dir.Path, FeatureBuild.MergedName));
        var hit = store.Search(null, 1)[0];
        var requests = new List<JsonElement>();
        using var server = new FakeChatServer(body =>
        {
            requests.Add(JsonSerializer.Deserialize<JsonElement>(body));
            return (200, """{"choices":[{"message":{"role":"assistant","content":"  Fires on sentence-final periods.  "}}]}""");
        });
        var (code, stdout, err) = await Task.Run(() => CliRunner.Run("features", "explain", "--db", dir.Path, "--endpoint", server.Url + "v1", "--llm", "tiny",
            "--features", $"{hit.Layer}:{hit.Feature}"));
        Assert.True(code == 0, err);
        Assert.Contains("Fires on sentence-final periods.", stdout);
        Assert.Equal("Fires on sentence-final periods.", store.Dashboard(hit.Layer, hit.Feature).Summary.Explanation);
        var req = Assert.Single(requests);
        Assert.Equal("tiny", req.GetProperty("model").GetString());
        string prompt = req.GetProperty("messages")[1].GetProperty("content").GetString()!;
        var top = store.Dashboard(hit.Layer, hit.Feature).Top[0];
        Assert.Contains($"⟦{top.Tokens[top.MaxIndex]}⟧", prompt);
        // Searching finds the explanation.
        Assert.Contains(store.Search("sentence-final"), h => h.Feature == hit.Feature && h.Layer == hit.Layer);

        using var failing = new FakeChatServer(_ => (500, "model not loaded"));
        (code, _, err) = await Task.Run(() => CliRunner.Run("features", "explain", "--db", dir.Path, "--endpoint", failing.Url + "v1", "--features", $"{hit.Layer}:{hit.Feature}"));
        Assert.Equal(2, code);
        Assert.Contains("answered 500", err);
        Assert.Contains("model not loaded", err);
        using var odd = new FakeChatServer(_ => (200, "{\"result\": 1}"));
        (code, _, err) = await Task.Run(() => CliRunner.Run("features", "explain", "--db", dir.Path, "--endpoint", odd.Url + "v1", "--features", $"{hit.Layer}:{hit.Feature}"));
        Assert.Contains("choices[0].message.content", err);
        (code, _, err) = await Task.Run(() => CliRunner.Run("features", "explain", "--db", dir.Path, "--endpoint", "http://127.0.0.1:9/v1", "--features", $"{hit.Layer}:{hit.Feature}"));
        Assert.Equal(2, code);
        Assert.Contains("cannot reach", err);
    }

    /// <summary>A loopback HTTP server answering POST /v1/chat/completions with a canned reply.</summary>
    internal sealed class FakeChatServer : IDisposable
    {
        HttpListener _listener = new();
        readonly Task _loop;

        public FakeChatServer(Func<string, (int Status, string Body)> reply)
        {
            // A port the OS just handed out (not a random guess, which can collide with Kestrel's ephemeral ports under parallel tests);
            // a fresh listener per attempt, since one whose Start failed keeps the failed prefix.
            for (int attempt = 0; ; attempt++)
            {
                int port;
                using (var probe = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0)) { probe.Start(); port = ((IPEndPoint)probe.LocalEndpoint).Port; probe.Stop(); }
                Url = $"http://127.0.0.1:{port}/";
                _listener = new HttpListener();
                _listener.Prefixes.Add(Url);
                try { _listener.Start(); break; }
                catch (HttpListenerException) when (attempt < 20) { try { _listener.Close(); } catch (HttpListenerException) { } }
            }
            _loop = Task.Run(async () =>
            {
                while (_listener.IsListening)
                {
                    HttpListenerContext c;
                    try { c = await _listener.GetContextAsync(); } catch { return; }
                    string body = await new StreamReader(c.Request.InputStream).ReadToEndAsync();
                    // Strict like small servers: a chunked body (no Content-Length) is refused.
                    var (status, text) = c.Request.ContentLength64 <= 0 ? (411, "length required")
                        : c.Request.Url!.AbsolutePath == "/v1/chat/completions" ? reply(body) : (404, "no such path");
                    c.Response.StatusCode = status;
                    var bytes = Encoding.UTF8.GetBytes(text);
                    await c.Response.OutputStream.WriteAsync(bytes);
                    c.Response.Close();
                }
            });
        }

        public string Url { get; private set; } = "";

        public void Dispose()
        {
            try { _listener.Stop(); _listener.Close(); }
            catch (HttpListenerException) { } // releasing a loopback port must not fail the test
        }
    }
}
