using Mechanist.Tensors;
using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries;

/// <summary>How a spliced dictionary treats what it fails to reconstruct.</summary>
public enum ErrorTerm
{
    /// <summary>Dropped: the run sees the reconstruction alone.</summary>
    None,
    /// <summary>Added back with its gradient cut (the forward is exact; gradients flow through the features alone).</summary>
    Detached,
    /// <summary>Added back with its gradient (the forward and backward are the model's own).</summary>
    Live,
}

/// <summary>
/// An SAE spliced at a hook point, as SAELens's HookedSAETransformer does. It adds the points
/// <c>{point}.hook_sae_input</c>, <c>.hook_sae_acts_post</c>, <c>.hook_sae_recons</c> and <c>.hook_sae_error</c>;
/// the point's value becomes the reconstruction (plus the error term). The error is measured against
/// the reconstruction of the activations as encoded, so editing the activations changes the output.
/// </summary>
public sealed class SaeSplice(string hookPoint, ISparseDictionary sae, ErrorTerm error = ErrorTerm.Detached) : ISplice
{
    readonly string hookPoint = hookPoint;
    readonly ISparseDictionary sae = sae;
    readonly ErrorTerm error = error;

    /// <inheritdoc/>
    public IEnumerable<(string Parent, string Suffix, HookShape Shape)> AddedPoints(HookRegistry registry)
    {
        var p = registry.Find(hookPoint) ?? throw new MechanistException($"cannot splice an SAE at unknown hook point '{hookPoint}'");
        if (!p.Shape.IsPerPosition || p.Shape.Width != sae.DIn)
            throw new MechanistException($"the SAE reads [batch, pos, {sae.DIn}], but {hookPoint} is {p.Shape}");
        if (sae.DIn != sae.DOut) throw new MechanistException($"an SAE must write what it reads (d_in {sae.DIn}, d_out {sae.DOut})");
        var acts = HookShape.BatchPos(sae.DDict);
        return new[] { (hookPoint, SplicePoints.Input, p.Shape), (hookPoint, SplicePoints.Acts, acts), (hookPoint, SplicePoints.Recons, p.Shape), (hookPoint, SplicePoints.Error, p.Shape) };
    }

    /// <inheritdoc/>
    public ISpliceRun Start(HookedTransformer model) => new Run(this);

    sealed class Run(SaeSplice owner) : ISpliceRun
    {
        public Tensor? AtHook(string name, Tensor value, FireHook fire)
        {
            if (name != owner.hookPoint) return null;
            string p = owner.hookPoint;
            var x = fire(SplicePoints.Under(p, SplicePoints.Input), value);
            var acts = owner.sae.Encode(x);
            var cleanRecon = owner.sae.Decode(acts);
            var err = x - cleanRecon;
            acts = fire(SplicePoints.Under(p, SplicePoints.Acts), acts);
            var recon = fire(SplicePoints.Under(p, SplicePoints.Recons), owner.sae.Decode(acts));
            if (owner.error == ErrorTerm.None) return recon.to(value.dtype);
            err = fire(SplicePoints.Under(p, SplicePoints.Error), owner.error == ErrorTerm.Detached ? err.detach() : err);
            return recon.Add(err).to(value.dtype);
        }

        public Tensor? ReplaceMlp(MlpSite site, Func<Tensor> mlp, FireHook fire) => null;

        public void Dispose() { }
    }
}

/// <summary>
/// Transcoders in place of the MLPs: a cross-layer dictionary (or a per-layer transcoder set) whose
/// layer-i features read layer i's MLP input and write to the MLP outputs of layers ≥ i. Adds, beneath
/// each <c>blocks.L.hook_mlp_out</c>: <c>.hook_sae_input</c>, <c>.hook_sae_acts_post</c> (editing them
/// is a feature intervention: later layers read the edited values), <c>.hook_sae_recons</c> and
/// <c>.hook_sae_error</c> (true output − reconstruction of the activations as encoded).
/// </summary>
public sealed class TranscoderSplice(ICrossLayerDictionary dictionary, TranscoderInput input = TranscoderInput.Resid, ErrorTerm error = ErrorTerm.Detached) : ISplice
{
    readonly TranscoderInput input = input;
    readonly ErrorTerm error = error;

    /// <summary>The dictionary.</summary>
    public ICrossLayerDictionary Dictionary { get; } = dictionary;

    /// <inheritdoc/>
    public IEnumerable<(string Parent, string Suffix, HookShape Shape)> AddedPoints(HookRegistry registry)
    {
        if (Dictionary.NLayers != registry.Layers) throw new MechanistException($"the transcoders have {Dictionary.NLayers} layers; the model has {registry.Layers}");
        if (!registry.Has(HookKind.MlpOut)) throw new MechanistException("this model has no MLPs to replace");
        var resid = registry.Get(HookKind.ResidPost, 0).Shape;
        if (resid.Width != Dictionary.DModel) throw new MechanistException($"the transcoders have d_model {Dictionary.DModel}; the model's residual is {resid}");
        var acts = HookShape.BatchPos(Dictionary.DDict);
        for (int l = 0; l < registry.Layers; l++)
        {
            string p = registry.Name(HookKind.MlpOut, l);
            yield return (p, SplicePoints.Input, resid);
            yield return (p, SplicePoints.Acts, acts);
            yield return (p, SplicePoints.Recons, resid);
            yield return (p, SplicePoints.Error, resid);
        }
    }

    /// <inheritdoc/>
    public ISpliceRun Start(HookedTransformer model) => new Run(this, model);

    sealed class Run(TranscoderSplice owner, HookedTransformer model) : ISpliceRun
    {
        readonly Tensor?[] _acts = new Tensor?[owner.Dictionary.NLayers];

        public Tensor? AtHook(string name, Tensor value, FireHook fire) => null;

        public void Dispose()
        {
            foreach (var t in _acts) t?.Dispose();
            Array.Clear(_acts);
        }

        public Tensor? ReplaceMlp(MlpSite site, Func<Tensor> mlp, FireHook fire)
        {
            var d = owner.Dictionary; int l = site.Layer;
            string p = model.HookPoints.Name(HookKind.MlpOut, l);
            var x = fire(SplicePoints.Under(p, SplicePoints.Input), site.Read(owner.input));
            var acts = d.Encode(l, x);
            var skip = d.Skip(l, x);
            Tensor Reconstruct(int upTo, Func<int, Tensor> actsOf)
            {
                var sum = d.DecoderBias(upTo).expand(x.shape[0], x.shape[1], -1);
                for (int i = 0; i <= upTo; i++) if (d.WritesTo(i, upTo)) sum = sum.Add(d.Decode(i, upTo, actsOf(i)));
                return skip is null ? sum : sum.Add(skip);
            }
            _acts[l] = acts;
            var cleanRecon = Reconstruct(l, i => _acts[i]!);
            // Later layers read these activations: they outlive this block's dispose scope until the run ends.
            _acts[l] = fire(SplicePoints.Under(p, SplicePoints.Acts), acts).DetachFromDisposeScope();
            var recon = fire(SplicePoints.Under(p, SplicePoints.Recons), Reconstruct(l, i => _acts[i]!));
            if (owner.error == ErrorTerm.None) return recon.to(site.Input.dtype);
            var err = mlp().to(recon.dtype) - cleanRecon;
            err = fire(SplicePoints.Under(p, SplicePoints.Error), owner.error == ErrorTerm.Detached ? err.detach() : err);
            return recon.Add(err).to(site.Input.dtype);
        }
    }
}
