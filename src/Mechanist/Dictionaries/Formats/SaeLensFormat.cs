using System.Text.Json;
using System.Text.Json.Nodes;
using Mechanist.IO;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries.Formats;

/// <summary>
/// SAELens's format: <c>cfg.json</c> (architecture standard / jumprelu / topk / gated, d_in, d_sae, hook_name, model_name,
/// apply_b_dec_to_input, activation_fn_kwargs.k) and <c>sae_weights.safetensors</c> with W_enc [d_in, d_sae],
/// W_dec [d_sae, d_in], b_enc, b_dec and (JumpReLU) threshold; a gated SAE has b_gate, r_mag and b_mag instead of b_enc.
/// Optional <c>sparsity.safetensors</c> is ignored.
/// </summary>
public static class SaeLensFormat
{
    /// <summary>Whether <paramref name="dir"/> looks like an SAELens folder.</summary>
    public static bool IsFolder(string dir) => File.Exists(Path.Combine(dir, "cfg.json")) && File.Exists(Path.Combine(dir, "sae_weights.safetensors"));

    /// <summary>Loads a folder (float32 on <paramref name="device"/>). With apply_b_dec_to_input, b_dec is folded into b_enc.</summary>
    public static SaeBundle Load(string dir, Device? device = null)
    {
        string cfgPath = Path.Combine(dir, "cfg.json"), weights = Path.Combine(dir, "sae_weights.safetensors");
        if (!Directory.Exists(dir)) throw new MechanistException($"{dir}: SAE folder not found");
        if (!File.Exists(cfgPath) || !File.Exists(weights)) throw new MechanistException($"{dir}: an SAELens folder has cfg.json and sae_weights.safetensors");
        JsonObject cfg;
        try { cfg = JsonNode.Parse(File.ReadAllText(cfgPath)) as JsonObject ?? throw new InvalidCheckpointException(cfgPath, "not a JSON object"); }
        catch (JsonException e) { throw new InvalidCheckpointException(cfgPath, $"invalid JSON: {e.Message}"); }
        string arch = cfg["architecture"]?.GetValue<string>() ?? "standard";
        string hook = cfg["hook_name"]?.GetValue<string>() ?? throw new InvalidCheckpointException(cfgPath, "no hook_name");
        int k = cfg["activation_fn_kwargs"]?["k"]?.GetValue<int>() ?? cfg["k"]?.GetValue<int>() ?? 0;
        bool applyBDec = cfg["apply_b_dec_to_input"]?.GetValue<bool>() ?? false;
        if (cfg["normalize_activations"]?.GetValue<string>() is { } norm && norm != "none")
            throw new InvalidCheckpointException(cfgPath, $"normalize_activations '{norm}' is not supported (fold the normalisation into the weights first)");
        device ??= CPU;
        using var f = SafetensorsFile.Open(weights);
        Tensor Take(string name)
        {
            if (!f.Contains(name)) throw new InvalidCheckpointException(weights, $"missing tensor '{name}'");
            using var t = f.Read(name);
            return Tensors.TensorChecks.RequireFinite(t.to(ScalarType.Float32, device), name, weights);
        }
        using var wEncIn = Take("W_enc");                 // [d_in, d_sae]
        var wDec = Take("W_dec");                           // [d_sae, d_in]
        var bDec = Take("b_dec");
        if (wEncIn.dim() != 2 || wDec.dim() != 2 || wEncIn.shape[1] != wDec.shape[0] || wEncIn.shape[0] != wDec.shape[1])
            throw new InvalidCheckpointException(weights, $"W_enc [{string.Join(", ", wEncIn.shape)}] and W_dec [{string.Join(", ", wDec.shape)}] must be [d_in, d_sae] and [d_sae, d_in]");
        if (!DictionaryNames.Activations.TryParse(arch, out var act))
            throw new InvalidCheckpointException(cfgPath, $"architecture '{arch}' is not supported (standard, jumprelu, topk, gated)");
        long dSae = wDec.shape[0];
        Tensor Vector(string name) { var t = Take(name); if (t.dim() != 1 || t.shape[0] != dSae) throw new InvalidCheckpointException(weights, $"'{name}' must be [{dSae}]"); return t; }
        if (act == DictionaryActivation.Gated)
        {
            // Gate: (x − b_dec)·W_enc + b_gate > 0; magnitude: ReLU((x − b_dec)·(W_enc ⊙ exp(r_mag)) + b_mag); b_dec folded into both biases.
            var bGate = Vector("b_gate"); var rMag = Vector("r_mag"); var bMag = Vector("b_mag");
            if (applyBDec)
            {
                using var shift = matmul(bDec, wEncIn);
                var gate = bGate - shift; var mag = bMag - shift * rMag.exp();
                bGate.Dispose(); bMag.Dispose(); bGate = gate; bMag = mag;
            }
            var gated = Transcoder.Gated(wEncIn.t().contiguous(), bGate, rMag, bMag, wDec, bDec, DictionaryKind.Sae);
            return new SaeBundle(gated, hook, cfg["model_name"]?.GetValue<string>() ?? "");
        }
        var bEnc = Take("b_enc");
        if (applyBDec) { var folded = bEnc - matmul(bDec, wEncIn); bEnc.Dispose(); bEnc = folded; }
        var threshold = act == DictionaryActivation.JumpReLU ? Take("threshold") : null;
        if (act == DictionaryActivation.TopK && k <= 0) throw new InvalidCheckpointException(cfgPath, "a topk SAE needs activation_fn_kwargs.k");
        var sae = new Transcoder(wEncIn.t().contiguous(), bEnc, wDec, bDec, act, threshold, k, kind: DictionaryKind.Sae);
        return new SaeBundle(sae, hook, cfg["model_name"]?.GetValue<string>() ?? "");
    }

