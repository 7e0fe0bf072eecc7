using static TorchSharp.torch;

namespace Mechanist.Dictionaries;

/// <summary>The nonzero activations of a dictionary over a batch of rows.</summary>
/// <param name="Rows">Row index of each nonzero [nnz] (int64; a row is one flattened input position).</param>
/// <param name="Features">Feature index of each nonzero [nnz] (int64).</param>
/// <param name="Values">Activation of each nonzero [nnz].</param>
public sealed record SparseActivations(Tensor Rows, Tensor Features, Tensor Values) : IDisposable
{
    /// <inheritdoc/>
    public void Dispose() { Rows.Dispose(); Features.Dispose(); Values.Dispose(); }
}

/// <summary>
/// A sparse dictionary that reads one activation and writes one (an SAE writes what it reads; a
/// transcoder reads an MLP's input and writes its output). Inputs are [..., d_in]; the leading
/// dimensions are kept.
/// </summary>
public interface ISparseDictionary : IDisposable
{
    /// <summary>Width of what it reads.</summary>
    int DIn { get; }

    /// <summary>Width of what it writes.</summary>
    int DOut { get; }

    /// <summary>Number of features.</summary>
    int DDict { get; }

    /// <summary>What it is (an SAE, a transcoder, a skip transcoder).</summary>
    DictionaryKind Kind { get; }

    /// <summary>Its activation function.</summary>
    DictionaryActivation Activation { get; }

    /// <summary>k of a TopK activation (0 otherwise).</summary>
    int TopK { get; }

    /// <summary>Pre-activations x·W_encᵀ + b_enc [..., d_dict] (before the activation function).</summary>
    Tensor PreActivations(Tensor x);

    /// <summary>Feature activations [..., d_dict] (after the activation function).</summary>
    Tensor Encode(Tensor x);

    /// <summary>Encoder rows of some features [k, d_in]: the directions whose dot product with the input gives their pre-activations.</summary>
    Tensor EncoderRows(Tensor features);

    /// <summary>The reconstruction from activations alone: acts · W_dec + b_dec [..., d_out] (no skip term).</summary>
    Tensor Decode(Tensor activations);

    /// <summary>What the features write, acts · W_dec [..., d_out], without the decoder bias.</summary>
    Tensor DecodeWithoutBias(Tensor activations);

    /// <summary>Decoder bias b_dec [d_out].</summary>
    Tensor DecoderBias { get; }

    /// <summary>The skip term of <paramref name="x"/> (a linear path beside the features), or null when there is none.</summary>
    Tensor? Skip(Tensor x);

    /// <summary>The nonzero activations of <paramref name="x"/> flattened to rows.</summary>
    SparseActivations EncodeSparse(Tensor x);

    /// <summary>Decoder rows of some features [k, d_out].</summary>
    Tensor DecoderRows(Tensor features);
}

/// <summary>
/// A dictionary that replaces the MLPs of a whole model: features of layer i read layer i's MLP input and
/// write to the MLP outputs of layers j ≥ i (a cross-layer transcoder; a set of per-layer transcoders is
/// the case where they write only to j = i).
/// </summary>
public interface ICrossLayerDictionary : IDisposable
{
    /// <summary>Layers replaced (the model's layer count).</summary>
    int NLayers { get; }

    /// <summary>Residual width.</summary>
    int DModel { get; }

    /// <summary>Features per layer.</summary>
    int DDict { get; }

    /// <summary>A transcoder set (per-layer or skip transcoders) or a cross-layer transcoder.</summary>
    DictionaryKind Kind { get; }

    /// <summary>Its activation function.</summary>
    DictionaryActivation Activation { get; }

    /// <summary>k of a TopK activation (0 otherwise).</summary>
    int TopK { get; }

    /// <summary>Layer <paramref name="layer"/> as a single-layer dictionary, when its features write only to their own layer; null for a CLT.</summary>
    ISparseDictionary? Layer(int layer);

    /// <summary>Pre-activations [..., d_dict] of layer <paramref name="layer"/>'s features on its MLP input.</summary>
    Tensor PreActivations(int layer, Tensor x);

    /// <summary>Encoder rows [k, d_model] of some features of layer <paramref name="layer"/>.</summary>
    Tensor EncoderRows(int layer, Tensor features);

    /// <summary>Whether layer <paramref name="source"/>'s features write to layer <paramref name="target"/>.</summary>
    bool WritesTo(int source, int target);

    /// <summary>Activations [..., d_dict] of layer <paramref name="layer"/>'s features on its MLP input.</summary>
    Tensor Encode(int layer, Tensor x);

    /// <summary>
    /// What layer <paramref name="source"/>'s features write to layer <paramref name="target"/>'s MLP output
    /// (no decoder bias); zero width contributions for target &lt; source are an error.
    /// </summary>
    Tensor Decode(int source, int target, Tensor activations);

    /// <summary>Decoder bias of layer <paramref name="target"/>'s output [d_model].</summary>
    Tensor DecoderBias(int target);

    /// <summary>The skip term at layer <paramref name="layer"/> of its MLP input, or null.</summary>
    Tensor? Skip(int layer, Tensor x);

    /// <summary>Decoder rows [k, d_model] of some features of <paramref name="source"/> into <paramref name="target"/>.</summary>
    Tensor DecoderRows(int source, int target, Tensor features);
}
