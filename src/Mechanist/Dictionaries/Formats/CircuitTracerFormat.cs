using Mechanist.Tensors;
using Mechanist.IO;
using YamlDotNet.RepresentationModel;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries.Formats;

/// <summary>
/// circuit-tracer's on-disk formats: a folder with <c>config.yaml</c> (model_kind, model_name,
/// feature_input_hook, feature_output_hook, optional activation / k) and either per-layer files
/// <c>layer_{i}.safetensors</c> (W_enc [d_tc, d], W_dec [d_tc, d], b_enc, b_dec, optional
/// activation_function.threshold and W_skip [d, d]) or cross-layer files <c>W_enc_{i}.safetensors</c>
/// (W_enc_i, b_enc_i, b_dec_i, optional threshold_i) and <c>W_dec_{i}.safetensors</c> (W_dec_i [d_tc, L − i, d]).
/// </summary>
public static class CircuitTracerFormat
{
    const string ConfigFile = "config.yaml";

    /// <summary>Whether <paramref name="dir"/> looks like a circuit-tracer transcoder folder.</summary>
    public static bool IsFolder(string dir) => File.Exists(Path.Combine(dir, ConfigFile));

    /// <summary>Loads a folder (float32, on <paramref name="device"/>).</summary>
    public static TranscoderBundle Load(string dir, Device? device = null)
    {
        if (!Directory.Exists(dir)) throw new MechanistException($"{dir}: transcoder folder not found");
        string configPath = Path.Combine(dir, ConfigFile);
        if (!File.Exists(configPath)) throw new MechanistException($"{dir}: no {ConfigFile} (not a circuit-tracer transcoder folder)");
        var cfg = ReadConfig(configPath);
        string kind = Get(cfg, "model_kind", configPath) ?? "";
        string inputHook = Get(cfg, "feature_input_hook", configPath) ?? DictionaryNames.InputHooks.Name(TranscoderInput.Resid);
        if (!DictionaryNames.InputHooks.TryParse(inputHook, out var input))
            throw new InvalidCheckpointException(configPath, $"feature_input_hook '{inputHook}' is not supported (use {string.Join(", ", DictionaryNames.InputHooks.Names)})");
        string output = Get(cfg, "feature_output_hook", configPath) ?? "hook_mlp_out";
        if (output is not ("hook_mlp_out" or "mlp.hook_out"))
            throw new InvalidCheckpointException(configPath, $"feature_output_hook '{output}' is not supported (transcoders here write hook_mlp_out / mlp.hook_out)");
        string? activation = Get(cfg, "activation", configPath);
        int k = Get(cfg, "k", configPath) is { } ks ? int.TryParse(ks, out int kv) && kv > 0 ? kv : throw new InvalidCheckpointException(configPath, $"k '{ks}' is not a positive integer") : 0;
        DictionaryActivation? named = null;
        if (activation is not null)
            named = DictionaryNames.Activations.TryParse(activation, out var a) ? a
                : throw new InvalidCheckpointException(configPath, $"activation '{activation}' is not supported ({string.Join(", ", DictionaryNames.Activations.Names)})");
        if (named == DictionaryActivation.TopK && k == 0) throw new InvalidCheckpointException(configPath, "activation topk needs k");
        string name = Get(cfg, "model_name", configPath) ?? "";
        device ??= CPU;
        ICrossLayerDictionary dictionary = kind switch
        {
            "transcoder_set" => LoadSet(dir, named, k, device),
            "cross_layer_transcoder" => LoadClt(dir, named, k, device),
            _ => throw new InvalidCheckpointException(configPath, $"model_kind '{kind}' is not supported (transcoder_set or cross_layer_transcoder)"),
        };
        return new TranscoderBundle(dictionary, input, name);
    }

    static Dictionary<string, string> ReadConfig(string path)
    {
        try
        {
            var yaml = new YamlStream();
            using (var reader = new StreamReader(path)) yaml.Load(reader);
            if (yaml.Documents.Count == 0 || yaml.Documents[0].RootNode is not YamlMappingNode map) throw new InvalidCheckpointException(path, "not a YAML mapping");
            return map.Children.Where(kv => kv.Key is YamlScalarNode && kv.Value is YamlScalarNode)
                .ToDictionary(kv => ((YamlScalarNode)kv.Key).Value ?? "", kv => ((YamlScalarNode)kv.Value).Value ?? "");
        }
        catch (YamlDotNet.Core.YamlException e) { throw new InvalidCheckpointException(path, $"invalid YAML: {e.Message}"); }
    }

