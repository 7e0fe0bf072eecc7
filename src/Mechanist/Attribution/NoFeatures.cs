using Mechanist.Dictionaries;
using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>
/// The dictionary of an attention-only model's replacement: there are no MLPs to replace, so there are no features; the graph's
/// nodes are the tokens and the logits, and its edges run through the frozen attention alone.
/// </summary>
internal sealed class NoFeatures(int layers, int dModel) : ICrossLayerDictionary
{
    public int NLayers => layers;
    public int DModel => dModel;
    public int DDict => 0;
    public DictionaryKind Kind => DictionaryKind.Transcoder;
    public DictionaryActivation Activation => DictionaryActivation.ReLU;
    public int TopK => 0;
    public ISparseDictionary? Layer(int layer) => null;
    public Tensor PreActivations(int layer, Tensor x) => Empty(x);
    public Tensor EncoderRows(int layer, Tensor features) => throw None();
    public bool WritesTo(int source, int target) => false;
    public Tensor Encode(int layer, Tensor x) => Empty(x);
    public Tensor Decode(int source, int target, Tensor activations) => throw None();
    public Tensor DecoderBias(int target) => zeros(dModel);
    public Tensor? Skip(int layer, Tensor x) => null;
    public Tensor DecoderRows(int source, int target, Tensor features) => throw None();
    public void Dispose() { }

    static Tensor Empty(Tensor x) => zeros(x.shape[..^1].Append(0L).ToArray(), x.dtype, x.device);
    static MechanistException None() => new("an attention-only model has no MLPs, so its replacement has no features");
}
