using System.IO.Compression;
using System.Text;
using System.Text.Json.Nodes;
using Mechanist.Features;
using Mechanist.Tests.Cli;

namespace Mechanist.Tests.Features;

/// <summary>
/// A transcoder repository's published features (circuit-tracer's layout: index.json.gz + per-layer files of 4-byte length,
/// zlib JSON), written here byte by byte as such a repository ships them, read by <c>features show</c> and the feature store contract.
/// </summary>
public sealed class PublishedFeaturesTests
{
    /// <summary>Layer 0 feature 0's record: two example groups, equal-width histogram counts, frequency, logits.</summary>
    static JsonObject Record0() => new()
    {
        ["index"] = 0,
        ["examples_quantiles"] = new JsonArray(
            new JsonObject { ["quantile_name"] = "Top activations", ["examples"] = new JsonArray(
                new JsonObject { ["tokens"] = new JsonArray("<bos>", "The", " cat", " sat"), ["tokens_acts_list"] = new JsonArray(0, 0.5, 3.0, 1.0), ["train_token_ind"] = 2, ["is_repeated_datapoint"] = false }) },
            new JsonObject { ["quantile_name"] = "Subsample Interval 0", ["examples"] = new JsonArray(
                new JsonObject { ["tokens"] = new JsonArray("A", " dog"), ["tokens_acts_list"] = new JsonArray(0.25, 0), ["train_token_ind"] = 0, ["is_repeated_datapoint"] = false }) }),
        ["top_logits"] = new JsonArray(" mat", " hat"),
        ["bottom_logits"] = new JsonArray(" sky"),
        ["act_min"] = 0.25, ["act_max"] = 3.0,
        ["quantile_values"] = new JsonArray(Enumerable.Range(1, 100).Select(i => (JsonNode)(i * 0.03)).ToArray()),
        ["histogram"] = new JsonArray(4, 0, 1),
        ["activation_frequency"] = 0.002,
    };

    /// <summary>Writes the fixture: layers 0 and 2 (layer 1 has no file), two features each; layer 2 feature 1 is an empty record.</summary>
    internal static void WriteFixture(string dir)
    {
        Directory.CreateDirectory(Path.Combine(dir, "bins"));
        byte[] Packed(JsonObject o)
        {
            using var ms = new MemoryStream();
            using (var z = new ZLibStream(ms, CompressionLevel.Fastest, leaveOpen: true)) z.Write(Encoding.UTF8.GetBytes(o.ToJsonString()));
            var body = ms.ToArray();
            return BitConverter.GetBytes(body.Length).Concat(body).ToArray(); // little-endian on x64, as the layout says
        }
        JsonObject Layer(string name, params byte[][] records)
        {
            var offsets = new JsonArray(0L);
            long at = 0;
            foreach (var r in records) { at += r.Length; offsets.Add(at); }
            File.WriteAllBytes(Path.Combine(dir, name), records.SelectMany(r => r).ToArray());
            return new JsonObject { ["filename"] = name, ["offsets"] = offsets };
        }
        var second = Record0(); second["index"] = 1; second["label"] = "cats on mats";
        var index = new JsonArray(
            Layer("bins/L0.bin", Packed(Record0()), Packed(second)),
            null,
            Layer("bins/L2.bin", Packed(Record0()), Array.Empty<byte>()));
        using var gz = new GZipStream(File.Create(Path.Combine(dir, "index.json.gz")), CompressionLevel.Fastest);
        gz.Write(Encoding.UTF8.GetBytes(index.ToJsonString()));
    }

