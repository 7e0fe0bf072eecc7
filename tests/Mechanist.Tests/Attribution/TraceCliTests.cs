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
