using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries.Formats;

/// <summary>
/// A dictionary with where it sits on a model, as a folder holds it: the one contract every user of a dictionary
/// (features, evaluation, training, the CLI and web) works through. Every dictionary is seen as layers of features
/// (<see cref="Dictionary"/>: an SAE is one layer; transcoders and CLTs one per model layer); what differs between
/// kinds is where the features read and write, which the bundle answers.
/// </summary>
public abstract class DictionaryBundle : IDisposable
{
    /// <summary>The features as layers (an SAE: one layer).</summary>
    public abstract ICrossLayerDictionary Dictionary { get; }

    /// <summary>The model it was trained for (a label).</summary>
    public abstract string ModelName { get; }

    /// <summary>The folder format it reads from and writes to ("circuit-tracer" or "saelens").</summary>
    public abstract string Format { get; }

    /// <summary>Its kind.</summary>
    public DictionaryKind Kind => Dictionary.Kind;

    /// <summary>Where it reads, as the CLI and records spell it: an SAE's hook point, or a transcoder input ("resid", ...).</summary>
    public abstract string Reads { get; }

    /// <summary>A splice of it into a run (transcoders in place of the MLPs; an SAE at its hook point).</summary>
    public abstract ISplice Splice(ErrorTerm error = ErrorTerm.Detached);

    /// <summary>Per dictionary layer, the hook point holding what its features read (for a transcoder reading the MLP's own input: the point its splice adds).</summary>
    public abstract string[] InputHooks(HookedTransformer model);

    /// <summary>Per dictionary layer, the hook point it reconstructs.</summary>
    public abstract string[] TargetHooks(HookedTransformer model);

    /// <summary>Whether its inputs are hook points of the model's own forward (else only its splice fires them).</summary>
    public abstract bool ReadsOwnHookPoints { get; }

    /// <summary>The model layer of each dictionary layer (an SAE: its hook's layer, 0 for model-level points).</summary>
    public abstract int[] ModelLayers(HookedTransformer model);

    /// <summary>Checks widths and layer count against <paramref name="model"/> (a clear error if they do not fit).</summary>
    public void CheckFits(HookedTransformer model) => _ = model.HookPointsFor(new RunOptions { Splices = new[] { Splice(ErrorTerm.None) } });

    /// <summary>Input and target hook points for harvesting activations to train or evaluate on; an error when the input has no hook point of its own.</summary>
    public abstract (string[] Inputs, string[] Targets) HarvestHooks(HookedTransformer model);

    /// <summary>What <c>mechanist dict info</c> shows.</summary>
    public DictionaryInfo Describe() => new(Format, DictionaryNames.Kinds.Name(Kind), Reads, ModelName, Dictionary.NLayers, Dictionary.DModel, Dictionary.DDict,
        DictionaryNames.Activations.Name(Dictionary.Activation), Dictionary.TopK);

    /// <summary>Writes the folder in its format (atomically), with <paramref name="alsoWrite"/> adding files to the same temp folder.</summary>
    public abstract void Save(string dir, bool overwrite = false, Action<string>? alsoWrite = null);

    /// <summary>Releases the dictionary's tensors.</summary>
    public abstract void Dispose();

    /// <summary>A trained dictionary bundled with its site: an SAE at <paramref name="saeHook"/>, or transcoders reading <paramref name="input"/>.</summary>
    public static DictionaryBundle Of(ICrossLayerDictionary trained, string modelName, TranscoderInput input, string? saeHook) =>
        trained.Kind == DictionaryKind.Sae
            ? new SaeBundle((Transcoder)(trained.Layer(0) ?? throw new MechanistException("an SAE has one layer")), saeHook ?? throw new MechanistException("an SAE needs its hook point"), modelName)
            : new TranscoderBundle(trained, input, modelName);

    /// <summary>Loads a dictionary folder in any supported format: circuit-tracer (config.yaml) or SAELens (cfg.json + sae_weights.safetensors).</summary>
    public static DictionaryBundle Load(string dir, Device? device = null)
    {
        if (!Directory.Exists(dir)) throw new MechanistException($"{dir}: dictionary folder not found");
        if (CircuitTracerFormat.IsFolder(dir)) return CircuitTracerFormat.Load(dir, device);
        if (SaeLensFormat.IsFolder(dir)) return SaeLensFormat.Load(dir, device);
        throw new MechanistException($"{dir}: neither a circuit-tracer transcoder folder (config.yaml) nor an SAELens folder (cfg.json + sae_weights.safetensors)");
    }
}

/// <summary>What a dictionary folder holds.</summary>
/// <param name="Format">circuit-tracer or saelens.</param>
/// <param name="Kind">sae, transcoder, skip-transcoder or clt.</param>
/// <param name="Reads">An SAE's hook point, or where transcoders read (resid, normalized, mlp-in).</param>
/// <param name="Model">The model it was trained for.</param>
/// <param name="Layers">Dictionary layers.</param>
/// <param name="DIn">Width it reads.</param>
/// <param name="Features">Features per layer.</param>
/// <param name="Activation">relu, jumprelu or topk.</param>
/// <param name="K">k of a top-k activation (0 otherwise).</param>
public sealed record DictionaryInfo(string Format, string Kind, string Reads, string Model, int Layers, int DIn, int Features, string Activation, int K);