    /// <summary>Writes an SAE in SAELens's layout (atomically).</summary>
    public static void Save(SaeBundle bundle, string dir, bool overwrite = false, Action<string>? alsoWrite = null)
    {
        var sae = bundle.Sae;
        if (sae.DIn != sae.DOut || sae.WSkip is not null) throw new MechanistException("SAELens's format holds SAEs (d_in = d_out, no skip)");
        AtomicFolder.Write(dir, tmp =>
        {
            using var scope = NewDisposeScope();
            var tensors = new Dictionary<string, Tensor> { ["W_dec"] = sae.WDec.contiguous().cpu(), ["b_dec"] = sae.BDec.cpu() };
            if (sae.Gate is { } g)
            {
                tensors["W_enc"] = g.WGate.t().contiguous().cpu(); tensors["b_gate"] = g.BGate.cpu(); tensors["r_mag"] = g.RMag.cpu(); tensors["b_mag"] = sae.BEnc.cpu();
            }
            else { tensors["W_enc"] = sae.WEnc.t().contiguous().cpu(); tensors["b_enc"] = sae.BEnc.cpu(); }
            if (sae.Threshold is { } th) tensors["threshold"] = th.cpu();
            SafetensorsWriter.Write(Path.Combine(tmp, "sae_weights.safetensors"), tensors);
            var cfg = new JsonObject
            {
                ["architecture"] = sae.Activation == DictionaryActivation.ReLU ? "standard" : DictionaryNames.Activations.Name(sae.Activation),
                ["d_in"] = sae.DIn, ["d_sae"] = sae.DDict, ["hook_name"] = bundle.HookName, ["model_name"] = bundle.ModelName,
                ["dtype"] = "float32", ["device"] = "cpu", ["apply_b_dec_to_input"] = false, ["normalize_activations"] = "none",
                ["activation_fn_kwargs"] = sae.Activation == DictionaryActivation.TopK ? new JsonObject { ["k"] = sae.TopK } : new JsonObject(),
            };
            if (HookLayer(bundle.HookName) is { } layer) cfg["hook_layer"] = layer;
            AtomicFile.WriteText(Path.Combine(tmp, "cfg.json"), cfg.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            alsoWrite?.Invoke(tmp);
        }, overwrite);
    }

    static int? HookLayer(string hook) =>
        hook.StartsWith("blocks.", StringComparison.Ordinal) && int.TryParse(hook.Split('.')[1], out int l) ? l : null;
}
