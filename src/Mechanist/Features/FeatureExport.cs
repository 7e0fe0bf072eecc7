using System.IO.Compression;
using System.Text.Json;
using System.Text.Json.Serialization;
using Mechanist.IO;

namespace Mechanist.Features;

/// <summary>One example in circuit-tracer's feature file.</summary>
public sealed record CircuitTracerExample(
    [property: JsonPropertyName("tokens")] string[] Tokens,
    [property: JsonPropertyName("tokens_acts_list")] float[] TokensActsList,
    [property: JsonPropertyName("train_token_ind")] int TrainTokenInd,
    [property: JsonPropertyName("is_repeated_datapoint")] bool IsRepeatedDatapoint);

/// <summary>A group of examples in circuit-tracer's feature file.</summary>
public sealed record CircuitTracerQuantile(
    [property: JsonPropertyName("quantile_name")] string QuantileName,
    [property: JsonPropertyName("examples")] CircuitTracerExample[] Examples);

/// <summary>A feature as circuit-tracer's (and Neuronpedia's) graph frontend reads it from <c>features/{scan}/{index}.json</c>.</summary>
public sealed record CircuitTracerFeature(
    [property: JsonPropertyName("transcoder_id")] string TranscoderId,
    [property: JsonPropertyName("index")] long Index,
    [property: JsonPropertyName("examples_quantiles")] CircuitTracerQuantile[] ExamplesQuantiles,
    [property: JsonPropertyName("top_logits")] string[] TopLogits,
    [property: JsonPropertyName("bottom_logits")] string[] BottomLogits,
    [property: JsonPropertyName("act_min")] float ActMin,
    [property: JsonPropertyName("act_max")] float ActMax,
    [property: JsonPropertyName("quantile_values")] double[] QuantileValues,
    [property: JsonPropertyName("histogram")] double[] Histogram,
    [property: JsonPropertyName("activation_frequency")] double ActivationFrequency,
    [property: JsonPropertyName("label")] string Label);

/// <summary>Exports a feature store in circuit-tracer's feature-file layout.</summary>
public static class FeatureExport
{
    /// <summary>The feature index circuit-tracer's graph files use for (layer, feature): the Cantor pairing, as our graph files write it.</summary>
    public static long GraphIndex(int layer, int feature) => (long)(layer + feature) * (layer + feature + 1) / 2 + feature;

    /// <summary>Percentiles circuit-tracer's frontend reads: entry i is the (i + 1)-th percentile.</summary>
    public const int Percentiles = 100;

    /// <summary>Equal-width bins of the exported histogram.</summary>
    public const int HistogramBins = 40;

    /// <summary>
    /// One feature in circuit-tracer's schema, with the values meaning what its frontend reads them as: <c>quantile_values</c> the
    /// 1st..100th percentiles of the feature's nonzero activations over the corpus (ascending), <c>histogram</c> counts of firings in
    /// equal-width bins from <c>act_min</c> to <c>act_max</c>, and those two covering every firing. The store keeps firings in
    /// quarter-octave bins; both are read from them, assuming firings spread evenly in log-activation within a bin (exact at bin edges).
    /// </summary>
    public static CircuitTracerFeature ToCircuitTracer(FeatureDashboard d, string scan)
    {
        CircuitTracerExample Ex(ShownExample e) => new(e.Tokens, e.Acts, e.MaxIndex, false);
        var groups = new List<CircuitTracerQuantile> { new("Top activations", d.Top.Select(Ex).ToArray()) };
        groups.AddRange(d.Intervals.Select(i => new CircuitTracerQuantile(
            $"Interval {i.Low:G3} – {(double.IsPositiveInfinity(i.High) ? "∞" : i.High.ToString("G3"))} ({i.Count:N0} firings)", i.Examples.Select(Ex).ToArray())));
        double max = d.Summary.Max;
        var bins = d.Histogram.Where(b => b.Count > 0).Select(b => new HistogramBin(b.Low, Math.Min(b.High, max), b.Count)).Where(b => b.High >= b.Low).ToArray();
        double min = bins.Length == 0 ? 0 : bins[0].Low;
        return new CircuitTracerFeature(scan, GraphIndex(d.Summary.Layer, d.Summary.Feature), groups.ToArray(),
            d.TopLogits.Select(t => t.Token).ToArray(), d.BottomLogits.Select(t => t.Token).ToArray(),
            (float)min, (float)max, Quantiles(bins, max), EqualWidth(bins, min, max, HistogramBins), d.Summary.Frequency, d.Summary.Label);
    }

    /// <summary>Where within a bin a share <paramref name="t"/> (0..1) of its firings lies: geometric within an octave bin, linear in the bin from 0.</summary>
    static double Within(HistogramBin b, double t) => b.Low <= 0 ? t * b.High : b.Low * Math.Pow(b.High / b.Low, t);

    /// <summary>The share of a bin's firings below <paramref name="x"/>.</summary>
    static double ShareBelow(HistogramBin b, double x) =>
        x <= b.Low ? 0 : x >= b.High ? 1 : b.Low <= 0 ? x / b.High : Math.Log(x / b.Low) / Math.Log(b.High / b.Low);