/// <summary>Transcoders or a CLT with where their features read the MLP input.</summary>
/// <param name="dictionary">The dictionary (ownership passes to the bundle).</param>
/// <param name="input">Where its features read.</param>
/// <param name="modelName">The model it was trained for.</param>
public sealed class TranscoderBundle(ICrossLayerDictionary dictionary, TranscoderInput input, string modelName) : DictionaryBundle
{
    /// <inheritdoc/>
    public override ICrossLayerDictionary Dictionary { get; } = dictionary.Kind.ReplacesMlps() ? dictionary : throw new MechanistException("an SAE is bundled with its hook point, not as transcoders");

    /// <summary>Where its features read (hook_resid_mid, ln2.hook_normalized or the MLP's input).</summary>
    public TranscoderInput Input { get; } = input;

    /// <inheritdoc/>
    public override string ModelName { get; } = modelName;

    /// <inheritdoc/>
    public override string Format => "circuit-tracer";

    /// <inheritdoc/>
    public override string Reads => DictionaryNames.Inputs.Name(Input);

    /// <inheritdoc/>
    public override bool ReadsOwnHookPoints => TranscoderInputs.HasOwnHookPoint(Input);

    /// <summary>A splice of these transcoders in place of the MLPs.</summary>
    public TranscoderSplice TranscoderSplice(ErrorTerm error = ErrorTerm.Detached) => new(Dictionary, Input, error);

    /// <inheritdoc/>
    public override ISplice Splice(ErrorTerm error = ErrorTerm.Detached) => TranscoderSplice(error);

    /// <inheritdoc/>
    public override string[] InputHooks(HookedTransformer model)
    {
        if (model.Config.AttnOnly) throw new MechanistException($"{model.Name} has no MLPs for transcoders to replace");
        return Enumerable.Range(0, Dictionary.NLayers).Select(l => TranscoderInputs.HookName(model, Input, l)).ToArray();
    }

    /// <inheritdoc/>
    public override (string[] Inputs, string[] Targets) HarvestHooks(HookedTransformer model) => TranscoderInputs.HarvestHooks(model, Input);

    /// <inheritdoc/>
    public override string[] TargetHooks(HookedTransformer model) =>
        Enumerable.Range(0, Dictionary.NLayers).Select(l => model.HookPoints.Name(HookKind.MlpOut, l)).ToArray();

    /// <inheritdoc/>
    public override int[] ModelLayers(HookedTransformer model) => Enumerable.Range(0, Dictionary.NLayers).ToArray();

    /// <inheritdoc/>
    public override void Save(string dir, bool overwrite = false, Action<string>? alsoWrite = null) => CircuitTracerFormat.Save(this, dir, overwrite, alsoWrite);

    /// <inheritdoc/>
    public override void Dispose() => Dictionary.Dispose();
}

/// <summary>An SAE with the hook point it reads and reconstructs.</summary>
/// <param name="sae">The SAE (ownership passes to the bundle).</param>
/// <param name="hookName">Its hook point (TransformerLens name).</param>
/// <param name="modelName">The model it was trained for.</param>
public sealed class SaeBundle(Transcoder sae, string hookName, string modelName) : DictionaryBundle
{
    /// <summary>The SAE.</summary>
    public Transcoder Sae { get; } = sae.Kind == DictionaryKind.Sae || sae.DIn == sae.DOut && sae.WSkip is null ? sae
        : throw new MechanistException("an SAE writes what it reads (d_in = d_out, no skip)");

    /// <summary>Its hook point.</summary>
    public string HookName { get; } = hookName;

    /// <inheritdoc/>
    public override ICrossLayerDictionary Dictionary { get; } = new TranscoderSet(new ISparseDictionary[] { sae });

    /// <inheritdoc/>
    public override string ModelName { get; } = modelName;

    /// <inheritdoc/>
    public override string Format => "saelens";

    /// <inheritdoc/>
    public override string Reads => HookName;

    /// <inheritdoc/>
    public override bool ReadsOwnHookPoints => true;

    /// <summary>A splice of this SAE at its hook point.</summary>
    public SaeSplice SaeSplice(ErrorTerm error = ErrorTerm.Detached) => new(HookName, Sae, error);

    /// <inheritdoc/>
    public override ISplice Splice(ErrorTerm error = ErrorTerm.Detached) => SaeSplice(error);

    /// <inheritdoc/>
    public override string[] InputHooks(HookedTransformer model) { model.HookPoints.Check(HookName); return new[] { HookName }; }

    /// <inheritdoc/>
    public override string[] TargetHooks(HookedTransformer model) => InputHooks(model);

    /// <inheritdoc/>
    public override (string[] Inputs, string[] Targets) HarvestHooks(HookedTransformer model) => (InputHooks(model), TargetHooks(model));

    /// <inheritdoc/>
    public override int[] ModelLayers(HookedTransformer model) => new[] { Math.Max(0, model.HookPoints.Find(HookName)?.Layer ?? 0) };

    /// <inheritdoc/>
    public override void Save(string dir, bool overwrite = false, Action<string>? alsoWrite = null) => SaeLensFormat.Save(this, dir, overwrite, alsoWrite);

    /// <inheritdoc/>
    public override void Dispose() => Sae.Dispose();
}
