using System.Text.Json.Nodes;
using Mechanist.IO;
using Mechanist.Models;

namespace Mechanist.Tests.Models;

/// <summary>Config fields that change semantics Mechanist does not implement are refused by name, never silently ignored.</summary>
public class ArchitectureConfigTests
{
    static string WithConfig(TempDir dir, string arch, Action<JsonObject> edit)
    {
        string src = SharedData.PathOf("golden", "models", arch);
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dir.Path, Path.GetFileName(f)));
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(src, "config.json")))!.AsObject();
        edit(cfg);
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), cfg.ToJsonString());
        return dir.Path;
    }

    static string LoadError(string dir) =>
        Assert.ThrowsAny<MechanistException>(() => HookedTransformer.Load(dir, new LoadOptions { Open = new ModelOpenOptions { Offline = true } }).Dispose()).Message;

    [Theory]
    [InlineData("mixtral", "scoring_func", "sigmoid")]
    [InlineData("mixtral", "topk_method", "group_limited_greedy")]
    [InlineData("qwen2_moe", "decoder_sparse_step", 2)]
    [InlineData("opt", "do_layer_norm_before", false)]
    [InlineData("falcon", "alibi", true)]
    [InlineData("stablelm", "qk_layernorm", true)]
    [InlineData("cohere", "use_qk_norm", true)]
    [InlineData("phi3", "rope_scaling", "longrope")]
    public void AnOptionThatChangesSemanticsIsRefusedByName(string arch, string key, object value)
    {
        using var dir = new TempDir();
        string path = WithConfig(dir, arch, c => c[key] = key == "rope_scaling" ? new JsonObject { ["type"] = "longrope" } : JsonValue.Create(value));
        Assert.Contains($"'{key}'", LoadError(path));
    }

    [Fact]
    public void MoeRoutingDenseLayerMixesAreRefusedAndAnUnknownModelTypeNamesTheSupportedOnes()
    {
        using (var dir = new TempDir())
            Assert.Contains("'mlp_only_layers'", LoadError(WithConfig(dir, "qwen2_moe", c => c["mlp_only_layers"] = new JsonArray(1))));
        using (var dir = new TempDir())
        {
            string message = LoadError(WithConfig(dir, "llama", c => c["model_type"] = "deepseek_v3"));
            Assert.Contains("'deepseek_v3' is not supported", message);
            foreach (var t in new[] { "mixtral", "qwen2_moe", "bloom", "opt", "gptj", "falcon", "olmo2", "cohere", "gemma3_text" }) Assert.Contains(t, message);
        }
    }
}