    [Fact]
    public void APublishedFeatureReadsAsADashboardWithTheLayoutsMeanings()
    {
        using var dir = new TempDir();
        WriteFixture(dir.Path);
        var store = FeatureStores.Open(dir.Path);
        Assert.IsType<PublishedFeatures>(store);
        Assert.Equal(new[] { 0, 2 }, store.Info.Layers);
        Assert.Equal(2, store.Info.DDict);
        var d = store.Dashboard(0, 0);
        Assert.Equal(new[] { "<bos>", "The", " cat", " sat" }, d.Top[0].Tokens);
        Assert.Equal(2, d.Top[0].MaxIndex);
        Assert.Equal(3f, d.Top[0].Activation);
        Assert.Equal("Subsample Interval 0", d.Intervals[0].Name);
        Assert.Equal(0.25f, d.Intervals[0].Examples[0].Activation);
        // Three equal-width bins from 0.25 to 3: edges 0.25, 1.1667, 2.0833, 3.
        Assert.Equal(FeatureHistograms.EqualWidth, d.HistogramScale);
        Assert.Equal(new long[] { 4, 0, 1 }, d.Histogram.Select(b => b.Count));
        Assert.Equal(0.25 + 2.75 / 3, d.Histogram[0].High, 9);
        Assert.Equal(3, d.Histogram[2].High, 9);
        Assert.Equal(0.002, d.Summary.Frequency);
        Assert.Equal(3f, d.Summary.Max);
        Assert.Equal(0.03 * 50.5, d.Summary.Mean, 9); // the mean of the percentiles 0.03..3
        Assert.Equal(new[] { " mat", " hat" }, d.TopLogits.Select(t => t.Token));
        Assert.True(float.IsNaN(d.TopLogits[0].Value));
        Assert.Equal("cats on mats", store.Dashboard(0, 1).Summary.Label);
        Assert.Equal(new Dictionary<string, string> { ["0:1"] = "cats on mats" }, store.LabelsOf(new[] { (0, 0), (0, 1), (2, 1), (5, 0) }));
        // An empty record is a feature that never fired.
        Assert.Empty(store.Dashboard(2, 1).Top);
        Assert.Single(store.Search("2:0"));
        Assert.Contains("LAYER:FEATURE", Assert.Throws<MechanistException>(() => store.Search("cat")).Message);
        Assert.Contains("no layer 1", Assert.Throws<MechanistException>(() => store.Dashboard(1, 0)).Message);
        Assert.Contains("read-only", Assert.Throws<MechanistException>(() => store.SetLabel(0, 0, "x")).Message);
    }

    [Fact]
    public void CorruptPublishedFeaturesAreRefusedByName()
    {
        using var dir = new TempDir();
        WriteFixture(dir.Path);
        // A length prefix longer than the record.
        var bytes = File.ReadAllBytes(dir.File("bins/L2.bin"));
        BitConverter.GetBytes(1 << 20).CopyTo(bytes, 0);
        File.WriteAllBytes(dir.File("bins/L2.bin"), bytes);
        Assert.Contains("length prefix", Assert.Throws<MechanistException>(() => FeatureStores.Open(dir.Path).Dashboard(2, 0)).Message);
        // A file named outside the folder.
        using (var gz = new GZipStream(File.Create(dir.File("index.json.gz")), CompressionLevel.Fastest))
            gz.Write(Encoding.UTF8.GetBytes("""[{"filename": "../../etc/passwd", "offsets": [0, 4]}]"""));
        Assert.Contains("outside the folder", Assert.Throws<MechanistException>(() => FeatureStores.Open(dir.Path)).Message);
        File.WriteAllText(dir.File("index.json.gz"), "not gzip");
        Assert.Contains("not a gzipped JSON list", Assert.Throws<MechanistException>(() => FeatureStores.Open(dir.Path)).Message);
    }

    [Fact]
    public void FeaturesShowPrintsAPublishedFeature()
    {
        using var dir = new TempDir();
        WriteFixture(dir.Path);
        var (code, output, err) = CliRunner.Run("features", "show", "--db", dir.Path, "0:1");
        Assert.True(code == 0, err);
        Assert.Contains("cats on mats", output);
        Assert.Contains("0.200", output);
        Assert.Contains("Subsample Interval 0", output);
        Assert.Contains("equal-width", output);
        Assert.Contains("mat", output);
        (code, _, err) = CliRunner.Run("features", "show", "--db", dir.Path, "1:0");
        Assert.Equal(2, code);
        Assert.Contains("no layer 1", err);
    }
}
