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

    /// <inheritdoc/>
    public DictionaryActivation Activation { get; }
    /// <inheritdoc/>
    public int TopK { get; }
    /// <inheritdoc/>
    public DictionaryKind Kind => DictionaryKind.Clt;
    /// <inheritdoc/>
    public ISparseDictionary? Layer(int layer) => null;

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
    public Tensor PreActivations(int layer, Tensor x) => F.linear(x.to(_wEnc[layer].dtype), _wEnc[layer], _bEnc[layer]);

    /// <inheritdoc/>
    public Tensor Encode(int layer, Tensor x) => DictionaryActivations.Apply(Activation, PreActivations(layer, x), _threshold[layer], TopK);

    /// <inheritdoc/>
    public Tensor EncoderRows(int layer, Tensor features) => _wEnc[layer].index_select(0, features.to(ScalarType.Int64, _wEnc[layer].device));

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

/// <summary>One single-layer dictionary per layer (per-layer transcoders; an SAE is a set of one), seen as a cross-layer dictionary that writes only to its own layer.</summary>
public sealed class TranscoderSet(IReadOnlyList<ISparseDictionary> layers) : ICrossLayerDictionary
{
    /// <summary>The per-layer dictionaries (all of one kind and width).</summary>
    public IReadOnlyList<ISparseDictionary> Layers { get; } = layers.Count == 0 ? throw new MechanistException("a transcoder set needs at least one layer")
        : layers.Any(l => l.Kind != layers[0].Kind || l.DIn != layers[0].DIn || l.DOut != layers[0].DOut || l.DDict != layers[0].DDict)
            ? throw new MechanistException("the layers of a transcoder set must be of one kind and width") : layers;

    /// <inheritdoc/>
    public DictionaryKind Kind => Layers[0].Kind;
    /// <inheritdoc/>
    public DictionaryActivation Activation => Layers[0].Activation;
    /// <inheritdoc/>
    public int TopK => Layers[0].TopK;
    /// <inheritdoc/>
    public ISparseDictionary? Layer(int layer) => Layers[layer];
    /// <inheritdoc/>
    public Tensor PreActivations(int layer, Tensor x) => Layers[layer].PreActivations(x);
    /// <inheritdoc/>
    public Tensor EncoderRows(int layer, Tensor features) => Layers[layer].EncoderRows(features);

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
        source == target ? Layers[source].DecodeWithoutBias(activations) : throw new MechanistException($"a per-layer transcoder of layer {source} writes only to layer {source} (asked for {target})");

    /// <inheritdoc/>
    public Tensor DecoderBias(int target) => Layers[target].DecoderBias;

    /// <inheritdoc/>
    public Tensor? Skip(int layer, Tensor x) => Layers[layer].Skip(x);

    /// <inheritdoc/>
    public Tensor DecoderRows(int source, int target, Tensor features) =>
        source == target ? Layers[source].DecoderRows(features) : throw new MechanistException($"a per-layer transcoder of layer {source} writes only to layer {source} (asked for {target})");

    /// <inheritdoc/>
    public void Dispose() { foreach (var t in Layers) t.Dispose(); }
}
