using Mechanist.Tensors;
using Mechanist.Dictionaries;
using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>Set feature <paramref name="Feature"/> of layer <paramref name="Layer"/> at <paramref name="Position"/> to <paramref name="Value"/>.</summary>
/// <param name="Layer">The feature's layer.</param>
/// <param name="Position">Position.</param>
/// <param name="Feature">Feature index.</param>
/// <param name="Value">The activation to set (0 zeroes it; 2·a doubles it).</param>
public sealed record FeatureIntervention(int Layer, int Position, long Feature, double Value);

/// <summary>How the rest of the network responds to an intervention.</summary>
public enum InterventionMode
{
    /// <summary>Direct effects only (circuit-tracer's constrained_layers = all): patterns, norm scales and MLP outputs stay at their clean values; the skip stays live; the change (value − a)·decoder is added at the feature's output layers.</summary>
    Constrained,
    /// <summary>circuit-tracer's default: attention patterns frozen, norm scales recomputed, every MLP the true MLP on its new input, plus (value − a_now)·decoder at the feature's output layers.</summary>
    Free,
    /// <summary>The replacement model with later layers free: patterns frozen, scales recomputed, every MLP output the reconstruction of features re-encoded from its new input (the intervened ones clamped) plus the clean error.</summary>
    Replacement,
}

/// <summary>What an intervention run gives.</summary>
/// <param name="Logits">Logits [T, vocab].</param>
/// <param name="Activations">Feature activations [L, T, d_dict] of the run (constrained: pre-activations), position 0 zeroed.</param>
public sealed record InterventionResult(Tensor Logits, Tensor Activations) : IDisposable
{
    /// <inheritdoc/>
    public void Dispose() { Logits.Dispose(); Activations.Dispose(); }
}

/// <summary>Feature interventions on the replacement model, in circuit-tracer's three readings.</summary>
public static class Interventions
{
    /// <summary>
    /// A concept swap: zero every feature active in <paramref name="target"/> at <paramref name="targetPosition"/> and set there the
    /// features active in <paramref name="donor"/> at <paramref name="donorPosition"/> to the donor's values (a feature active in
    /// both takes the donor's value). <paramref name="layers"/> limits the layers (default: all).
    /// </summary>
    public static List<FeatureIntervention> Swap(ReplacementModel target, int targetPosition, ReplacementModel donor, int donorPosition, IReadOnlyCollection<int>? layers = null)
    {
        int L = target.Model.Config.NLayers;
        if (donor.Dictionary.DDict != target.Dictionary.DDict || donor.Model.Config.NLayers != L) throw new MechanistException("a swap needs the donor traced with the same model and transcoders");
        if (targetPosition < 1 || targetPosition >= target.Tokens.shape[1]) throw new MechanistException($"target position {targetPosition} is outside 1..{target.Tokens.shape[1] - 1}");
        if (donorPosition < 1 || donorPosition >= donor.Tokens.shape[1]) throw new MechanistException($"donor position {donorPosition} is outside 1..{donor.Tokens.shape[1] - 1}");
        var result = new Dictionary<(int, long), double>();
        for (int l = 0; l < L; l++)
        {
            if (layers is not null && !layers.Contains(l)) continue;
            foreach (var (f, _) in Active(target, l, targetPosition)) result[(l, f)] = 0;
            foreach (var (f, v) in Active(donor, l, donorPosition)) result[(l, f)] = v;
        }
        return result.Select(kv => new FeatureIntervention(kv.Key.Item1, targetPosition, kv.Key.Item2, kv.Value)).ToList();
    }

    /// <summary>
    /// Greedy generation with interventions, with the KV cache: features are set as in <see cref="InterventionMode.Free"/>
    /// (every MLP the true MLP plus (value − a_now)·decoder, at absolute positions), attention is recomputed over the generated
    /// tokens (no clean pattern exists for them). <paramref name="atEveryNewPosition"/> gives interventions repeated at each
    /// generated position (layer, feature, value; its position is ignored). Returns the generated token ids.
    /// </summary>
    public static long[] Generate(ReplacementModel rm, IReadOnlyList<FeatureIntervention> interventions, int maxNewTokens,
        IReadOnlyList<FeatureIntervention>? atEveryNewPosition = null, IReadOnlyCollection<long>? stopTokens = null, bool useKvCache = true)
    {
        var model = rm.Model;
        var prompt = rm.Tokens[0].cpu().data<long>().ToArray();
        int last = Math.Min(model.Config.NCtx, prompt.Length + maxNewTokens);
        var all = interventions.Concat(Enumerable.Range(prompt.Length, Math.Max(0, last - prompt.Length))
            .SelectMany(p => (atEveryNewPosition ?? Array.Empty<FeatureIntervention>()).Select(iv => iv with { Position = p }))).ToList();
        var result = model.Generate(prompt, new GenerateOptions
        {
            MaxNewTokens = Math.Max(0, last - prompt.Length), UseKvCache = useKvCache, Splices = new[] { Splice(rm, all, InterventionMode.Free) },
            StopTokens = (stopTokens ?? Array.Empty<long>()).Select(t => (int)t).ToArray(),
        });
        return result.NewIds;
    }