    /// <summary>The 1st..100th percentiles of the firings in <paramref name="bins"/> (ascending; the 100th is the maximum).</summary>
    public static double[] Quantiles(IReadOnlyList<HistogramBin> bins, double max)
    {
        long total = bins.Sum(b => b.Count);
        var q = new double[Percentiles];
        if (total == 0) return q;
        int at = 0; long before = 0;
        for (int i = 0; i < Percentiles; i++)
        {
            double rank = (i + 1) / (double)Percentiles * total;
            while (at < bins.Count - 1 && before + bins[at].Count < rank) before += bins[at++].Count;
            q[i] = Math.Min(max, Within(bins[at], Math.Clamp((rank - before) / bins[at].Count, 0, 1)));
        }
        q[^1] = max;
        return q;
    }

    /// <summary>The firings in <paramref name="bins"/> counted in <paramref name="n"/> equal-width bins from <paramref name="min"/> to <paramref name="max"/>.</summary>
    public static double[] EqualWidth(IReadOnlyList<HistogramBin> bins, double min, double max, int n)
    {
        var h = new double[n];
        if (bins.Count == 0 || max <= min) { if (bins.Count > 0) h[^1] = bins.Sum(b => b.Count); return h; }
        double width = (max - min) / n;
        foreach (var b in bins)
            for (int k = 0; k < n; k++)
            {
                double lo = min + k * width, hi = k == n - 1 ? max : lo + width;
                double share = ShareBelow(b, hi) - ShareBelow(b, lo);
                if (share > 0) h[k] += share * b.Count;
            }
        return h.Select(x => Math.Round(x, 3)).ToArray();
    }

    /// <summary>The per-layer feature file of the binary layout.</summary>
    public static string LayerFileName(int layer) => $"layer_{layer}.bin";

    /// <summary>
    /// Writes circuit-tracer's newest feature layout at the top of <paramref name="dir"/> (what its frontend reads when a graph's scan is a
    /// local path, served by its <c>local_server</c> with <c>features_dir</c> = <paramref name="dir"/>): <c>index.json.gz</c>, a gzipped JSON
    /// list indexed by model layer of <c>{"filename", "offsets"}</c> (d_dict + 1 byte offsets), and one <c>layer_L.bin</c> per layer whose
    /// record for feature f (bytes offsets[f]..offsets[f+1]) is a 4-byte little-endian length N and N bytes of zlib-compressed UTF-8
    /// JSON in the schema of <see cref="ToCircuitTracer"/>. Every feature has a record (one that never fired, an empty one). Each file is
    /// written atomically. Returns the records written.
    /// </summary>
    public static int WriteBinary(FeatureStore store, string dir, string scan)
    {
        Directory.CreateDirectory(dir);
        var layers = store.Info.Layers;
        var entries = new object?[layers.Max() + 1];
        for (int i = 0; i < entries.Length; i++) entries[i] = new { filename = (string?)null, offsets = Array.Empty<long>() };
        int written = 0;
        foreach (int layer in layers)
        {
            string name = LayerFileName(layer);
            var offsets = new long[store.Info.DDict + 1];
            AtomicFile.Write(Path.Combine(dir, name), stream =>
            {
                long position = 0;
                var length = new byte[4];
                for (int f = 0; f < store.Info.DDict; f++)
                {
                    offsets[f] = position;
                    byte[] json = JsonSerializer.SerializeToUtf8Bytes(ToCircuitTracer(store.Dashboard(layer, f), scan));
                    using var packed = new MemoryStream();
                    using (var z = new ZLibStream(packed, CompressionLevel.Optimal, leaveOpen: true)) z.Write(json);
                    System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(length, (int)packed.Length);
                    stream.Write(length);
                    packed.Position = 0;
                    packed.CopyTo(stream);
                    position += 4 + packed.Length;
                    written++;
                }
                offsets[^1] = position;
            });
            entries[layer] = new { filename = name, offsets };
        }
        AtomicFile.Write(Path.Combine(dir, "index.json.gz"), stream =>
        {
            using var gz = new GZipStream(stream, CompressionLevel.Optimal, leaveOpen: true);
            JsonSerializer.Serialize(gz, entries);
        });
        return written;
    }

    /// <summary>
    /// Writes <c>{dir}/features/{scan}/{index}.json</c> (circuit-tracer's older per-feature layout, also Neuronpedia's) for the given
    /// features (default: every feature that fired), each atomically; returns how many.
    /// </summary>
    public static int Write(FeatureStore store, string dir, string scan, IEnumerable<(int Layer, int Feature)>? features = null)
    {
        if (scan.Length == 0 || scan.Any(c => !(char.IsLetterOrDigit(c) || c is '-' or '_' or '.')) || scan.StartsWith('.'))
            throw new MechanistException($"scan name '{scan}' may hold only letters, digits, '-', '_' and '.'");
        string folder = Path.Combine(dir, "features", scan);
        Directory.CreateDirectory(folder);
        var list = features?.ToList() ?? store.Fired();
        foreach (var (layer, feature) in list)
        {
            var d = store.Dashboard(layer, feature);
            AtomicFile.WriteText(Path.Combine(folder, $"{GraphIndex(layer, feature)}.json"), JsonSerializer.Serialize(ToCircuitTracer(d, scan)));
        }
        return list.Count;
    }
}
