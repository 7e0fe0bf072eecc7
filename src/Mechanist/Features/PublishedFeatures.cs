using System.IO.Compression;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Mechanist.Features;

/// <summary>
/// A transcoder repository's published features in circuit-tracer's layout (what the Gemma-2, Llama and Qwen3 transcoder
/// repositories ship, and what <c>features export</c> writes): <c>index.json.gz</c>, a gzipped JSON list indexed by model layer of
/// <c>{"filename", "offsets"}</c>, and per layer a file whose record for feature f (bytes offsets[f]..offsets[f+1]) is a 4-byte
/// little-endian length N and N bytes of zlib-compressed JSON (<see cref="CircuitTracerFeature"/>'s fields). Read-only; a feature is
/// read from disk when asked for (a seek and one record), so a repository of millions of features opens instantly.
/// </summary>
public sealed class PublishedFeatures : IFeatureStore
{
    /// <summary>The index file's name.</summary>
    public const string IndexName = "index.json.gz";

    /// <summary>Largest record accepted (a corrupt length must not allocate gigabytes).</summary>
    const int MaxRecordBytes = 64 << 20;

    readonly string _dir;
    readonly Dictionary<int, (string File, long[] Offsets)> _layers;

    PublishedFeatures(string dir, Dictionary<int, (string, long[])> layers, FeatureStoreInfo info) { _dir = dir; _layers = layers; Info = info; }

    /// <inheritdoc/>
    public FeatureStoreInfo Info { get; }

