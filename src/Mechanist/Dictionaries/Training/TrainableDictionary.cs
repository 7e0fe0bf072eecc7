using Mechanist.Tensors;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Mechanist.Dictionaries.Training;

/// <summary>The activation function and its sparsity mechanism while training.</summary>
public enum TrainActivation
{
    /// <summary>ReLU with an L1 penalty weighted by decoder norms.</summary>
    ReLU,
    /// <summary>The k largest per row (no penalty; an auxiliary loss revives dead features).</summary>
    TopK,
    /// <summary>The k·batch largest over the batch; exported as a JumpReLU with the learned global threshold.</summary>
    BatchTopK,
    /// <summary>JumpReLU with learned thresholds (straight-through estimator), Anthropic's tanh sparsity penalty and pre-activation loss.</summary>
    JumpReLU,
    /// <summary>
    /// Matryoshka BatchTopK (Bussmann et al., 2025): BatchTopK whose nested prefixes of the latents (by default 1/16, 1/8, 1/4, 1/2 and all)
    /// each reconstruct the input, the loss summed over the prefixes; exported as a JumpReLU like BatchTopK.
    /// </summary>
    MatryoshkaBatchTopK,
    /// <summary>
    /// Gated (Rajamanoharan et al., 2024): a gate path (W_gate, b_gate; L1 on ReLU of it, plus an auxiliary reconstruction from it through
    /// a frozen decoder) decides which features fire; a magnitude path sharing its directions (W_gate ⊙ exp(r_mag), b_mag) sets how much.
    /// </summary>
    Gated,
}

/// <summary>
/// The trainable parameters of every dictionary kind, as one module over L layers: encoders W_enc [L, f, d_in],
/// b_enc [L, f]; per-layer decoders W_dec [L, f, d_out] or cross-layer decoders W_dec_i [f, L − i, d_out];
/// b_dec [L, d_out]; optional skips [L, d_out, d_in]; JumpReLU log-thresholds [L, f]. Works in normalised
/// units (inputs scaled to mean norm √d_in, targets to √d_out); <see cref="Export"/> folds the scales back.
/// </summary>
public sealed class TrainableDictionary : IDisposable
{
    readonly List<Tensor> _parameters = new();
    TopKWorkspace? _topK;

    /// <summary>Creates the parameters (seeded) with b_dec at the targets' mean.</summary>
    public TrainableDictionary(DictionaryKind kind, TrainActivation activation, int layers, int dIn, int dOut, int features, int k, Tensor targetMean, long seed)
    {
        Kind = kind; Activation = activation; Layers = layers; DIn = dIn; DOut = dOut; Features = features; K = k;
        using var scope = NewDisposeScope();
        using var g = new Generator((ulong)seed);
        Tensor P(Tensor t) { var p = t.detach().requires_grad_(true).DetachFromDisposeScope(); _parameters.Add(p); return p; }
        var enc = randn(new long[] { layers, features, dIn }, generator: g);
        enc = enc / enc.norm(-1, true);
        double decScale = 1.0 / Math.Sqrt(features);
        if (kind == DictionaryKind.Clt)
            WDecCross = Enumerable.Range(0, layers).Select(i => P(randn(new long[] { features, layers - i, dOut }, generator: g).Mul(decScale / Math.Sqrt(layers - i)))).ToArray();
        // An SAE starts tied: each feature reads along the unit direction it writes (Gao et al. 2024).
        else WDec = P(kind == DictionaryKind.Sae ? enc.clone() : randn(new long[] { layers, features, dOut }, generator: g).Mul(decScale));
        WEnc = P(enc);
        BEnc = P(zeros(layers, features));
        BDec = P(targetMean.to(ScalarType.Float32).clone());
        if (kind == DictionaryKind.SkipTranscoder) WSkip = P(zeros(layers, dOut, dIn));
        if (activation == TrainActivation.Gated) { RMag = P(zeros(layers, features)); BMag = P(zeros(layers, features)); }
        if (activation == TrainActivation.JumpReLU) LogThreshold = P(SafeOps.Full(new long[] { layers, features }, Math.Log(0.5)));
        if (activation is TrainActivation.BatchTopK or TrainActivation.MatryoshkaBatchTopK) BatchThreshold = zeros(layers).DetachFromDisposeScope();
    }

#pragma warning disable CS1591 // parameter names follow the papers
    public DictionaryKind Kind { get; }
    public TrainActivation Activation { get; }
    public int Layers { get; }
    public int DIn { get; }
    public int DOut { get; }
    public int Features { get; }
    public int K { get; }
    public Tensor WEnc { get; }
    public Tensor BEnc { get; }
    public Tensor? WDec { get; }
    public Tensor[]? WDecCross { get; }
    public Tensor BDec { get; }
    public Tensor? WSkip { get; }
    public Tensor? LogThreshold { get; }
    public Tensor? RMag { get; }
    public Tensor? BMag { get; }
#pragma warning restore CS1591