    static string? Get(Dictionary<string, string> cfg, string key, string path) => cfg.TryGetValue(key, out var v) && v.Length > 0 ? v : null;

    static Tensor Take(SafetensorsFile f, string name, Device device, params long[] shape)
    {
        if (!f.Contains(name)) throw new InvalidCheckpointException(f.Path, $"missing tensor '{name}'");
        var actual = f.ShapeOf(name);
        if (shape.Length > 0 && !actual.SequenceEqual(shape))
            throw new InvalidCheckpointException(f.Path, $"tensor '{name}' is [{string.Join(", ", actual)}]; expected [{string.Join(", ", shape)}]");
        using var t = f.Read(name);
        return Tensors.TensorChecks.RequireFinite(t.to(ScalarType.Float32, device), name, f.Path);
    }

    static DictionaryActivation ActivationOf(DictionaryActivation? activation, bool hasThreshold) =>
        hasThreshold ? DictionaryActivation.JumpReLU : activation == DictionaryActivation.TopK ? DictionaryActivation.TopK : DictionaryActivation.ReLU;

    static TranscoderSet LoadSet(string dir, DictionaryActivation? activation, int k, Device device)
    {
        var layers = new List<ISparseDictionary>();
        try
        {
            for (int i = 0; File.Exists(Path.Combine(dir, $"layer_{i}.safetensors")); i++)
            {
                using var f = SafetensorsFile.Open(Path.Combine(dir, $"layer_{i}.safetensors"));
                if (!f.Contains("W_enc")) throw new InvalidCheckpointException(f.Path, "missing tensor 'W_enc'");
                var encShape = f.ShapeOf("W_enc");
                if (encShape.Length != 2) throw new InvalidCheckpointException(f.Path, $"W_enc must be [d_transcoder, d_model] (got [{string.Join(", ", encShape)}])");
                long dtc = encShape[0], d = encShape[1];
                var wEnc = Take(f, "W_enc", device, dtc, d);
                var wDec = Take(f, "W_dec", device); // may be [d_tc, d_out]
                if (wDec.dim() != 2 || wDec.shape[0] != dtc) throw new InvalidCheckpointException(f.Path, $"W_dec must be [{dtc}, d_out] (got [{string.Join(", ", wDec.shape)}])");
                bool hasThreshold = f.Contains("activation_function.threshold");
                layers.Add(new Transcoder(wEnc, Take(f, "b_enc", device, dtc), wDec, Take(f, "b_dec", device, wDec.shape[1]), ActivationOf(activation, hasThreshold),
                    hasThreshold ? Take(f, "activation_function.threshold", device, dtc) : null, k, f.Contains("W_skip") ? Take(f, "W_skip", device, wDec.shape[1], d) : null));
            }
            if (layers.Count == 0) throw new MechanistException($"{dir}: no layer_0.safetensors (a transcoder_set has layer_{{i}}.safetensors files)");
            return new TranscoderSet(layers);
        }
        catch { foreach (var t in layers) t.Dispose(); throw; }
    }

    static CrossLayerTranscoder LoadClt(string dir, DictionaryActivation? activation, int k, Device device)
    {
        int n = 0;
        while (File.Exists(Path.Combine(dir, $"W_enc_{n}.safetensors"))) n++;
        if (n == 0) throw new MechanistException($"{dir}: no W_enc_0.safetensors (a cross_layer_transcoder has W_enc_{{i}} / W_dec_{{i}} files)");
        var wEnc = new Tensor[n]; var bEnc = new Tensor[n]; var wDec = new Tensor[n]; var bDec = new Tensor[n]; var thr = new Tensor?[n];
        try
        {
            long dtc = 0, d = 0;
            for (int i = 0; i < n; i++)
            {
                using var fe = SafetensorsFile.Open(Path.Combine(dir, $"W_enc_{i}.safetensors"));
                if (!fe.Contains($"W_enc_{i}")) throw new InvalidCheckpointException(fe.Path, $"missing tensor 'W_enc_{i}'");
                if (i == 0) { var s = fe.ShapeOf("W_enc_0"); if (s.Length != 2) throw new InvalidCheckpointException(fe.Path, "W_enc_0 must be [d_transcoder, d_model]"); (dtc, d) = (s[0], s[1]); }
                wEnc[i] = Take(fe, $"W_enc_{i}", device, dtc, d); bEnc[i] = Take(fe, $"b_enc_{i}", device, dtc); bDec[i] = Take(fe, $"b_dec_{i}", device, d);
                thr[i] = fe.Contains($"threshold_{i}") ? Take(fe, $"threshold_{i}", device).reshape(dtc) : null;
                string decPath = Path.Combine(dir, $"W_dec_{i}.safetensors");
                if (!File.Exists(decPath)) throw new MechanistException($"{dir}: W_dec_{i}.safetensors is missing");
                using var fd = SafetensorsFile.Open(decPath);
                wDec[i] = Take(fd, $"W_dec_{i}", device, dtc, n - i, d);
            }
            bool jump = thr.All(t => t is not null);
            if (!jump && thr.Any(t => t is not null)) throw new MechanistException($"{dir}: some layers have thresholds and some do not");
            return new CrossLayerTranscoder(wEnc, bEnc, wDec, bDec, ActivationOf(activation, jump), jump ? thr : null, k);
        }
        catch
        {
            foreach (var t in wEnc.Concat(bEnc).Concat(wDec).Concat(bDec).Concat(thr)) t?.Dispose();
            throw;
        }
    }

