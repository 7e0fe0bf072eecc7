using System.Text.Json;
using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Formats;
using Mechanist.Hooks;
using Mechanist.IO;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Dictionaries;

/// <summary>circuit-tracer's transcoder folders from ../shared/golden/attribution: loading, splicing, saving.</summary>
public class CircuitTracerFormatTests
{
    public static IEnumerable<object[]> Cases() =>
        new[] { "gpt2_plt_relu", "llama_plt_skip_jumprelu", "llama_clt_jumprelu", "llama_plt_normalized_skip_relu", "gpt2_clt_relu_mlpin" }.Select(c => new object[] { c });

    static string CaseDir(string name) => SharedData.PathOf("golden", "attribution", name);

    [Theory]
    [MemberData(nameof(Cases))]
    public void GoldenTranscodersLoadAndReproduceTheReferenceActivations(string name)
    {
        string dir = CaseDir(name);
        string modelName = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "case.json"))).RootElement.GetProperty("model").GetString()!;
        using var model = HookedTransformer.Load(SharedData.PathOf("golden", "models", modelName));
        using var bundle = CircuitTracerFormat.Load(Path.Combine(dir, "transcoders"));
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var scope = NewDisposeScope();
        var ids = reference.Read("input_ids").unsqueeze(0);
        var (logits, cache) = model.RunWithCache(ids, options: new RunOptions { Splices = new[] { bundle.Splice() } });
        using var _c = cache;
        TensorAssert.Close(reference.Read("logits"), logits[0], 1e-4, $"{name}: logits with error terms");
        for (int l = 0; l < model.Config.NLayers; l++)
        {
            string p = model.HookPoints.Name(HookKind.MlpOut, l);
            TensorAssert.Close(reference.Read("feature_input")[l], cache[SplicePoints.Under(p, SplicePoints.Input)][0], 1e-4, $"{name}: feature input {l}");
            // The reference zeroes BOS features (a tracing convention); compare the other positions.
            TensorAssert.Close(reference.Read("activations")[l, 1..], cache[SplicePoints.Under(p, SplicePoints.Acts)][0, 1..], 1e-4, $"{name}: activations {l}");
            TensorAssert.Close(reference.Read("mlp_out")[l], cache[p][0], 1e-4, $"{name}: mlp_out {l}");
        }
        // Reconstructions and error vectors are per position, so away from BOS they are the reference's.
        for (int l = 0; l < model.Config.NLayers; l++)
        {
            string p = model.HookPoints.Name(HookKind.MlpOut, l);
            TensorAssert.Close(reference.Read("reconstruction")[l, 1..], cache[SplicePoints.Under(p, SplicePoints.Recons)][0, 1..], 1e-4, $"{name}: reconstruction {l}");
            TensorAssert.Close(reference.Read("error_vectors")[l, 1..], cache[SplicePoints.Under(p, SplicePoints.Error)][0, 1..], 1e-4, $"{name}: error {l}");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void SavingAGoldenFolderBackGivesTheSameTensors(string name)
    {
        string src = Path.Combine(CaseDir(name), "transcoders");
        using var bundle = CircuitTracerFormat.Load(src);
        using var tmp = new TempDir();
        string dst = tmp.File("saved");
        CircuitTracerFormat.Save(bundle, dst);
        Assert.Equal(Directory.GetFiles(src).Select(Path.GetFileName).Order(), Directory.GetFiles(dst).Select(Path.GetFileName).Order());
        foreach (var file in Directory.GetFiles(src, "*.safetensors"))
        {
            using var a = SafetensorsFile.Open(file);
            using var b = SafetensorsFile.Open(Path.Combine(dst, Path.GetFileName(file)));
            Assert.Equal(a.Names.Order(), b.Names.Order());
            foreach (var t in a.Names) { using var x = a.Read(t); using var y = b.Read(t); TensorAssert.Close(x, y, 0, $"{name}/{Path.GetFileName(file)}:{t}"); }
        }
        using var again = CircuitTracerFormat.Load(dst);
        Assert.Equal(bundle.Input, again.Input);
        Assert.Equal(bundle.ModelName, again.ModelName);
        // Overwriting needs consent, and a failed write leaves the old folder whole.
        Assert.Throws<MechanistException>(() => CircuitTracerFormat.Save(bundle, dst));
    }

    [Fact]
    public void BadFoldersGiveClearErrors()
    {
        using var tmp = new TempDir();
        Assert.Contains("not found", Assert.Throws<MechanistException>(() => CircuitTracerFormat.Load(tmp.File("nope"))).Message);
        Directory.CreateDirectory(tmp.File("a"));
        Assert.Contains("no config.yaml", Assert.Throws<MechanistException>(() => CircuitTracerFormat.Load(tmp.File("a"))).Message);
        File.WriteAllText(tmp.File("a/config.yaml"), "model_kind: [oops\n");
        Assert.Contains("invalid YAML", Assert.Throws<InvalidCheckpointException>(() => CircuitTracerFormat.Load(tmp.File("a"))).Message);
        File.WriteAllText(tmp.File("a/config.yaml"), "model_kind: transcoder_set\nfeature_input_hook: hook_resid_pre\n");
        Assert.Contains("feature_input_hook 'hook_resid_pre' is not supported", Assert.Throws<InvalidCheckpointException>(() => CircuitTracerFormat.Load(tmp.File("a"))).Message);
        File.WriteAllText(tmp.File("a/config.yaml"), "model_kind: transcoder_set\n");
        Assert.Contains("no layer_0.safetensors", Assert.Throws<MechanistException>(() => CircuitTracerFormat.Load(tmp.File("a"))).Message);
        // A layer file without its decoder.
        SafetensorsWriter.Write(tmp.File("a/layer_0.safetensors"), new Dictionary<string, Tensor> { ["W_enc"] = zeros(4, 3), ["b_enc"] = zeros(4) });
        Assert.Contains("missing tensor 'W_dec'", Assert.Throws<InvalidCheckpointException>(() => CircuitTracerFormat.Load(tmp.File("a"))).Message);
        // Transcoders for another model are refused when spliced.
        using var bundle = CircuitTracerFormat.Load(Path.Combine(CaseDir("gpt2_plt_relu"), "transcoders"));
        using var stories = HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin"));
        using var tokens = tensor(new long[] { 1, 5, 6 }, new long[] { 1, 3 });
        Assert.Contains("the transcoders have 3 layers; the model has 5", Assert.Throws<MechanistException>(() => stories.Run(tokens, new RunOptions { Splices = new[] { bundle.Splice() } })).Message);
    }
}
