using Mechanist.Tensors;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Mechanist.Dictionaries.Training;

/// <summary>
/// Encode, per-row top-k and decode of a TopK dictionary while training, with its backward written out (one autograd node):
/// pre = x·W_encᵀ + b_enc; the k largest of each row kept (ReLU'd); recon = acts·W_dec + b_dec, each source layer's decoder one
/// product over every layer it writes to. Autograd over the same expression pays for what this does not: the dense activations are
/// zero-filled and scattered per step and their gradients copied per layer and per op. Here the activations are never dense: the
/// decoder's forward and its weight gradient are sparse × dense products over the k kept entries per row; the pre-activation gradient
/// lives in a buffer that stays zero except at those entries (reset by index); the encoder's bias gradient is summed from them; and the
/// input (data) gets no gradient. Dense products remain where every entry counts: the activations' gradient (read at the kept entries),
/// the encoder's forward and its weight gradient. Outputs: the reconstruction [B, L, d_out] (no skip) and the pre-activations
/// [L, B, f] (for an auxiliary loss; when nothing reads them they cost no backward pass).
/// </summary>
public sealed class TopKCodeFunction : autograd.MultiTensorFunction<TopKCodeFunction>
{
    /// <inheritdoc/>
    public override string Name => "MechanistTopKCode";

    /// <summary>
    /// Runs it with per-layer decoders <paramref name="wDec"/> [L, f, d_out] (an SAE's, a transcoder's). Returns (reconstruction
    /// [B, L, d_out] with b_dec, pre-activations [L, B, f]).
    /// </summary>
    public static (Tensor Recon, Tensor Pre) Apply(TopKWorkspace workspace, Tensor x, Tensor wEnc, Tensor bEnc, Tensor bDec, Tensor wDec)
        => Run(workspace, x, wEnc, bEnc, bDec, true, new[] { wDec });

    /// <summary>
    /// Runs it with a CLT's decoders: per source layer i, W_dec_i [f, L − i, d_out] writing to layers i..L−1. Returns (reconstruction
    /// [B, L, d_out] with b_dec, pre-activations [L, B, f]).
    /// </summary>
    public static (Tensor Recon, Tensor Pre) Apply(TopKWorkspace workspace, Tensor x, Tensor wEnc, Tensor bEnc, Tensor bDec, IReadOnlyList<Tensor> crossDecoders)
        => Run(workspace, x, wEnc, bEnc, bDec, false, crossDecoders);

    static (Tensor, Tensor) Run(TopKWorkspace workspace, Tensor x, Tensor wEnc, Tensor bEnc, Tensor bDec, bool perLayer, IReadOnlyList<Tensor> decoders)
    {
        var vars = new object[6 + decoders.Count];
        vars[0] = workspace; vars[1] = x; vars[2] = wEnc; vars[3] = bEnc; vars[4] = bDec; vars[5] = perLayer;
        for (int i = 0; i < decoders.Count; i++) vars[6 + i] = decoders[i];
        var outputs = apply(vars);
        return (outputs[0], outputs[1]);
    }

    /// <inheritdoc/>
    public override List<Tensor> forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var ws = (TopKWorkspace)vars[0];
        Tensor x = (Tensor)vars[1], wEnc = (Tensor)vars[2], bEnc = (Tensor)vars[3], bDec = (Tensor)vars[4];
        bool perLayer = (bool)vars[5];
        var decoders = vars.Skip(6).Cast<Tensor>().ToArray();
        int layers = (int)wEnc.shape[0], f = (int)wEnc.shape[1];
        long b = x.shape[0], dOut = bDec.shape[1];
        var sources = Sources(perLayer, decoders, layers);

        var xt = x.transpose(0, 1).contiguous();                                                 // [L, B, d_in]
        // Each layer's selection right after its product, while its pre-activations are still in cache.
        var pre = bEnc.unsqueeze(1).expand(layers, b, f).contiguous();                           // [L, B, f]
        var selected = new Tensor[layers];
        for (int l = 0; l < layers; l++) selected[l] = TopKSelect.Indices(pre[l].addmm_(xt[l], wEnc[l].t(), 1, 1), ws.K);
        var idx = stack(selected);                                                                // [L, B, k]
        var vals = F.relu(pre.gather(2, idx));
        ws.Prepare(layers, b, f);

