using Mechanist.Tensors;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Mechanist.Dictionaries;

/// <summary>How pre-activations become feature activations.</summary>
public enum DictionaryActivation
{
    /// <summary>max(0, x).</summary>
    ReLU,
    /// <summary>x where x &gt; threshold (strictly), else 0, with a learned per-feature threshold.</summary>
    JumpReLU,
    /// <summary>ReLU of the k largest pre-activations per row; the rest 0.</summary>
    TopK,
    /// <summary>
    /// Gated (Rajamanoharan et al., 2024): a feature is on where its gate x·W_gateᵀ + b_gate is positive, and then its activation is
    /// ReLU of the magnitude path x·(W_gate ⊙ exp(r_mag))ᵀ + b_mag (the pre-activation of a gated dictionary).
    /// </summary>
    Gated,
}

/// <summary>A gated dictionary's gate: W_gate [d_dict, d_in], b_gate [d_dict] and the magnitude path's per-feature log-scale r_mag [d_dict].</summary>
/// <param name="WGate">Gate encoder.</param>
/// <param name="BGate">Gate bias.</param>
/// <param name="RMag">log of each feature's magnitude-encoder scale: W_mag = W_gate ⊙ exp(r_mag).</param>
public sealed record GatedEncoder(Tensor WGate, Tensor BGate, Tensor RMag);

/// <summary>Activation functions shared by every dictionary kind.</summary>
public static class DictionaryActivations
{
    /// <summary>Applies <paramref name="kind"/> to pre-activations [..., d_dict].</summary>
    public static Tensor Apply(DictionaryActivation kind, Tensor pre, Tensor? threshold = null, int k = 0) => kind switch
    {
        DictionaryActivation.ReLU => F.relu(pre),
        DictionaryActivation.JumpReLU => pre * (pre > (threshold ?? throw new MechanistException("a JumpReLU needs thresholds"))).to(pre.dtype),
        DictionaryActivation.TopK => TopK(pre, k),
        DictionaryActivation.Gated => throw new MechanistException("a gated dictionary's activation needs its gate: encode through the dictionary"),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    static Tensor TopK(Tensor pre, int k)
    {
        if (k <= 0 || k > pre.shape[^1]) throw new MechanistException($"TopK needs 0 < k ≤ {pre.shape[^1]} (got {k})");
        var indices = TopKSelect.Indices(pre, k);
        return zeros_like(pre).scatter(-1, indices, F.relu(pre.gather(-1, indices)));
    }
}

/// <summary>
/// A single-layer dictionary in circuit-tracer's layout: W_enc [d_dict, d_in] applied as x·W_encᵀ + b_enc,
/// W_dec [d_dict, d_out], b_dec [d_out], an optional JumpReLU threshold [d_dict], an optional skip
/// W_skip [d_out, d_in] applied as x·W_skipᵀ. An SAE is the case d_in = d_out without a skip. A gated dictionary's W_enc and b_enc
/// are its magnitude path (W_gate ⊙ exp(r_mag), b_mag) and <see cref="Gate"/> holds the gate. The dictionary owns its tensors.
/// </summary>
public sealed class Transcoder : ISparseDictionary
{
    /// <summary>Builds a dictionary from its tensors (ownership passes to it).</summary>
    public Transcoder(Tensor wEnc, Tensor bEnc, Tensor wDec, Tensor bDec, DictionaryActivation activation = DictionaryActivation.ReLU,
        Tensor? threshold = null, int topK = 0, Tensor? wSkip = null, DictionaryKind? kind = null, GatedEncoder? gate = null)
    {
        if (activation == DictionaryActivation.Gated != gate is not null) throw new MechanistException("a gated dictionary (and only one) has a gate");
        if (gate is not null && (!gate.WGate.shape.SequenceEqual(wEnc.shape) || gate.BGate.numel() != wEnc.shape[0] || gate.RMag.numel() != wEnc.shape[0]))
            throw new MechanistException($"a gate must be W_gate [{string.Join(", ", wEnc.shape)}], b_gate and r_mag [{wEnc.shape[0]}]");
        if (wEnc.dim() != 2 || wDec.dim() != 2 || wEnc.shape[0] != wDec.shape[0])
            throw new MechanistException($"W_enc [{string.Join(", ", wEnc.shape)}] and W_dec [{string.Join(", ", wDec.shape)}] must be [d_dict, d_in] and [d_dict, d_out]");
        if (bEnc.shape.SequenceEqual(new[] { wEnc.shape[0] }) is false) throw new MechanistException($"b_enc must be [{wEnc.shape[0]}]");
        if (bDec.shape.SequenceEqual(new[] { wDec.shape[1] }) is false) throw new MechanistException($"b_dec must be [{wDec.shape[1]}]");
        if (activation == DictionaryActivation.JumpReLU && (threshold is null || threshold.numel() != wEnc.shape[0]))
            throw new MechanistException($"a JumpReLU needs a threshold of {wEnc.shape[0]} values");
        if (wSkip is not null && !wSkip.shape.SequenceEqual(new[] { wDec.shape[1], wEnc.shape[1] }))
            throw new MechanistException($"W_skip must be [{wDec.shape[1]}, {wEnc.shape[1]}]");
        if (kind == DictionaryKind.Clt) throw new MechanistException("a single-layer transcoder is not a CLT");
        if (kind == DictionaryKind.Sae && (wEnc.shape[1] != wDec.shape[1] || wSkip is not null)) throw new MechanistException("an SAE writes what it reads (d_in = d_out, no skip)");
        WEnc = wEnc; BEnc = bEnc; WDec = wDec; BDec = bDec; Activation = activation; Threshold = threshold; TopK = topK; WSkip = wSkip; Gate = gate;
        Kind = kind ?? (wSkip is null ? DictionaryKind.Transcoder : DictionaryKind.SkipTranscoder);
    }

