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
    readonly DictionaryBundle _bundle;

    FeatureSource(DictionaryBundle bundle, string[] inputHooks, int[] layers, string identity)
    {
        _bundle = bundle; InputHooks = inputHooks; Layers = layers; Identity = identity;
        Splice = bundle.ReadsOwnHookPoints ? null : bundle.Splice(ErrorTerm.Detached);
    }

    /// <summary>A splice to run with, when the input has no hook point of its own (its error term keeps the forward the model's own); else null.</summary>
    public ISplice? Splice { get; }

    /// <summary>Per dictionary layer, the hook point holding what its features read [batch, pos, d_in].</summary>
    public string[] InputHooks { get; }

    /// <summary>Feature activations [..., d_dict] of dictionary layer <paramref name="index"/> from its input.</summary>
    public Tensor Encode(int index, Tensor x) => _bundle.Dictionary.Encode(index, x);

    /// <summary>The layer number of each dictionary layer (the model layer; an SAE: its hook's layer).</summary>
    public int[] Layers { get; }

    /// <summary>Features per layer.</summary>
    public int DDict => _bundle.Dictionary.DDict;

    /// <summary>The dictionary's kind, as <see cref="DictionaryNames.Kinds"/> spells it.</summary>
    public string Kind => DictionaryNames.Kinds.Name(_bundle.Kind);

    /// <summary>A fingerprint of the dictionary's files (names, sizes and the first and last MiB of each).</summary>
    public string Identity { get; }

    /// <summary>Loads a dictionary folder (any supported format) for <paramref name="model"/>.</summary>
    public static FeatureSource Load(HookedTransformer model, string dir)
    {
        if (!Directory.Exists(dir)) throw new MechanistException($"{dir}: dictionary folder not found");
        string identity = Fingerprint(dir);
        var bundle = DictionaryBundle.Load(dir, model.Device);
        try
        {
            bundle.CheckFits(model);
            return new FeatureSource(bundle, bundle.InputHooks(model), bundle.ModelLayers(model), identity);
        }
        catch { bundle.Dispose(); throw; }
    }

    /// <summary>
    /// What the features of dictionary layer <paramref name="index"/> add to the residual stream [d_dict, d_model]
    /// (a CLT feature: the sum of its decoders over the layers it writes to), float32.
    /// </summary>
    public Tensor OutputDirections(int index)
    {
        using var scope = NewDisposeScope();
        var d = _bundle.Dictionary;
        var all = SafeOps.Arange(DDict);
        var result = Enumerable.Range(index, d.NLayers - index).Where(target => d.WritesTo(index, target))
            .Select(target => d.DecoderRows(index, target, all).to(ScalarType.Float32)).Aggregate((a, b) => a.Add(b));
        return result.cpu().MoveToOuterDisposeScope();
    }

    /// <summary>For a CLT: each feature's decoder norm into every model layer [d_dict][layers] (0 where it does not write); otherwise null.</summary>
    public float[][]? DecoderNorms(int index)
    {
        var d = _bundle.Dictionary;
        if (d.Kind != DictionaryKind.Clt) return null;
        using var scope = NewDisposeScope();
        var all = SafeOps.Arange(DDict);
        int n = d.NLayers;
        var norms = new float[DDict][];
        for (int f = 0; f < DDict; f++) norms[f] = new float[n];
        for (int target = index; target < n; target++)
        {
            if (!d.WritesTo(index, target)) continue;
            var v = d.DecoderRows(index, target, all).to(ScalarType.Float32).norm(1, false).cpu().data<float>().ToArray();
            for (int f = 0; f < DDict; f++) norms[f][target] = v[f];
        }
        return norms;
    }

    /// <summary>
    /// A fingerprint of a dictionary folder's files (names, sizes and the first and last MiB of each), as a feature store records it:
    /// equal fingerprints mean the store was built with this dictionary.
    /// </summary>
    public static string Fingerprint(string dir)
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