    /// <summary>Opens a folder holding <c>index.json.gz</c>; a clear error for a missing, corrupt or inconsistent index.</summary>
    public static PublishedFeatures Open(string dir)
    {
        string index = Path.Combine(dir, IndexName);
        if (!File.Exists(index)) throw new MechanistException($"{dir}: no {IndexName} (not a folder of published features)");
        JsonElement root;
        try
        {
            using var gz = new GZipStream(File.OpenRead(index), CompressionMode.Decompress);
            root = JsonDocument.Parse(gz).RootElement.Clone();
        }
        catch (Exception e) when (e is InvalidDataException or JsonException or IOException)
        {
            throw new MechanistException($"{index}: not a gzipped JSON list ({e.Message})");
        }
        if (root.ValueKind != JsonValueKind.Array) throw new MechanistException($"{index}: expected a JSON list indexed by layer");
        var layers = new Dictionary<int, (string, long[])>();
        int layer = -1;
        foreach (var entry in root.EnumerateArray())
        {
            layer++;
            if (entry.ValueKind != JsonValueKind.Object || !entry.TryGetProperty("filename", out var name) || name.ValueKind != JsonValueKind.String) continue;
            string file = name.GetString()!;
            if (Path.IsPathRooted(file) || file.Split('/', '\\').Contains(".."))
                throw new MechanistException($"{index}: layer {layer}'s file '{file}' is outside the folder");
            if (!entry.TryGetProperty("offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() < 2)
                throw new MechanistException($"{index}: layer {layer} has no offsets");
            var offsets = off.EnumerateArray().Select(o => o.TryGetInt64(out long v) ? v : -1).ToArray();
            for (int i = 0; i < offsets.Length; i++)
                if (offsets[i] < 0 || (i > 0 && offsets[i] < offsets[i - 1]))
                    throw new MechanistException($"{index}: layer {layer}'s offsets are not ascending byte positions (entry {i})");
            string path = Path.Combine(dir, file);
            if (!File.Exists(path)) throw new MechanistException($"{dir}: layer {layer}'s feature file {file} is missing");
            if (new FileInfo(path).Length < offsets[^1]) throw new MechanistException($"{path}: shorter ({new FileInfo(path).Length:N0} bytes) than its offsets say ({offsets[^1]:N0})");
            layers[layer] = (path, offsets);
        }
        if (layers.Count == 0) throw new MechanistException($"{index}: names no layer file");
        var ordered = layers.Keys.Order().ToArray();
        var info = new FeatureStoreInfo($"published features ({Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir)))})", dir, "",
            "published", ordered, layers.Values.Max(l => l.Item2.Length - 1), "", 0, -1, 1, 0, 0, true, new FeatureSketchSettings());
        return new PublishedFeatures(dir, layers, info);
    }

    /// <inheritdoc/>
    public (int LayerIndex, int Feature) Resolve(string spec)
    {
        var (layer, feature) = FeatureStores.ParseSpec(spec, Info.Layers);
        return Check(layer, feature);
    }

    (int LayerIndex, int Feature) Check(int layer, int feature)
    {
        if (!_layers.TryGetValue(layer, out var l)) throw new MechanistException($"the published features have no layer {layer} (they have {string.Join(", ", Info.Layers)})");
        if (feature < 0 || feature >= l.Offsets.Length - 1) throw new MechanistException($"feature {feature} is out of range (layer {layer} has {l.Offsets.Length - 1})");
        return (Array.IndexOf(Info.Layers, layer), feature);
    }

    /// <summary>The raw record of one feature: its JSON, inflated; null for an empty record (a feature that never fired).</summary>
    public JsonElement? Record(int layer, int feature)
    {
        Check(layer, feature);
        var (path, offsets) = _layers[layer];
        long start = offsets[feature], span = offsets[feature + 1] - start;
        if (span == 0) return null;
        if (span < 4 || span > MaxRecordBytes) throw new MechanistException($"{path}: feature {feature}'s record is {span:N0} bytes (corrupt offsets)");
        var bytes = new byte[span];
        using (var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            f.Position = start;
            f.ReadExactly(bytes);
        }
        int n = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(bytes);
        if (n < 0 || n > span - 4) throw new MechanistException($"{path}: feature {feature}'s length prefix ({n:N0}) does not fit its record ({span - 4:N0} bytes)");
        try
        {
            using var z = new ZLibStream(new MemoryStream(bytes, 4, n), CompressionMode.Decompress);
            return JsonDocument.Parse(z).RootElement.Clone();
        }
        catch (Exception e) when (e is InvalidDataException or JsonException)
        {
            throw new MechanistException($"{path}: feature {feature}'s record is not zlib-compressed JSON ({e.Message})");
        }
    }

    /// <inheritdoc/>
    /// <remarks>
    /// The layout keeps no token counts: Count and Tokens are 0 and Frequency is the file's <c>activation_frequency</c>; Mean is the
    /// mean of its percentiles (<c>quantile_values</c>); the histogram is its equal-width bins from <c>act_min</c> to <c>act_max</c>;
    /// logits are tokens without values (NaN); the first example group is the top list, the others keep their names.
    /// </remarks>
    public FeatureDashboard Dashboard(int layer, int feature)
    {
        var (li, f) = Check(layer, feature);
        var empty = new FeatureHit(li, layer, f, "", "", null, null, 0, 0, 0, 0, 0);
        if (Record(layer, feature) is not { } r || r.ValueKind != JsonValueKind.Object)
            return new FeatureDashboard(empty, Info.DictionaryKind, Array.Empty<HistogramBin>(), Array.Empty<TokenValue>(), Array.Empty<TokenValue>(),
                null, Array.Empty<ShownExample>(), Array.Empty<ExampleInterval>(), HistogramScale: FeatureHistograms.EqualWidth);
        double Num(string name) => r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : double.NaN;
        double[] Nums(string name) => r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array
            ? v.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.Number ? x.GetDouble() : double.NaN).ToArray() : Array.Empty<double>();
        string[] Strings(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Array
            ? v.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.String ? x.GetString()! : x.ToString()).ToArray() : Array.Empty<string>();
        string label = r.TryGetProperty("label", out var lv) && lv.ValueKind == JsonValueKind.String ? lv.GetString()! : "";
        double min = Num("act_min"), max = Num("act_max"), frequency = Num("activation_frequency");
        var quantiles = Nums("quantile_values");
        var hit = new FeatureHit(li, layer, f, label, label, null, null, 0, 0, double.IsNaN(frequency) ? 0 : frequency, (float)max,
            quantiles.Length > 0 ? quantiles.Where(double.IsFinite).DefaultIfEmpty(double.NaN).Average() : double.NaN);
        var counts = Nums("histogram");
        double width = counts.Length == 0 ? 0 : (max - min) / counts.Length;
        var bins = double.IsFinite(width) ? counts.Select((c, k) => new HistogramBin(min + k * width, k == counts.Length - 1 ? max : min + (k + 1) * width, (long)Math.Round(c))).ToArray()
            : Array.Empty<HistogramBin>();
        var groups = new List<(string Name, ShownExample[] Examples)>();
        if (r.TryGetProperty("examples_quantiles", out var eq) && eq.ValueKind == JsonValueKind.Array)
            foreach (var g in eq.EnumerateArray())
            {
                string name = g.TryGetProperty("quantile_name", out var qn) && qn.ValueKind == JsonValueKind.String ? qn.GetString()! : "";
                var examples = g.TryGetProperty("examples", out var ex) && ex.ValueKind == JsonValueKind.Array
                    ? ex.EnumerateArray().Select(e =>
                    {
                        var tokens = Strings(e, "tokens");
                        var acts = e.TryGetProperty("tokens_acts_list", out var a) && a.ValueKind == JsonValueKind.Array
                            ? a.EnumerateArray().Select(x => x.ValueKind == JsonValueKind.Number ? x.GetSingle() : 0f).ToArray() : Array.Empty<float>();
                        Array.Resize(ref acts, tokens.Length);
                        int at = acts.Length == 0 ? 0 : Array.IndexOf(acts, acts.Max());
                        int position = e.TryGetProperty("train_token_ind", out var p) && p.TryGetInt32(out int pi) ? pi : at;
                        return new ShownExample(-1, position, acts.Length == 0 ? 0 : acts[at], tokens, acts, at);
                    }).ToArray() : Array.Empty<ShownExample>();
                groups.Add((name, examples));
            }
        var top = groups.Count > 0 ? groups[0].Examples : Array.Empty<ShownExample>();
        var intervals = groups.Skip(1).Select(g => new ExampleInterval(
            g.Examples.Length == 0 ? 0 : g.Examples.Min(e => e.Activation), g.Examples.Length == 0 ? 0 : g.Examples.Max(e => e.Activation), g.Examples.Length, g.Examples, g.Name)).ToArray();
        TokenValue[] Logits(string name) => Strings(r, name).Select(t => new TokenValue(t, -1, float.NaN)).ToArray();
        return new FeatureDashboard(hit, Info.DictionaryKind, bins, Logits("top_logits"), Logits("bottom_logits"), null, top, intervals,
            HistogramScale: FeatureHistograms.EqualWidth);
    }

    /// <inheritdoc/>
    /// <remarks>Published features carry no text index: a query names one feature, "LAYER:FEATURE".</remarks>
    public List<FeatureHit> Search(string? query, int limit = 50, int? layer = null)
    {
        query = query?.Trim();
        if (string.IsNullOrEmpty(query)) return new List<FeatureHit>();
        if (!Regex.IsMatch(query, @"^\d+\s*[:/]\s*\d+$") && !(Info.Layers.Length == 1 && Regex.IsMatch(query, @"^\d+$")))
            throw new MechanistException("published features are found by LAYER:FEATURE only (they carry no text index; build a store with 'mechanist features build' to search text)");
        var (li, f) = Resolve(query);
        return new List<FeatureHit> { Dashboard(Info.Layers[li], f).Summary };
    }

    /// <inheritdoc/>
    public Dictionary<string, string> LabelsOf(IReadOnlyList<(int Layer, int Feature)> features)
    {
        var result = new Dictionary<string, string>();
        foreach (var (layer, feature) in features)
        {
            if (!_layers.TryGetValue(layer, out var l) || feature < 0 || feature >= l.Offsets.Length - 1) continue;
            if (Record(layer, feature) is { ValueKind: JsonValueKind.Object } r && r.TryGetProperty("label", out var v) && v.ValueKind == JsonValueKind.String && v.GetString() is { Length: > 0 } s)
                result[$"{layer}:{feature}"] = s;
        }
        return result;
    }

    /// <inheritdoc/>
    public void SetLabel(int layer, int feature, string? label) =>
        throw new MechanistException($"{_dir}: published features are read-only (build a store with 'mechanist features build' to keep your own labels)");

    /// <inheritdoc/>
    public FeatureScore[] Scores(int layer, int feature) => Array.Empty<FeatureScore>();
}
