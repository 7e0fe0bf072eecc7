using Mechanist.Tensors;
using Mechanist.Dictionaries;
using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>
/// The local replacement model of one prompt: the clean run's feature activations (position 0 zeroed), error vectors
/// (true MLP output − reconstruction incl. b_dec and skip; position 0 zeroed) and the splice that makes the network
/// linear in its nodes — attention patterns and norm scales frozen (<see cref="RunOptions"/>), every MLP output kept
/// at its true value with the gradient passing only through the transcoder's skip term.
/// </summary>
public sealed class ReplacementModel : IDisposable
{
    ReplacementModel(HookedTransformer model, ICrossLayerDictionary dictionary, TranscoderInput input, Tensor tokens, Tensor acts, Tensor errors, Tensor logits, ActivationCache clean)
    {
        Model = model; Dictionary = dictionary; Input = input; Tokens = tokens; Activations = acts; Errors = errors; Logits = logits; Clean = clean;
    }

    /// <summary>Every activation of the clean run (patterns, norm scales, the embeddings, MLP outputs, the transcoders' inputs and errors), for interventions and attribution.</summary>
    public ActivationCache Clean { get; }

    /// <summary>The model.</summary>
    public HookedTransformer Model { get; }
    /// <summary>The transcoders.</summary>
    public ICrossLayerDictionary Dictionary { get; }
    /// <summary>Where the features read.</summary>
    public TranscoderInput Input { get; }
    /// <summary>The prompt [1, T].</summary>
    public Tensor Tokens { get; }
    /// <summary>Feature activations [L, T, d_dict] of the clean run, position 0 zeroed.</summary>
    public Tensor Activations { get; }
    /// <summary>Error vectors [L, T, d_model], position 0 zeroed.</summary>
    public Tensor Errors { get; }
    /// <summary>The model's logits [T, vocab] on the prompt.</summary>
    public Tensor Logits { get; }

    /// <summary>
    /// The replacement of an attention-only model (no MLPs, so no transcoders): every edge of its graph runs from a token's embedding
    /// through the frozen attention to a logit.
    /// </summary>
    public static ReplacementModel AttentionOnly(HookedTransformer model, Tensor tokens)
    {
        if (!model.Config.AttnOnly) throw new MechanistException("this model has MLPs: its replacement needs transcoders (--transcoders DIR)");
        return Build(model, new NoFeatures(model.Config.NLayers, model.Config.DModel), TranscoderInput.Resid, tokens);
    }

    /// <summary>Whether this replacement has no MLPs (an attention-only model): no features, no error nodes.</summary>
    public bool IsAttentionOnly => Dictionary is NoFeatures;