    /// <summary>Writes a bundle in circuit-tracer's layout (atomically: the folder appears complete or not at all).</summary>
    public static void Save(TranscoderBundle bundle, string dir, bool overwrite = false, Action<string>? alsoWrite = null)
    {
        string input = DictionaryNames.InputHooks.Name(bundle.Input);
        AtomicFolder.Write(dir, tmp =>
        {
            var lines = new List<string>
            {
                $"model_name: {bundle.ModelName}",
                $"model_kind: {(bundle.Kind == DictionaryKind.Clt ? "cross_layer_transcoder" : "transcoder_set")}",
                $"feature_input_hook: {input}",
                "feature_output_hook: hook_mlp_out",
            };
            switch (bundle.Dictionary)
            {
                case TranscoderSet set:
                    if (set.Activation == DictionaryActivation.ReLU) lines.Add("activation: relu");
                    if (set.Activation == DictionaryActivation.TopK) { lines.Add("activation: topk"); lines.Add($"k: {set.TopK}"); }
                    for (int i = 0; i < set.NLayers; i++)
                    {
                        var t = set.Layers[i] as Transcoder ?? throw new MechanistException($"{set.Layers[i].GetType().Name} has no circuit-tracer format");
                        var tensors = new Dictionary<string, Tensor> { ["W_enc"] = t.WEnc, ["W_dec"] = t.WDec, ["b_enc"] = t.BEnc, ["b_dec"] = t.BDec };
                        if (t.Threshold is { } th) tensors["activation_function.threshold"] = th;
                        if (t.WSkip is { } sk) tensors["W_skip"] = sk;
                        Write(Path.Combine(tmp, $"layer_{i}.safetensors"), tensors);
                    }
                    break;
                case CrossLayerTranscoder clt:
                    if (clt.Activation == DictionaryActivation.TopK) { lines.Add("activation: topk"); lines.Add($"k: {clt.TopK}"); }
                    for (int i = 0; i < clt.NLayers; i++)
                    {
                        var enc = new Dictionary<string, Tensor> { [$"W_enc_{i}"] = clt.WEnc(i), [$"b_enc_{i}"] = clt.BEnc(i), [$"b_dec_{i}"] = clt.DecoderBias(i) };
                        if (clt.Threshold(i) is { } th) enc[$"threshold_{i}"] = th;
                        Write(Path.Combine(tmp, $"W_enc_{i}.safetensors"), enc);
                        Write(Path.Combine(tmp, $"W_dec_{i}.safetensors"), new Dictionary<string, Tensor> { [$"W_dec_{i}"] = clt.WDec(i) });
                    }
                    break;
                default: throw new MechanistException($"{bundle.Dictionary.GetType().Name} has no circuit-tracer format");
            }
            AtomicFile.WriteText(Path.Combine(tmp, ConfigFile), string.Join("\n", lines) + "\n");
            alsoWrite?.Invoke(tmp);
        }, overwrite);
    }

    static void Write(string path, Dictionary<string, Tensor> tensors)
    {
        using var scope = NewDisposeScope();
        SafetensorsWriter.Write(path, tensors.ToDictionary(kv => kv.Key, kv => kv.Value.DetachedCpu(ScalarType.Float32)), new Dictionary<string, string> { ["format"] = "pt" });
    }
}
