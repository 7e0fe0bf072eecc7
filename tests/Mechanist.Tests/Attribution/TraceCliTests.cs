using System.Text.Json;
using Mechanist.IO;
using Mechanist.Tests.Cli;

namespace Mechanist.Tests.Attribution;

/// <summary>mechanist trace end to end, and its errors.</summary>
public class TraceCliTests
{
    [Fact]
    public void TraceWritesTheGoldenPrunedGraph()
    {
        using var dir = new TempDir();
        string golden = SharedData.PathOf("golden", "attribution", "llama_clt_jumprelu");
        using var reference = SafetensorsFile.Open(Path.Combine(golden, "reference.safetensors"));
        using var ids = reference.Read("input_ids");
        var (code, stdout, err) = CliRunner.Run("trace", "-m", SharedData.PathOf("golden", "models", "llama"), "--transcoders", Path.Combine(golden, "transcoders"),
            "--tokens", string.Join(",", ids.data<long>().ToArray()), "--out", dir.File("g.json"));
        Assert.True(code == 0, err);
        var ours = JsonDocument.Parse(File.ReadAllText(dir.File("g.json"))).RootElement;
        var theirs = JsonDocument.Parse(File.ReadAllText(Path.Combine(golden, "graph_pruned.json"))).RootElement;
        Assert.Equal(theirs.GetProperty("nodes").EnumerateArray().Select(n => n.GetProperty("node_id").GetString()),
            ours.GetProperty("nodes").EnumerateArray().Select(n => n.GetProperty("node_id").GetString()));
        Assert.Equal(theirs.GetProperty("links").GetArrayLength(), ours.GetProperty("links").GetArrayLength());
        Assert.Contains("replacement 0.691", stdout);
    }

