using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries;

/// <summary>What a sparse dictionary reads and writes.</summary>
public enum DictionaryKind
{
    /// <summary>A sparse autoencoder: reads and reconstructs one hook point.</summary>
    Sae,
    /// <summary>Per-layer transcoders: each reads its layer's MLP input and predicts the MLP output.</summary>
    Transcoder,
    /// <summary>Per-layer transcoders with a linear skip path W_skip.</summary>
    SkipTranscoder,
    /// <summary>A cross-layer transcoder: layer-i features write to every layer j ≥ i.</summary>
    Clt,
}

/// <summary>Where a transcoder reads the MLP's input.</summary>
public enum TranscoderInput
{
    /// <summary>The residual stream the MLP reads (hook_resid_mid).</summary>
    Resid,
    /// <summary>ln2's normalised input before its weight (ln2.hook_normalized).</summary>
    Normalized,
    /// <summary>The MLP's own input (after ln2's weight and bias).</summary>
    MlpInput,
}

/// <summary>
/// The dictionary vocabularies, each spelled once: kinds, activation functions, transcoder input sites. Formats, the
/// CLI, the web API and feature stores all read and write these names.
/// </summary>
public static class DictionaryNames
{
    /// <summary>Dictionary kinds: sae, transcoder, skip-transcoder, clt ("transcoders", older feature stores' name of a per-layer set, is read as transcoder).</summary>
    public static readonly NameTable<DictionaryKind> Kinds = new("dictionary kind",
        new[] { (DictionaryKind.Sae, "sae"), (DictionaryKind.Transcoder, "transcoder"), (DictionaryKind.SkipTranscoder, "skip-transcoder"), (DictionaryKind.Clt, "clt") },
        new[] { ("transcoders", DictionaryKind.Transcoder), ("cross_layer_transcoder", DictionaryKind.Clt), ("transcoder_set", DictionaryKind.Transcoder) });

    /// <summary>Activation functions: relu, jumprelu, gated, topk (SAELens's "standard" is relu).</summary>
    public static readonly NameTable<DictionaryActivation> Activations = new("activation function",
        new[] { (DictionaryActivation.ReLU, "relu"), (DictionaryActivation.JumpReLU, "jumprelu"), (DictionaryActivation.Gated, "gated"), (DictionaryActivation.TopK, "topk") },
        new[] { ("standard", DictionaryActivation.ReLU) });

    /// <summary>Activation functions while training: relu, topk, batchtopk, jumprelu, matryoshka (BatchTopK), gated.</summary>
    public static readonly NameTable<Training.TrainActivation> TrainActivations = new("training activation",
        new[] { (Training.TrainActivation.ReLU, "relu"), (Training.TrainActivation.TopK, "topk"), (Training.TrainActivation.BatchTopK, "batchtopk"), (Training.TrainActivation.JumpReLU, "jumprelu"),
            (Training.TrainActivation.MatryoshkaBatchTopK, "matryoshka"), (Training.TrainActivation.Gated, "gated") });

    /// <summary>Where transcoders read, as the CLI and web spell it: resid, normalized, mlp-in.</summary>
    public static readonly NameTable<TranscoderInput> Inputs = new("transcoder input",
        new[] { (TranscoderInput.Resid, "resid"), (TranscoderInput.Normalized, "normalized"), (TranscoderInput.MlpInput, "mlp-in") });

    /// <summary>Where transcoders read, as circuit-tracer's config.yaml spells it (feature_input_hook).</summary>
    public static readonly NameTable<TranscoderInput> InputHooks = new("feature_input_hook",
        new[] { (TranscoderInput.Resid, "hook_resid_mid"), (TranscoderInput.Normalized, "ln2.hook_normalized"), (TranscoderInput.MlpInput, "mlp.hook_in") });

    /// <summary>Whether features of this kind replace MLPs (transcoders, CLTs) rather than reconstruct a hook point.</summary>
    public static bool ReplacesMlps(this DictionaryKind kind) => kind != DictionaryKind.Sae;
}

/// <summary>The one mapping from a transcoder input to what it reads in a block.</summary>
public static class TranscoderInputs
{
    /// <summary>What a transcoder reading <paramref name="input"/> sees at <paramref name="site"/>.</summary>
    public static Tensor Read(this MlpSite site, TranscoderInput input) => input switch
    {
        TranscoderInput.Resid => site.Resid,
        TranscoderInput.Normalized => site.Normalized,
        _ => site.Input,
    };

    /// <summary>
    /// The hook point holding what layer <paramref name="layer"/>'s features read: resid_mid (resid_pre with a parallel
    /// residual), ln2.hook_normalized, or — for the MLP's own input, which has no point of its own — the point a
    /// transcoder splice adds beneath hook_mlp_out.
    /// </summary>
    public static string HookName(HookedTransformer model, TranscoderInput input, int layer)
    {
        var reg = model.HookPoints;
        return input switch
        {
            TranscoderInput.Resid => reg.Name(model.Config.ParallelResidual ? HookKind.ResidPre : HookKind.ResidMid, layer),
            TranscoderInput.Normalized => reg.Name(HookKind.Ln2Normalized, layer),
            _ => SplicePoints.Under(reg.Name(HookKind.MlpOut, layer), SplicePoints.Input),
        };
    }

    /// <summary>
    /// Input (per layer: what the features read) and target (hook_mlp_out) hook points for harvesting transcoder
    /// training data; an error where the input has no hook point of its own or the model has no MLPs.
    /// </summary>
    public static (string[] Inputs, string[] Targets) HarvestHooks(HookedTransformer model, TranscoderInput input)
    {
        if (model.Config.AttnOnly) throw new MechanistException($"{model.Name} has no MLPs for transcoders to replace");
        if (model.Config.ParallelResidual && input == TranscoderInput.Resid) throw new MechanistException("with a parallel residual the MLP reads resid_pre: use --input normalized or mlp-in");
        if (!HasOwnHookPoint(input)) throw new MechanistException("--input mlp-in has no hook point of its own here; use resid or normalized");
        var layers = Enumerable.Range(0, model.Config.NLayers);
        return (layers.Select(l => HookName(model, input, l)).ToArray(), layers.Select(l => model.HookPoints.Name(HookKind.MlpOut, l)).ToArray());
    }

    /// <summary>Whether the model's own forward holds this input at a hook point (else only a splice fires it).</summary>
    public static bool HasOwnHookPoint(TranscoderInput input) => input != TranscoderInput.MlpInput;
}