    /// <summary>The features active at (layer, position) of a traced prompt, with their activations.</summary>
    public static IEnumerable<(long Feature, double Value)> Active(ReplacementModel rm, int layer, int position)
    {
        using var view = rm.Activations[layer, position];
        using var row = view.cpu();
        var values = row.data<float>().ToArray();
        for (long f = 0; f < values.Length; f++) if (values[f] != 0) yield return (f, values[f]);
    }

    /// <summary>Runs the prompt with <paramref name="interventions"/> applied.</summary>
    public static InterventionResult Run(ReplacementModel rm, IReadOnlyList<FeatureIntervention> interventions, InterventionMode mode)
    {
        var model = rm.Model; var d = rm.Dictionary; var reg = model.HookPoints;
        int L = model.Config.NLayers, T = (int)rm.Tokens.shape[1];
        foreach (var iv in interventions)
        {
            if (iv.Layer < 0 || iv.Layer >= L) throw new MechanistException($"layer {iv.Layer} is outside the model's 0..{L - 1}");
            if (iv.Position < 0 || iv.Position >= T) throw new MechanistException($"position {iv.Position} is outside the prompt's 0..{T - 1}");
            if (iv.Feature < 0 || iv.Feature >= d.DDict) throw new MechanistException($"feature {iv.Feature} is outside the transcoders' 0..{d.DDict - 1}");
        }
        using var scope = NewDisposeScope();
        var hooks = new List<ForwardHookSpec>();
        // Attention patterns stay at their clean values in every mode.
        for (int l = 0; l < L; l++)
        {
            var clean = rm.Clean[HookKind.Pattern, l];
            hooks.Add(new ForwardHookSpec(reg.Name(HookKind.Pattern, l), (_, _) => clean));
        }
        if (mode == InterventionMode.Constrained)
            foreach (var p in reg.Points.Where(p => p.Kind is HookKind.Ln1Scale or HookKind.Ln2Scale or HookKind.LnFinalScale or HookKind.Ln1PostScale or HookKind.Ln2PostScale))
            {
                var clean = rm.Clean[p.Name];
                hooks.Add(new ForwardHookSpec(p.Name, (_, _) => clean));
            }
        Tensor?[]? recorded = null;
        var splice = new InterventionSplice(rm, interventions, mode, run => recorded = run);
        var logits = model.Run(rm.Tokens, new RunOptions { FusedAttention = false, Hooks = hooks, Splices = new[] { splice } });
        var acts = stack(recorded!.Select(a => a!).ToArray());
        foreach (var t in recorded!) t?.Dispose();
        acts[.., 0] = 0;
        return new InterventionResult(logits[0].to(ScalarType.Float32).MoveToOuterDisposeScope(), acts.to(ScalarType.Float32).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// A splice applying <paramref name="interventions"/> (at absolute positions) in <paramref name="mode"/>; it holds no state
    /// between runs, so one splice serves any number of runs, KV-cache generation steps included (each continues at its
    /// site's <see cref="MlpSite.Past"/>).
    /// </summary>
    public static ISplice Splice(ReplacementModel rm, IReadOnlyList<FeatureIntervention> interventions, InterventionMode mode) =>
        new InterventionSplice(rm, interventions, mode, null);

    // finished receives each run's feature activations per layer [T, d_dict] (ownership passes) when the run ends; when null they are disposed.
    sealed class InterventionSplice(ReplacementModel rm, IReadOnlyList<FeatureIntervention> interventions, InterventionMode mode, Action<Tensor?[]>? finished) : ISplice
    {
        readonly ReplacementModel rm = rm;
        readonly IReadOnlyList<FeatureIntervention> interventions = interventions;
        readonly InterventionMode mode = mode;
        readonly Action<Tensor?[]>? finished = finished;

        public IEnumerable<(string Parent, string Suffix, HookShape Shape)> AddedPoints(HookRegistry registry) => Array.Empty<(string, string, HookShape)>();

        public ISpliceRun Start(HookedTransformer model) => new Run(this);

        sealed class Run(InterventionSplice owner) : ISpliceRun
        {
            readonly Tensor?[] _acts = new Tensor?[owner.rm.Model.Config.NLayers];
            readonly Tensor?[] _recorded = new Tensor?[owner.rm.Model.Config.NLayers];

            public Tensor? AtHook(string name, Tensor value, FireHook fire) => null;

            public Tensor? ReplaceMlp(MlpSite site, Func<Tensor> mlp, FireHook fire)
            {
                var rm = owner.rm; var d = rm.Dictionary; int l = site.Layer;
                var x = site.Read(rm.Input);
                var reg = rm.Model.HookPoints;
                string outName = reg.Name(HookKind.MlpOut, l);
                int T = (int)x.shape[1], _offset = site.Past;
                Tensor Delta(Func<int, Tensor> current)
                {
                    // Σ over interventions on features of layers i ≤ l that write to l: (value − current) · W_dec(i→l)[f] at their
                    // positions; one gather and one index_add per source layer. current(i) is layer i's activations [T, F].
                    var delta = zeros_like(x);
                    // Positions are absolute; this run covers [_offset, _offset + T).
                    foreach (var group in owner.interventions.Where(iv => iv.Layer <= l && d.WritesTo(iv.Layer, l) && iv.Position >= _offset && iv.Position < _offset + T).GroupBy(iv => iv.Layer))
                    {
                        var ivs = group.ToList();
                        var pos = tensor(ivs.Select(iv => (long)(iv.Position - _offset)).ToArray(), device: x.device);
                        var feat = tensor(ivs.Select(iv => iv.Feature).ToArray(), device: x.device);
                        var now = current(group.Key).to(ScalarType.Float32).to(x.device).index(new TensorIndex[] { TensorIndex.Tensor(pos), TensorIndex.Tensor(feat) });
                        var change = tensor(ivs.Select(iv => (float)iv.Value).ToArray(), device: x.device) - now;
                        var rows = d.DecoderRows(group.Key, l, feat).to(x.dtype);
                        delta[0].IndexAddInPlace(0, pos, rows * change.to(x.dtype).unsqueeze(1));
                    }
                    return delta;
                }
                switch (owner.mode)
                {
                    case InterventionMode.Constrained:
                    {
                        var pre = F(d, l, x, activate: false);
                        _recorded[l]?.Dispose();
                        _recorded[l] = pre[0].DetachFromDisposeScope();
                        var clean = rm.Clean[outName];
                        var skipNow = d.Skip(l, x); var skipClean = d.Skip(l, rm.Clean[SplicePoints.Under(outName, SplicePoints.Input)]);
                        var output = skipNow is null ? clean.clone() : clean.Add(skipNow) - skipClean!;
                        return output.Add(Delta(i => rm.Activations[i]));
                    }
                    case InterventionMode.Free:
                    {
                        var acts = F(d, l, x, activate: true);
                        acts[.., 0] = 0;
                        _acts[l] = acts.DetachFromDisposeScope();
                        _recorded[l]?.Dispose();
                        _recorded[l] = acts[0].DetachFromDisposeScope();
                        return mlp().Add(Delta(i => _acts[i]![0]));
                    }
                    default:
                    {
                        var acts = F(d, l, x, activate: true);
                        acts[.., 0] = 0;
                        foreach (var iv in owner.interventions.Where(iv => iv.Layer == l)) acts[0, iv.Position, iv.Feature] = (float)iv.Value;
                        _acts[l] = acts.DetachFromDisposeScope();
                        _recorded[l]?.Dispose();
                        _recorded[l] = acts[0].DetachFromDisposeScope();
                        var recon = d.DecoderBias(l).expand(x.shape[0], x.shape[1], -1);
                        for (int i = 0; i <= l; i++) if (d.WritesTo(i, l)) recon = recon.Add(d.Decode(i, l, _acts[i]!));
                        if (d.Skip(l, x) is { } skip) recon = recon.Add(skip);
                        // The clean error, with BOS's taken against the BOS-zeroed reconstruction (b_dec + skip) so the clean run is exact.
                        var error = rm.Errors[l].unsqueeze(0).to(recon.dtype).clone();
                        var cleanOut = rm.Clean[outName];
                        var bosRecon = d.DecoderBias(l).Add(d.Skip(l, rm.Clean[SplicePoints.Under(outName, SplicePoints.Input)][.., ..1]) is { } s0 ? s0[0, 0] : zeros_like(d.DecoderBias(l)));
                        error[0, 0] = cleanOut[0, 0] - bosRecon;
                        return recon.Add(error);
                    }
                }
            }

            static Tensor F(ICrossLayerDictionary d, int l, Tensor x, bool activate) => activate ? d.Encode(l, x) : d.PreActivations(l, x);

            public void Dispose()
            {
                foreach (var t in _acts) t?.Dispose();
                if (owner.finished is { } hand) hand(_recorded);
                else foreach (var t in _recorded) t?.Dispose();
            }
        }
    }
}