    [Fact]
    public void TracedGraphsCarryHeadLoadingsAndQkAttributionsThatAddUp()
    {
        using var dir = new TempDir();
        var (code, _, err) = CliRunner.Run("trace", "--prompt", "The capital of the state containing Dallas is", "--out", dir.File("qk.json"));
        Assert.True(code == 0, err);
        var g = JsonDocument.Parse(File.ReadAllText(dir.File("qk.json"))).RootElement;
        var position = g.GetProperty("nodes").EnumerateArray().ToDictionary(n => n.GetProperty("node_id").GetString()!, n => n.GetProperty("ctx_idx").GetInt32());
        int loaded = 0;
        foreach (var link in g.GetProperty("links").EnumerateArray())
        {
            bool crosses = position[link.GetProperty("source").GetString()!] != position[link.GetProperty("target").GetString()!];
            Assert.Equal(crosses, link.TryGetProperty("head_loadings", out var heads));
            if (!crosses) continue;
            double sum = heads.EnumerateArray().Sum(h => h.GetProperty("value").GetDouble()) + link.GetProperty("head_loadings_rest").GetDouble();
            double weight = link.GetProperty("weight").GetDouble();
            Assert.True(Math.Abs(sum - weight) <= 1e-4 * Math.Max(1, Math.Abs(weight)), $"{link}: loadings sum to {sum}");
            Assert.All(heads.EnumerateArray(), h => Assert.NotEqual(position[link.GetProperty("source").GetString()!], h.GetProperty("query").GetInt32()));
            loaded++;
        }
        Assert.True(loaded > 50);
        var scores = g.GetProperty("qk_attributions").EnumerateArray().ToList();
        Assert.NotEmpty(scores);
        foreach (var r in scores)
            Assert.Equal(r.GetProperty("score").GetDouble(), r.GetProperty("terms").EnumerateArray().Sum(t => t.GetProperty("value").GetDouble()) + r.GetProperty("rest").GetDouble(), 3);
        // The Dallas token reaches "is" through L0H2, which attends there because of the two tokens' embeddings.
        var dallas = g.GetProperty("links").EnumerateArray().Where(l => l.GetProperty("source").GetString()!.EndsWith("_7") && l.GetProperty("source").GetString()!.StartsWith("E_")
            && l.GetProperty("target").GetString() == "0_776_8").Single();
        var top = dallas.GetProperty("head_loadings")[0];
        Assert.Equal((0, 2, 8), (top.GetProperty("layer").GetInt32(), top.GetProperty("head").GetInt32(), top.GetProperty("query").GetInt32()));
        var why = scores.Single(r => r.GetProperty("layer").GetInt32() == 0 && r.GetProperty("head").GetInt32() == 2 && r.GetProperty("query").GetInt32() == 8 && r.GetProperty("key").GetInt32() == 7);
        Assert.Equal("E_290_7", why.GetProperty("terms")[0].GetProperty("key").GetString());
        // A logit difference as the target: the loadings of the edges into it follow its own readout.
        (code, _, err) = CliRunner.Run("trace", "--prompt", "The capital of the state containing Dallas is", "--target-diff", "Austin", "Dallas", "--out", dir.File("diff.json"));
        Assert.True(code == 0, err);
        var diff = JsonDocument.Parse(File.ReadAllText(dir.File("diff.json"))).RootElement;
        var logit = diff.GetProperty("nodes").EnumerateArray().Single(n => n.GetProperty("feature_type").GetString() == "logit").GetProperty("node_id").GetString();
        var intoLogit = diff.GetProperty("links").EnumerateArray().Where(l => l.GetProperty("target").GetString() == logit && l.TryGetProperty("head_loadings", out _)).ToList();
        Assert.NotEmpty(intoLogit);
        foreach (var link in intoLogit)
            Assert.Equal(link.GetProperty("weight").GetDouble(), link.GetProperty("head_loadings").EnumerateArray().Sum(h => h.GetProperty("value").GetDouble()) + link.GetProperty("head_loadings_rest").GetDouble(), 3);
        // The file still reads as a graph, and --no-qk leaves the fields out.
        Assert.Equal(g.GetProperty("links").GetArrayLength(), Mechanist.Attribution.GraphFileReader.Read(dir.File("qk.json")).Graph.Edges.Count);
        (code, _, err) = CliRunner.Run("trace", "--prompt", "The capital of the state containing Dallas is", "--no-qk", "--out", dir.File("plain.json"));
        Assert.True(code == 0, err);
        Assert.DoesNotContain("head_loadings", File.ReadAllText(dir.File("plain.json")));
        Assert.DoesNotContain("qk_attributions", File.ReadAllText(dir.File("plain.json")));
    }

    [Fact]
    public void AnAttentionOnlyModelTracesWithoutTranscoders()
    {
        // attn-only-2l on a repeated sequence: tokens → logit through the frozen attention; the induction edge ("210" at 5, what
        // followed 97 the first time) leads, split over layer 1's heads at the query 12.
        using var dir = new TempDir();
        const string tokens = "1,301,122,355,97,210,388,161,74,301,122,355,97";
        var (code, output, err) = CliRunner.Run("trace", "--model", "attn-only-2l", "--tokens", tokens, "--out", dir.File("induction.json"));
        Assert.True(code == 0, err);
        Assert.Contains("0 active features", output);
        Assert.Contains("E_210_5", output);
        var g = JsonDocument.Parse(File.ReadAllText(dir.File("induction.json"))).RootElement;
        Assert.All(g.GetProperty("nodes").EnumerateArray(), n => Assert.Contains(n.GetProperty("feature_type").GetString(), new[] { "embedding", "logit" }));
        var lead = g.GetProperty("links").EnumerateArray().MaxBy(l => Math.Abs(l.GetProperty("weight").GetDouble()));
        Assert.Equal("E_210_5", lead.GetProperty("source").GetString());
        var first = lead.GetProperty("head_loadings")[0];
        Assert.Equal((1, 12), (first.GetProperty("layer").GetInt32(), first.GetProperty("query").GetInt32()));
        Assert.Contains(g.GetProperty("qk_attributions").EnumerateArray(), r => r.GetProperty("layer").GetInt32() == 1 && r.GetProperty("query").GetInt32() == 12 && r.GetProperty("key").GetInt32() == 5);
        // Transcoders for a model without MLPs are refused, with the reason.
        (code, _, err) = CliRunner.Run("trace", "--model", "attn-only-2l", "--tokens", tokens, "--transcoders", dir.Path, "--out", dir.File("x.json"));
        Assert.Equal(2, code);
        Assert.Contains("attention-only", err);
        Assert.False(File.Exists(dir.File("x.json")));
    }

