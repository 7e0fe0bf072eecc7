using Mechanist.Tensors;
using System.Security.Cryptography;
using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Formats;
using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Features;

/// <summary>
/// The features of a dictionary as seen on a model: which hook point each layer's features read (they are encoded from the
/// model's own activations there, so no splice runs unless the input has no hook point of its own), and what each feature
/// writes (for its logit effects and decoder norms).
/// A transcoder set or CLT has one "layer" per model layer; an SAE has one, at its hook point.
/// </summary>
public sealed class FeatureSource : IDisposable
{
    readonly IDisposable _bundle;

    readonly Func<int, Tensor, Tensor> _encode;

    FeatureSource(IDisposable bundle, ISplice? splice, string[] inputHooks, Func<int, Tensor, Tensor> encode, int[] layers, int dDict, string kind, string identity)
    {
        _bundle = bundle; Splice = splice; InputHooks = inputHooks; _encode = encode; Layers = layers; DDict = dDict; Kind = kind; Identity = identity;
    }

    /// <summary>A splice to run with, when the input has no hook point of its own (its error term keeps the forward the model's own); else null.</summary>
    public ISplice? Splice { get; }

    /// <summary>Per dictionary layer, the hook point holding what its features read [batch, pos, d_in].</summary>
    public string[] InputHooks { get; }

    /// <summary>Feature activations [..., d_dict] of dictionary layer <paramref name="index"/> from its input.</summary>
    public Tensor Encode(int index, Tensor x) => _encode(index, x);

    /// <summary>The layer number of each dictionary layer (the model layer; an SAE: its hook's layer).</summary>
    public int[] Layers { get; }

    /// <summary>Features per layer.</summary>
    public int DDict { get; }

    /// <summary>"clt", "transcoders" or "sae".</summary>
    public string Kind { get; }

    /// <summary>A fingerprint of the dictionary's files (names, sizes and the first and last MiB of each).</summary>
    public string Identity { get; }

    /// <summary>Loads a circuit-tracer transcoder folder or an SAELens SAE folder for <paramref name="model"/>.</summary>
    public static FeatureSource Load(HookedTransformer model, string dir)
    {
        if (!Directory.Exists(dir)) throw new MechanistException($"{dir}: dictionary folder not found");
        string identity = Fingerprint(dir);
        if (CircuitTracerFormat.IsFolder(dir))
        {
            var bundle = CircuitTracerFormat.Load(dir, model.Device);
            try
            {
                var splice = bundle.Splice(ErrorTerm.Detached);
                // Checks the widths and layer count against the model.
                _ = model.HookPointsFor(new RunOptions { Splices = new[] { splice } });
                int n = bundle.Dictionary.NLayers;
                var reg = model.HookPoints;
                var hooks = Enumerable.Range(0, n).Select(l => bundle.Input switch
                {
                    TranscoderInput.Resid => reg.Name(model.Config.ParallelResidual ? HookKind.ResidPre : HookKind.ResidMid, l),
                    TranscoderInput.Normalized => reg.Name(HookKind.Ln2Normalized, l),
                    _ => SplicePoints.Under(reg.Name(HookKind.MlpOut, l), SplicePoints.Input),
                }).ToArray();
                bool cross = Enumerable.Range(0, n).Any(s => Enumerable.Range(s + 1, n - s - 1).Any(t => bundle.Dictionary.WritesTo(s, t)));
                return new FeatureSource(bundle, bundle.Input == TranscoderInput.MlpInput ? splice : null, hooks, (l, x) => bundle.Dictionary.Encode(l, x),
                    Enumerable.Range(0, n).ToArray(), bundle.Dictionary.DDict, cross ? "clt" : "transcoders", identity);
            }
            catch { bundle.Dispose(); throw; }
        }
        if (SaeLensFormat.IsFolder(dir))
        {
            var bundle = SaeLensFormat.Load(dir, model.Device);
            try
            {
                var splice = bundle.Splice(ErrorTerm.Detached);
                _ = model.HookPointsFor(new RunOptions { Splices = new[] { splice } });
                int layer = model.HookPoints.Find(bundle.HookName)?.Layer ?? 0;
                return new FeatureSource(bundle, null, new[] { bundle.HookName }, (_, x) => bundle.Sae.Encode(x), new[] { Math.Max(0, layer) }, bundle.Sae.DDict, "sae", identity);
            }
            catch { bundle.Dispose(); throw; }
        }
        throw new MechanistException($"{dir}: neither a circuit-tracer transcoder folder (config.yaml) nor an SAELens folder (cfg.json + sae_weights.safetensors)");
    }

    /// <summary>
    /// What the features of dictionary layer <paramref name="index"/> add to the residual stream [d_dict, d_model]
    /// (a CLT feature: the sum of its decoders over the layers it writes to), float32.
    /// </summary>
    public Tensor OutputDirections(int index)
    {
        using var scope = NewDisposeScope();
        var all = SafeOps.Arange(DDict);
        Tensor result = _bundle switch
        {
            TranscoderBundle t => Enumerable.Range(index, t.Dictionary.NLayers - index).Where(target => t.Dictionary.WritesTo(index, target))
                .Select(target => t.Dictionary.DecoderRows(index, target, all).to(ScalarType.Float32)).Aggregate((a, b) => a.Add(b)),
            SaeBundle s => s.Sae.DecoderRows(all).to(ScalarType.Float32),
            _ => throw new InvalidOperationException(),
        };
        return result.cpu().MoveToOuterDisposeScope();
    }

    /// <summary>For a CLT: each feature's decoder norm into every model layer [d_dict][layers] (0 where it does not write); otherwise null.</summary>
    public float[][]? DecoderNorms(int index)
    {
        if (_bundle is not TranscoderBundle t || Kind != "clt") return null;
        using var scope = NewDisposeScope();
        var all = SafeOps.Arange(DDict);
        int n = t.Dictionary.NLayers;
        var norms = new float[DDict][];
        for (int f = 0; f < DDict; f++) norms[f] = new float[n];
        for (int target = index; target < n; target++)
        {
            if (!t.Dictionary.WritesTo(index, target)) continue;
            var v = t.Dictionary.DecoderRows(index, target, all).to(ScalarType.Float32).norm(1, false).cpu().data<float>().ToArray();
            for (int f = 0; f < DDict; f++) norms[f][target] = v[f];
        }
        return norms;
    }

    static string Fingerprint(string dir)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        foreach (var file in Directory.GetFiles(dir).Where(f => f.EndsWith(".safetensors") || f.EndsWith(".yaml") || f.EndsWith(".json") && Path.GetFileName(f) is "cfg.json")
            .Order(StringComparer.Ordinal))
        {
            using var s = File.OpenRead(file);
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes($"{Path.GetFileName(file)}:{s.Length};"));
            int read = s.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
            sha.AppendData(buffer, 0, read);
            if (s.Length > 2L * buffer.Length)
            {
                s.Seek(-buffer.Length, SeekOrigin.End);
                read = s.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
                sha.AppendData(buffer, 0, read);
            }
        }
        return Convert.ToHexString(sha.GetHashAndReset())[..16].ToLowerInvariant();
    }

    /// <inheritdoc/>
    public void Dispose() => _bundle.Dispose();
}