        // The decoder products read only the k kept entries of each row (sparse × dense: 1/64 of the dense product's work at
        // top-16 of 1,024, and the decoder stays in cache), as does the decoders' gradient in the backward.
        var rows = RowsOf(b, ws.K);
        var recon = bDec.reshape(1, -1).expand(b, -1).contiguous();                              // [B, L·d_out]
        for (int i = 0; i < layers; i++)
            recon.narrow(1, i * dOut, sources[i].shape[1]).addmm_(Codes(rows, idx[i], vals[i], b, f, transposed: false), sources[i], 1, 1);
        ws.LastIndices = idx; ws.LastValues = vals;
        ctx.save_for_backward(new List<Tensor> { xt, idx, vals });
        ctx.save_data("workspace", ws);
        ctx.save_data("decoders", decoders);
        ctx.save_data("perLayer", perLayer);
        ctx.save_data("features", f);
        ctx.set_materialize_grads(false);
        return new List<Tensor> { recon.view(b, layers, dOut), pre };
    }

    /// <inheritdoc/>
    public override List<Tensor> backward(autograd.AutogradContext ctx, List<Tensor> grads)
    {
        var saved = ctx.get_saved_variables();
        Tensor xt = saved[0], idx = saved[1], vals = saved[2];
        var ws = (TopKWorkspace)ctx.get_data("workspace");
        var decoders = (Tensor[])ctx.get_data("decoders");
        bool perLayer = (bool)ctx.get_data("perLayer");
        int layers = (int)xt.shape[0], f = (int)ctx.get_data("features");
        long b = xt.shape[1];
        bool hasRecon = Defined(grads[0]), hasPre = grads.Count > 1 && Defined(grads[1]);
        long dOut = hasRecon ? grads[0].shape[2] : 0;

        var result = new List<Tensor> { null!, null!, null!, null!, null!, null! };
        var gActs = hasRecon ? empty(layers, b, f) : zeros(layers, b, f);
        if (hasRecon)
        {
            var g = grads[0].reshape(b, -1).contiguous();                                      // [B, L·d_out]
            var sources = Sources(perLayer, decoders, layers);
            var gDecoders = decoders.Select(d => empty(d.shape)).ToArray();
            var gSources = Sources(perLayer, gDecoders, layers);
            var rows = RowsOf(b, (int)idx.shape[2]);
            for (int i = 0; i < layers; i++)
            {
                var gi = g.narrow(1, i * dOut, sources[i].shape[1]);
                gSources[i].addmm_(Codes(rows, idx[i], vals[i], b, f, transposed: true), gi, 0, 1);
                gActs[i].addmm_(gi, sources[i].t(), 0, 1);
            }
            result.AddRange(gDecoders);
            result[4] = g.sum(new long[] { 0 }).view(layers, dOut);
        }
        else result.AddRange(decoders.Select(_ => (Tensor)null!));

        // The activations' gradient reaches the pre-activations only at the kept entries with a positive value (ReLU's gradient).
        var gv = gActs.gather(2, idx).mul(vals.Gt(0).to(vals.dtype));
        var gPre = ws.PreGradient!;
        gPre.scatter_(2, idx, gv);
        var gBEnc = zeros(layers, f).scatter_add_(1, idx.view(layers, -1), gv.view(layers, -1));
        if (hasPre)
        {
            gPre.AddInPlace(grads[1]);
            gBEnc.AddInPlace(grads[1].sum(new long[] { 1 }));
        }
        result[2] = bmm(gPre.transpose(1, 2), xt);                                              // [L, f, d_in]
        result[3] = gBEnc;
        ws.Reset(idx, densePreGradient: hasPre);
        return result;
    }

    static bool Defined(Tensor? t) => t is not null && !t.IsInvalid;

    /// <summary>The row of each kept entry, row-major: [B·k].</summary>
    static Tensor RowsOf(long b, int k) => SafeOps.Arange(b).unsqueeze(1).expand(b, k).reshape(-1);

    /// <summary>A layer's codes as a sparse [B, f] matrix (its transpose [f, B] when <paramref name="transposed"/>), from its kept entries.</summary>
    static Tensor Codes(Tensor rows, Tensor idx, Tensor vals, long b, int f, bool transposed)
    {
        var features = idx.reshape(-1);
        return transposed
            ? sparse_coo_tensor(stack(new[] { features, rows }), vals.reshape(-1), new[] { (long)f, b })
            : sparse_coo_tensor(stack(new[] { rows, features }), vals.reshape(-1), new[] { b, (long)f });
    }

    /// <summary>Each source layer's decoder as one matrix [f, n·d_out] over the layers it writes to (views).</summary>
    static Tensor[] Sources(bool perLayer, Tensor[] decoders, int layers) => perLayer
        ? Enumerable.Range(0, layers).Select(l => decoders[0][l]).ToArray()
        : decoders.Select(d => d.view(d.shape[0], -1)).ToArray();
}

/// <summary>
/// What <see cref="TopKCodeFunction"/> keeps between steps: the dense activations and their pre-activation gradient, each zero except
/// at the entries the last step wrote (reset by index, not refilled), and the last step's kept indices and values (for the trainer's
/// statistics: which features fired, L0).
/// </summary>
public sealed class TopKWorkspace(int k) : IDisposable
{
    /// <summary>Kept entries per row.</summary>
    public int K { get; } = k;

    /// <summary>The last forward's kept indices [L, B, k] (valid while that step's tensors are).</summary>
    public Tensor? LastIndices { get; internal set; }

    /// <summary>The last forward's kept values [L, B, k] (ReLU'd: a zero did not fire).</summary>
    public Tensor? LastValues { get; internal set; }

    internal Tensor? PreGradient { get; private set; }

    /// <summary>Readies the pre-activation gradient buffer (zero between steps) for a forward of this shape.</summary>
    internal void Prepare(int layers, long b, int f)
    {
        if (PreGradient is not null && PreGradient.shape.SequenceEqual(new[] { layers, b, f })) return;
        Dispose();
        using var scope = NewDisposeScope();
        PreGradient = zeros(layers, b, f).DetachFromDisposeScope();
    }

    /// <summary>Zeroes the pre-activation gradient where <paramref name="idx"/> wrote (all of it when a dense one was added).</summary>
    internal void Reset(Tensor idx, bool densePreGradient)
    {
        using var scope = NewDisposeScope();
        if (densePreGradient) PreGradient!.zero_(); else PreGradient!.scatter_(2, idx, zeros(idx.shape));
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        PreGradient?.Dispose();
        PreGradient = null;
    }
}