    [Fact]
    public void BadInputGivesOneClearError()
    {
        using var dir = new TempDir();
        string llama = SharedData.PathOf("golden", "models", "llama");
        string gpt2Transcoders = SharedData.PathOf("golden", "attribution", "gpt2_plt_relu", "transcoders");
        var (code, _, err) = CliRunner.Run("trace", "-m", SharedData.PathOf("models", "stories260K", "stories260K.bin"), "--transcoders", gpt2Transcoders,
            "--prompt", "Once upon a time", "--out", dir.File("a.json"));
        Assert.Equal(2, code);
        Assert.Contains("the transcoders have 3 layers; the model has 5", err);
        (code, _, err) = CliRunner.Run("trace", "-m", llama, "--transcoders", SharedData.PathOf("golden", "attribution", "llama_clt_jumprelu", "transcoders"),
            "--tokens", string.Join(",", Enumerable.Repeat(5, 5000)), "--out", dir.File("b.json"));
        Assert.Equal(2, code);
        Assert.Contains("context", err);
        (code, _, err) = CliRunner.Run("trace", "-m", llama, "--transcoders", gpt2Transcoders, "--tokens", "1,2,3", "--max-logits", "0", "--out", dir.File("c.json"));
        Assert.Equal(2, code);
        Assert.Contains("--max-logits", err);
        // A target that is not one token (the built-in model and its shipped CLT).
        (code, _, err) = CliRunner.Run("trace", "--prompt", "The capital of Texas is", "--target", " Austin Dallas", "--out", dir.File("d.json"));
        Assert.Equal(2, code);
        Assert.Contains("is 2 tokens", err);
        Assert.False(File.Exists(dir.File("a.json")) || File.Exists(dir.File("b.json")) || File.Exists(dir.File("c.json")) || File.Exists(dir.File("d.json")));
    }

    [Fact]
    public void InterveneComparesPredictionsBeforeAndAfter()
    {
        string golden = SharedData.PathOf("golden", "attribution", "llama_clt_jumprelu");
        using var reference = SafetensorsFile.Open(Path.Combine(golden, "reference.safetensors"));
        using var ids = reference.Read("input_ids");
        var f = reference.Read("intervention_features").data<long>().ToArray();
        string[] common = { "intervene", "-m", SharedData.PathOf("golden", "models", "llama"), "--transcoders", Path.Combine(golden, "transcoders"),
            "--tokens", string.Join(",", ids.data<long>().ToArray()), "--json" };
        var (code, stdout, err) = CliRunner.Run(common.Concat(new[] { "--set", $"{f[0]}:{f[1]}:{f[2]}=0", "--mode", "free" }).ToArray());
        Assert.True(code == 0, err);
        var report = JsonDocument.Parse(stdout).RootElement;
        // The top token after zeroing is the argmax of the golden free-mode logits.
        using var logits = reference.Read("intervention_free_logits");
        Assert.Equal(logits[0, 0].argmax().item<long>(), report.GetProperty("after")[0].GetProperty("id").GetInt64());
        Assert.Equal(reference.Read("logits")[-1].argmax().item<long>(), report.GetProperty("before")[0].GetProperty("id").GetInt64());
        var bad = CliRunner.Run(common.Concat(new[] { "--set", "0:1:99999=0" }).ToArray());
        Assert.Equal(2, bad.Code);
        Assert.Contains("feature 99999 is outside", bad.Err);
        bad = CliRunner.Run(common.Concat(new[] { "--set", "nonsense" }).ToArray());
        Assert.Equal(2, bad.Code);
        Assert.Contains("LAYER:POSITION:FEATURE=VALUE", bad.Err);
    }
}