    /// <summary>Runs the prompt [1, T] once and records activations and errors.</summary>
    public static ReplacementModel Build(HookedTransformer model, ICrossLayerDictionary dictionary, TranscoderInput input, Tensor tokens)
    {
        if (tokens.dim() != 2 || tokens.shape[0] != 1) throw new MechanistException("attribution takes one prompt [1, pos]");
        bool attentionOnly = dictionary is NoFeatures;
        if (model.Config.AttnOnly != attentionOnly)
            throw new MechanistException(model.Config.AttnOnly ? "an attention-only model has no MLPs to replace: trace it without transcoders" : "this model has MLPs: its replacement needs transcoders");
        var splice = attentionOnly ? null : new TranscoderSplice(dictionary, input, ErrorTerm.Detached);
        splice?.AddedPoints(model.HookPoints).ToList(); // layers and width must fit
        var reg = model.HookPoints;
        int layers = model.Config.NLayers, T = (int)tokens.shape[1];
        using var scope = NewDisposeScope();
        // The spliced run with error terms is the model itself; features and errors at BOS are zeroed afterwards
        // (circuit-tracer's zero_positions), which changes nothing at later positions: decoding is per position.
        // Cached: what the replacement and interventions read (features, errors, MLP inputs and outputs, norm scales, and the
        // patterns, which a fused run keeps as queries and keys until read), not every activation of a long prompt.
        var needed = new HashSet<string>(reg.Points.Where(p => p.Kind is HookKind.MlpOut or HookKind.Pattern or HookKind.Ln1Scale or HookKind.Ln2Scale
            or HookKind.LnFinalScale or HookKind.Ln1PostScale or HookKind.Ln2PostScale).Select(p => p.Name)) { HookNames.Embed };
        if (!attentionOnly)
            for (int l = 0; l < layers; l++)
                foreach (var suffix in new[] { SplicePoints.Acts, SplicePoints.Error, SplicePoints.Input })
                    needed.Add(SplicePoints.Under(reg.Name(HookKind.MlpOut, l), suffix));
        var (logits, cache) = model.RunWithCache(tokens, needed.Contains, new RunOptions { Splices = splice is null ? Array.Empty<ISplice>() : new ISplice[] { splice } });
        Tensor acts, errors;
        if (attentionOnly)
        {
            // No MLPs: no features, and nothing for an error to stand for.
            acts = zeros(layers, T, 0);
            errors = zeros(layers, T, model.Config.DModel);
        }
        else
        {
            acts = stack(Enumerable.Range(0, layers).Select(l => cache[SplicePoints.Under(reg.Name(HookKind.MlpOut, l), SplicePoints.Acts)][0]).ToArray());
            errors = stack(Enumerable.Range(0, layers).Select(l => cache[SplicePoints.Under(reg.Name(HookKind.MlpOut, l), SplicePoints.Error)][0]).ToArray()).clone();
            acts[.., 0] = 0;
            errors[.., 0] = 0;
        }
        return new ReplacementModel(model, dictionary, input, tokens.clone().MoveToOuterDisposeScope(), acts.to(ScalarType.Float32).MoveToOuterDisposeScope(),
            errors.to(ScalarType.Float32).MoveToOuterDisposeScope(), logits[0].to(ScalarType.Float32).MoveToOuterDisposeScope(), cache);
    }

    /// <summary>The frozen linear replacement's splice for one run.</summary>
    public ISplice FrozenSplice() => new FrozenMlps(this);

    /// <summary>Run options of the frozen replacement: patterns and norm scales detached, MLPs frozen but for the skip; the run stops at the unembedding's input.</summary>
    public RunOptions FrozenOptions() => new() { FreezeAttention = true, FreezeNormScales = true, SkipUnembedding = true, Splices = IsAttentionOnly ? Array.Empty<ISplice>() : new[] { FrozenSplice() } };

    /// <summary>MLP output = its true value (the clean run's), with the gradient of skip(x_in) only: skip + (true − skip).detach().</summary>
    sealed class FrozenMlps(ReplacementModel owner) : ISplice
    {
        public IEnumerable<(string Parent, string Suffix, HookShape Shape)> AddedPoints(HookRegistry registry)
        {
            var resid = registry.Get(HookKind.ResidPost, 0).Shape;
            for (int l = 0; l < registry.Layers; l++) yield return (registry.Name(HookKind.MlpOut, l), SplicePoints.Input, resid);
        }

        public ISpliceRun Start(HookedTransformer model) => new Run(owner, model);

        sealed class Run(ReplacementModel owner, HookedTransformer model) : ISpliceRun
        {
            public Tensor? AtHook(string name, Tensor value, FireHook fire) => null;

            public Tensor? ReplaceMlp(MlpSite site, Func<Tensor> mlp, FireHook fire)
            {
                var x = fire(SplicePoints.Under(model.HookPoints.Name(HookKind.MlpOut, site.Layer), SplicePoints.Input), site.Read(owner.Input));
                // The clean run's MLP output (the network is frozen there), broadcast over the run's copies: no MLP is recomputed.
                var clean = owner.Clean[model.HookPoints.Name(HookKind.MlpOut, site.Layer)];
                var y = clean.narrow(1, 0, x.shape[1]).to(x.dtype, x.device).expand(x.shape).detach();   // (a prefix run reads its positions)
                // A source added here must get a gradient even where nothing upstream is live (no skip): a fresh leaf.
                return owner.Dictionary.Skip(site.Layer, x) is { } skip ? skip.Add((y - skip).detach()) : y.requires_grad_(true);
            }

            public void Dispose() { }
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Tokens.Dispose(); Activations.Dispose(); Errors.Dispose(); Logits.Dispose(); Clean.Dispose();
    }
}
