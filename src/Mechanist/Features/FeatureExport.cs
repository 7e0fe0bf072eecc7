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

    /// <summary>One feature in circuit-tracer's schema.</summary>
    public static CircuitTracerFeature ToCircuitTracer(FeatureDashboard d, string scan)
    {
        CircuitTracerExample Ex(ShownExample e) => new(e.Tokens, e.Acts, e.MaxIndex, false);
        var groups = new List<CircuitTracerQuantile> { new("Top activations", d.Top.Select(Ex).ToArray()) };
        groups.AddRange(d.Intervals.Select(i => new CircuitTracerQuantile(
            $"Interval {i.Low:G3} – {(double.IsPositiveInfinity(i.High) ? "∞" : i.High.ToString("G3"))} ({i.Count:N0} firings)", i.Examples.Select(Ex).ToArray())));
        var acts = d.Top.Concat(d.Intervals.SelectMany(i => i.Examples)).Select(e => e.Activation).ToList();
        return new CircuitTracerFeature(scan, GraphIndex(d.Summary.Layer, d.Summary.Feature), groups.ToArray(),
            d.TopLogits.Select(t => t.Token).ToArray(), d.BottomLogits.Select(t => t.Token).ToArray(),
            acts.Count == 0 ? 0 : acts.Min(), d.Summary.Max, d.Intervals.Select(i => i.Low).ToArray(), d.Histogram.Select(b => (double)b.Count).ToArray(),
            d.Summary.Frequency, d.Summary.Label);
    }

    /// <summary>
    /// Writes <c>{dir}/features/{scan}/{index}.json</c> for the given features (default: every feature that fired), each atomically;
    /// returns how many.
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