    /// <summary>A gated dictionary from its gate and magnitude parameters (ownership passes to it): W_enc = W_gate ⊙ exp(r_mag), b_enc = b_mag.</summary>
    public static Transcoder Gated(Tensor wGate, Tensor bGate, Tensor rMag, Tensor bMag, Tensor wDec, Tensor bDec, DictionaryKind? kind = null)
    {
        using var scope = NewDisposeScope();
        var magnitude = wGate.mul(rMag.exp().unsqueeze(1)).contiguous().MoveToOuterDisposeScope();
        return new Transcoder(magnitude, bMag, wDec, bDec, DictionaryActivation.Gated, kind: kind, gate: new GatedEncoder(wGate, bGate, rMag));
    }

    /// <inheritdoc/>
    public DictionaryKind Kind { get; }

    /// <summary>A gated dictionary's gate, or null.</summary>
    public GatedEncoder? Gate { get; }

    /// <summary>Encoder [d_dict, d_in].</summary>
    public Tensor WEnc { get; }
    /// <summary>Encoder bias [d_dict].</summary>
    public Tensor BEnc { get; }
    /// <summary>Decoder [d_dict, d_out].</summary>
    public Tensor WDec { get; }
    /// <summary>Decoder bias [d_out].</summary>
    public Tensor BDec { get; }
    /// <inheritdoc/>
    public DictionaryActivation Activation { get; }
    /// <summary>JumpReLU thresholds [d_dict], or null.</summary>
    public Tensor? Threshold { get; }
    /// <inheritdoc/>
    public int TopK { get; }
    /// <summary>Skip [d_out, d_in], or null.</summary>
    public Tensor? WSkip { get; }

    /// <inheritdoc/>
    public int DIn => (int)WEnc.shape[1];
    /// <inheritdoc/>
    public int DOut => (int)WDec.shape[1];
    /// <inheritdoc/>
    public int DDict => (int)WEnc.shape[0];

    /// <inheritdoc/>
    public Tensor PreActivations(Tensor x) => F.linear(x.to(WEnc.dtype), WEnc, BEnc);

    /// <inheritdoc/>
    public Tensor Encode(Tensor x)
    {
        if (Gate is not { } g) return DictionaryActivations.Apply(Activation, PreActivations(x), Threshold, TopK);
        using var scope = NewDisposeScope();
        var open = F.linear(x.to(g.WGate.dtype), g.WGate, g.BGate).Gt(0);
        return F.relu(PreActivations(x)).mul(open.to(WEnc.dtype)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public Tensor Decode(Tensor activations) => matmul(activations, WDec).Add(BDec);

    /// <inheritdoc/>
    public Tensor DecodeWithoutBias(Tensor activations) => matmul(activations, WDec);

    /// <inheritdoc/>
    public Tensor DecoderBias => BDec;

    /// <inheritdoc/>
    public Tensor? Skip(Tensor x) => WSkip is null ? null : F.linear(x.to(WSkip.dtype), WSkip);

    /// <summary>The full output: Decode(Encode(x)) plus the skip term.</summary>
    public Tensor Forward(Tensor x)
    {
        var recon = Decode(Encode(x));
        return Skip(x) is { } s ? recon.Add(s) : recon;
    }

    /// <inheritdoc/>
    public SparseActivations EncodeSparse(Tensor x) => Sparse.Of(Encode(x).reshape(-1, DDict));

    /// <inheritdoc/>
    public Tensor EncoderRows(Tensor features) => WEnc.index_select(0, features.to(ScalarType.Int64, WEnc.device));

    /// <inheritdoc/>
    public Tensor DecoderRows(Tensor features) => WDec.index_select(0, features.to(ScalarType.Int64, WDec.device));

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in new[] { WEnc, BEnc, WDec, BDec, Threshold, WSkip, Gate?.WGate, Gate?.BGate, Gate?.RMag }) t?.Dispose();
    }
}

/// <summary>Helpers for sparse activations.</summary>
public static class Sparse
{
    /// <summary>The nonzeros of a [rows, d_dict] activation matrix.</summary>
    public static SparseActivations Of(Tensor acts)
    {
        using var scope = NewDisposeScope();
        var nz = acts.nonzero(); // [nnz, 2]
        var rows = nz[.., 0].contiguous(); var features = nz[.., 1].contiguous();
        var values = acts.flatten().index_select(0, rows.Mul(acts.shape[1]).Add(features));
        return new SparseActivations(rows.MoveToOuterDisposeScope(), features.MoveToOuterDisposeScope(), values.MoveToOuterDisposeScope());
    }
}
