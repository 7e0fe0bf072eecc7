using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Mechanist.Dictionaries;

/// <summary>
/// A cross-layer transcoder in circuit-tracer's layout: per layer i an encoder W_enc_i [d_dict, d_model]
/// with b_enc_i, a decoder bias b_dec_i [d_model], optional JumpReLU thresholds, and decoders
/// W_dec_i [d_dict, L − i, d_model] writing to layers i..L−1. Owns its tensors.
/// </summary>
public sealed class CrossLayerTranscoder : ICrossLayerDictionary
{
    readonly Tensor[] _wEnc, _bEnc, _wDec, _bDec;
    readonly Tensor?[] _threshold;

    /// <summary>Builds a CLT from per-layer tensors (ownership passes to it).</summary>
    public CrossLayerTranscoder(Tensor[] wEnc, Tensor[] bEnc, Tensor[] wDec, Tensor[] bDec, DictionaryActivation activation = DictionaryActivation.ReLU,
        Tensor?[]? thresholds = null, int topK = 0)
    {
        int n = wEnc.Length;
        if (n == 0 || bEnc.Length != n || wDec.Length != n || bDec.Length != n) throw new MechanistException("a cross-layer transcoder needs W_enc, b_enc, W_dec and b_dec for every layer");
        long d = wEnc[0].shape[1], f = wEnc[0].shape[0];
        for (int i = 0; i < n; i++)
        {
            if (!wEnc[i].shape.SequenceEqual(new[] { f, d })) throw new MechanistException($"W_enc_{i} is [{string.Join(", ", wEnc[i].shape)}]; expected [{f}, {d}]");
            if (!wDec[i].shape.SequenceEqual(new[] { f, n - i, d })) throw new MechanistException($"W_dec_{i} is [{string.Join(", ", wDec[i].shape)}]; expected [{f}, {n - i}, {d}]");
            if (bEnc[i].numel() != f || bDec[i].numel() != d) throw new MechanistException($"b_enc_{i} / b_dec_{i} must have {f} / {d} values");
        }
        if (activation == DictionaryActivation.JumpReLU && (thresholds is null || thresholds.Length != n || thresholds.Any(t => t is null || t.numel() != f)))
            throw new MechanistException($"a JumpReLU needs thresholds of {f} values for every layer");
        _wEnc = wEnc; _bEnc = bEnc; _wDec = wDec; _bDec = bDec; _threshold = thresholds ?? new Tensor?[n];
        Activation = activation; TopK = topK;
    }

    /// <summary>Activation function.</summary>
    public DictionaryActivation Activation { get; }
    /// <summary>k of a TopK activation.</summary>
    public int TopK { get; }

    /// <inheritdoc/>
    public int NLayers => _wEnc.Length;
    /// <inheritdoc/>
    public int DModel => (int)_wEnc[0].shape[1];
    /// <inheritdoc/>
    public int DDict => (int)_wEnc[0].shape[0];

    /// <summary>Encoder of layer i [d_dict, d_model].</summary>
    public Tensor WEnc(int layer) => _wEnc[layer];
    /// <summary>Encoder bias of layer i.</summary>
    public Tensor BEnc(int layer) => _bEnc[layer];
    /// <summary>Decoders of layer i's features [d_dict, L − i, d_model].</summary>
    public Tensor WDec(int layer) => _wDec[layer];
    /// <summary>JumpReLU thresholds of layer i, or null.</summary>
    public Tensor? Threshold(int layer) => _threshold[layer];

    /// <inheritdoc/>
    public bool WritesTo(int source, int target) => source <= target && target < NLayers;

    /// <inheritdoc/>
    public Tensor Encode(int layer, Tensor x) =>
        DictionaryActivations.Apply(Activation, F.linear(x.to(_wEnc[layer].dtype), _wEnc[layer], _bEnc[layer]), _threshold[layer], TopK);

    /// <inheritdoc/>
    public Tensor Decode(int source, int target, Tensor activations)
    {
        if (target < source || target >= NLayers) throw new MechanistException($"layer {source}'s features write only to layers {source}..{NLayers - 1} (asked for {target})");
        return matmul(activations, _wDec[source].select(1, target - source));
    }

    /// <inheritdoc/>
    public Tensor DecoderBias(int target) => _bDec[target];

    /// <inheritdoc/>
    public Tensor? Skip(int layer, Tensor x) => null;

    /// <inheritdoc/>
    public Tensor DecoderRows(int source, int target, Tensor features)
    {
        if (target < source || target >= NLayers) throw new MechanistException($"layer {source}'s features write only to layers {source}..{NLayers - 1} (asked for {target})");
        return _wDec[source].select(1, target - source).index_select(0, features.to(ScalarType.Int64, _wDec[source].device));
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in _wEnc.Concat(_bEnc).Concat(_wDec).Concat(_bDec)) t.Dispose();
        foreach (var t in _threshold) t?.Dispose();
    }
}

/// <summary>One <see cref="Transcoder"/> per layer, seen as a cross-layer dictionary that writes only to its own layer.</summary>
public sealed class TranscoderSet(IReadOnlyList<Transcoder> layers) : ICrossLayerDictionary
{
    /// <summary>The per-layer transcoders.</summary>
    public IReadOnlyList<Transcoder> Layers { get; } = layers.Count > 0 ? layers : throw new MechanistException("a transcoder set needs at least one layer");

    /// <inheritdoc/>
    public int NLayers => Layers.Count;
    /// <inheritdoc/>
    public int DModel => Layers[0].DIn;
    /// <inheritdoc/>
    public int DDict => Layers[0].DDict;

    /// <inheritdoc/>
    public bool WritesTo(int source, int target) => source == target;

    /// <inheritdoc/>
    public Tensor Encode(int layer, Tensor x) => Layers[layer].Encode(x);

    /// <inheritdoc/>
    public Tensor Decode(int source, int target, Tensor activations) =>
        source == target ? matmul(activations, Layers[source].WDec) : throw new MechanistException($"a per-layer transcoder of layer {source} writes only to layer {source} (asked for {target})");

    /// <inheritdoc/>
    public Tensor DecoderBias(int target) => Layers[target].BDec;

    /// <inheritdoc/>
    public Tensor? Skip(int layer, Tensor x) => Layers[layer].Skip(x);

    /// <inheritdoc/>
    public Tensor DecoderRows(int source, int target, Tensor features) =>
        source == target ? Layers[source].DecoderRows(features) : throw new MechanistException($"a per-layer transcoder of layer {source} writes only to layer {source} (asked for {target})");

    /// <inheritdoc/>
    public void Dispose() { foreach (var t in Layers) t.Dispose(); }
}