    /// <summary>For BatchTopK: a running estimate per layer of the smallest activation kept (the inference threshold).</summary>
    public Tensor? BatchThreshold { get; }

    /// <summary>Every trained tensor, in a fixed order (for the optimizer and checkpoints).</summary>
    public IReadOnlyList<Tensor> Parameters => _parameters;

    /// <summary>JumpReLU straight-through bandwidth (normalised units).</summary>
    public double Bandwidth { get; init; } = 0.1;

    /// <summary>Norm of each feature's decoder, concatenated over the layers it writes: [L, f].</summary>
    public Tensor DecoderNorms() => Kind == DictionaryKind.Clt
        ? stack(WDecCross!.Select(w => w.Square().sum(new long[] { 1, 2 }).sqrt()).ToArray(), 0)
        : WDec!.Square().sum(-1).sqrt();

    /// <summary>Pre-activations [B, L, f] of inputs [B, L, d_in].</summary>
    public Tensor PreActivations(Tensor x) => einsum("bld,lfd->blf", x, WEnc).Add(BEnc);

    /// <summary>
    /// TopK training's encode, top-k and decode as one node with its backward written out (<see cref="TopKCodeFunction"/>): the
    /// reconstruction [B, L, d_out] (skip included) and the pre-activations [B, L, f] (a view, for the auxiliary loss).
    /// </summary>
    public (Tensor Recon, Tensor Pre) TopKCode(Tensor x)
    {
        if (Activation != TrainActivation.TopK) throw new InvalidOperationException("TopKCode is TopK training's step");
        _topK ??= new TopKWorkspace(K);
        var (recon, pre) = Kind == DictionaryKind.Clt
            ? TopKCodeFunction.Apply(_topK, x, WEnc, BEnc, BDec, WDecCross!)
            : TopKCodeFunction.Apply(_topK, x, WEnc, BEnc, BDec, WDec!);
        if (WSkip is not null) recon = recon.Add(einsum("bli,loi->blo", x, WSkip));
        return (recon, pre.permute(1, 0, 2));
    }

    /// <summary>After <see cref="TopKCode"/>: which features fired in the batch [L, f] (bool) and how many activations were positive.</summary>
    public (Tensor Fired, Tensor Active) TopKActivity()
    {
        var idx = _topK?.LastIndices ?? throw new InvalidOperationException("no TopK step has run");
        var positive = _topK.LastValues!.Gt(0);
        var counts = zeros(Layers, Features).scatter_add_(1, idx.view(Layers, -1), positive.to(ScalarType.Float32).view(Layers, -1));
        return (counts.Gt(0), positive.sum());
    }

    /// <summary>A gated dictionary's activations [B, L, f] and its gate's pre-activations (W_enc and b_enc are the gate here).</summary>
    public (Tensor Acts, Tensor GatePre) GatedActivations(Tensor x)
    {
        var gatePre = PreActivations(x);
        var magPre = einsum("bld,lfd->blf", x, WEnc.mul(RMag!.exp().unsqueeze(-1))).Add(BMag!);
        return (F.relu(magPre).mul(gatePre.Gt(0).to(magPre.dtype)), gatePre);
    }

    /// <summary>Activations from pre-activations, with the training-time sparsity mechanism.</summary>
    public Tensor Activate(Tensor pre, bool training)
    {
        switch (Activation)
        {
            case TrainActivation.ReLU: return F.relu(pre);
            case TrainActivation.JumpReLU: return JumpReluFunction.Apply(pre, LogThreshold!.exp(), Bandwidth);
            case TrainActivation.TopK: return DictionaryActivations.Apply(DictionaryActivation.TopK, pre, k: K);
            default:
                if (!training) return pre * (pre > BatchThreshold!.view(1, -1, 1)).to(pre.dtype);
                // BatchTopK: per layer, keep the K·B largest positive pre-activations of the whole batch.
                long b = pre.shape[0];
                var perLayer = F.relu(pre).permute(1, 0, 2).reshape(Layers, -1);             // [L, B·f]
                var (values, indices) = perLayer.topk((int)Math.Min(K * b, perLayer.shape[1]), dim: -1);
                var kept = zeros_like(perLayer).scatter(-1, indices, values);
                using (no_grad())
                {
                    var smallest = where(values.Gt(0), values, SafeOps.FullLike(values, double.PositiveInfinity)).min(-1).values;
                    var valid = isfinite(smallest);
                    BatchThreshold!.copy_(where(valid, BatchThreshold.Mul(0.99).Add(smallest.nan_to_num(0, 0, 0).Mul(0.01)), BatchThreshold));
                }
                return kept.reshape(Layers, b, Features).permute(1, 0, 2);
        }
    }

    /// <summary>Reconstructions [B, L, d_out] from activations [B, L, f] and inputs (for the skip path).</summary>
    public Tensor Decode(Tensor acts, Tensor x)
    {
        Tensor recon;
        if (Kind == DictionaryKind.Clt)
        {
            // One GEMM per source layer over every layer it writes ([B, f] · [f, (L − i)·d]), accumulated by the GEMM itself into the
            // columns of layers i.. of [B, L·d] (which start as b_dec). unbind, not select, so the backward stacks the per-layer
            // gradients once instead of zero-filling [B, L, f] per layer.
            var perLayer = acts.unbind(1);
            long b = acts.shape[0];
            var sum = BDec.view(1, -1).expand(b, -1).clone();
            for (int i = 0; i < Layers; i++)
                sum.narrow(1, (long)i * DOut, (long)(Layers - i) * DOut).addmm_(perLayer[i], WDecCross![i].view(Features, -1));
            recon = sum.view(b, Layers, DOut);
        }
        else recon = einsum("blf,lfd->bld", acts, WDec!).Add(BDec);
        if (WSkip is not null) recon = recon.Add(einsum("bli,loi->blo", x, WSkip));
        return recon;
    }

    /// <summary>
    /// Matryoshka: the reconstructions [B, L, d_out] from the first <paramref name="widths"/>[i] latents of each layer (ascending, the last
    /// being all of them), as running sums of each group's decoder product: one decode's work in all.
    /// </summary>
    public Tensor[] PrefixDecodes(Tensor acts, Tensor x, IReadOnlyList<int> widths)
    {
        if (WDec is null) throw new MechanistException("Matryoshka prefixes need per-layer decoders (an SAE or transcoders, not a CLT)");
        var outputs = new Tensor[widths.Count];
        var running = BDec.unsqueeze(0).expand(acts.shape[0], -1, -1);
        if (WSkip is not null) running = running.Add(einsum("bli,loi->blo", x, WSkip));
        int start = 0;
        for (int i = 0; i < widths.Count; i++)
        {
            int width = widths[i] - start;
            running = running.Add(einsum("blf,lfd->bld", acts.narrow(2, start, width), WDec.narrow(1, start, width)));
            outputs[i] = running;
            start = widths[i];
        }
        return outputs;
    }

    /// <summary>
    /// The trained dictionary in raw units: inputs were multiplied by <paramref name="inScale"/>[l] and targets by
    /// <paramref name="outScale"/>[l] while training, so W_enc·s_in, W_dec / s_out, b_dec / s_out, W_skip·s_in / s_out.
    /// Returns a <see cref="CrossLayerTranscoder"/>, or a <see cref="TranscoderSet"/> (of one layer for an SAE).
    /// </summary>
    public ICrossLayerDictionary Export(double[] inScale, double[] outScale)
    {
        using var noGrad = no_grad();
        var (act, thresholds, k) = Activation switch
        {
            TrainActivation.ReLU => (DictionaryActivation.ReLU, (Tensor?[]?)null, 0),
            TrainActivation.Gated => (DictionaryActivation.Gated, null, 0),
            TrainActivation.TopK => (DictionaryActivation.TopK, null, K),
            TrainActivation.JumpReLU => (DictionaryActivation.JumpReLU, Enumerable.Range(0, Layers).Select(l => (Tensor?)LogThreshold![l].exp().clone()).ToArray(), 0),
            _ /* BatchTopK, Matryoshka */ => (DictionaryActivation.JumpReLU, Enumerable.Range(0, Layers).Select(l => (Tensor?)SafeOps.Full(new long[] { Features }, BatchThreshold![l].item<float>())).ToArray(), 0),
        };
        Tensor Enc(int l) => WEnc[l].Mul(inScale[l]).contiguous();
        Tensor Bdec(int l) => BDec[l].Div(outScale[l]).contiguous();
        if (Kind == DictionaryKind.Clt)
            return new CrossLayerTranscoder(Enumerable.Range(0, Layers).Select(Enc).ToArray(), Enumerable.Range(0, Layers).Select(l => BEnc[l].clone()).ToArray(),
                Enumerable.Range(0, Layers).Select(i => (WDecCross![i] / tensor(outScale[i..]).view(1, -1, 1)).to(ScalarType.Float32).contiguous()).ToArray(),
                Enumerable.Range(0, Layers).Select(Bdec).ToArray(), act, thresholds, k);
        if (Activation == TrainActivation.Gated)
            return new TranscoderSet(Enumerable.Range(0, Layers).Select(l => Transcoder.Gated(Enc(l), BEnc[l].clone(), RMag![l].clone(), BMag![l].clone(),
                WDec![l].Div(outScale[l]).contiguous(), Bdec(l), Kind)).ToList());
        var layers = Enumerable.Range(0, Layers).Select(l => new Transcoder(Enc(l), BEnc[l].clone(), WDec![l].Div(outScale[l]).contiguous(), Bdec(l), act,
            thresholds?[l], k, WSkip is null ? null : WSkip[l].Mul(inScale[l] / outScale[l]).contiguous(), Kind)).ToList();
        return new TranscoderSet(layers);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var p in _parameters) p.Dispose();
        BatchThreshold?.Dispose();
        _topK?.Dispose();
    }
}
