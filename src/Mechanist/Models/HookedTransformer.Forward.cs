using Mechanist.Tensors;
using Mechanist.Hooks;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Mechanist.Models;

public sealed partial class HookedTransformer
{
    /// <summary>What one forward pass carries besides tensors: hooks and cache.</summary>
    sealed class ForwardState(List<ForwardHookSpec> forward, IReadOnlyList<BackwardHookSpec> backward, ActivationCache? cache, bool keepGraph)
    {
        public readonly List<ForwardHookSpec> Forward = forward;
        public readonly IReadOnlyList<BackwardHookSpec> Backward = backward;
        public readonly ActivationCache? Cache = cache;
        public readonly bool KeepGraph = keepGraph;
        public Func<string, bool> CacheFilter = _ => true;
        public IReadOnlyList<ISpliceRun> Splices = Array.Empty<ISpliceRun>();
        public readonly Dictionary<string, Tensor> GradSources = new();
        /// <summary>ALiBi's bias [batch, heads, 1, keys] for this run, when the model uses it.</summary>
        public Tensor? Alibi;
        /// <summary>Positions already in the KV cache before this run's first.</summary>
        public int Past;
        /// <summary>The current block's weights widened to the compute dtype (when the weights are kept narrower), and its layer.</summary>
        public BlockWeights? Widened;
        public int WidenedLayer = -1;
        /// <summary>Whether this run's products use the narrower weights as they are (few positions: see <see cref="NarrowProductRows"/>).</summary>
        public bool NarrowProducts;
        /// <summary>
        /// Where a narrow matrix is widened for its product in a run without gradients: one buffer of the largest matrix's size for
        /// the whole run, so widening touches no fresh pages (with gradients each widened matrix is its own tensor: autograd keeps it).
        /// </summary>
        public Tensor? WideBuffer;
    }

    /// <summary>
    /// Runs of at most this many positions (batch × new positions) multiply narrow-stored weights in their own dtype instead of
    /// widening them: a decoding step reads every weight once for a product of a few rows, so widening would triple its memory traffic.
    /// </summary>
    const long NarrowProductRows = 16;

    /// <summary>
    /// x · Wᵀ + b. A weight kept narrower than x is widened just for this product and freed right after it (so at most one widened
    /// matrix exists at a time), or, in a run of few positions (<see cref="ForwardState.NarrowProducts"/>), the product runs in the
    /// weight's dtype.
    /// </summary>
    static Tensor Linear(ForwardState s, Tensor x, Tensor w, Tensor? b = null)
    {
        if (w.dtype == x.dtype) return F.linear(x, w, b);
        if (s.NarrowProducts) return F.linear(x.to(w.dtype), w, b?.to(w.dtype)).to(x.dtype);
        if (s.WideBuffer is { } buffer && buffer.numel() >= w.numel() && !is_grad_enabled())
        {
            using var into = buffer.narrow(0, 0, w.numel()).view(w.shape);
            into.copy_(w);
            return F.linear(x, into, b?.to(x.dtype));
        }
        using var wide = w.to(x.dtype);
        return F.linear(x, wide, b?.to(x.dtype));
    }

    /// <summary>Layer <paramref name="l"/>'s weights as the forward computes with them.</summary>
    BlockWeights BlockFor(ForwardState s, int l) => s.WidenedLayer == l ? s.Widened! : Weights.Blocks[l];

    Tensor? ComputedOrNull(Tensor? weight) => weight is null ? null : Computed(weight);

    /// <summary>
    /// x · W_Uᵀ + b_U. Weights kept narrower than the compute dtype are widened a slice of the vocabulary at a time (at most 16M
    /// values each), so the widened unembedding never exists whole; with <paramref name="narrowProducts"/> (a run of few positions)
    /// the product runs in their dtype instead.
    /// </summary>
    Tensor Unembed(Tensor x, bool narrowProducts = false)
    {
        if (Weights.WU.dtype == DType) return F.linear(x, Weights.WU, Weights.BU);
        if (narrowProducts) return F.linear(x.to(Weights.WU.dtype), Weights.WU, Weights.BU).to(DType);
        // A slice of the unembedding at a time, widened into one buffer and written into the logits in place: the same few
        // allocations for every slice (fresh ones per slice left the heap fragmented: +0.4 GB peak on a 128K vocabulary).
        // (With gradients on, each product keeps its slice for the backward: fresh slices then.)
        long vocab = Weights.WU.shape[0], rows = Math.Min(vocab, Math.Max(1, (1L << 22) / Weights.WU.shape[1]));
        if (is_grad_enabled())
        {
            var parts = new List<Tensor>();
            for (long start = 0; start < vocab; start += rows)
            {
                long len = Math.Min(rows, vocab - start);
                using var slice = Weights.WU.narrow(0, start, len).to(DType);
                using var bias = Weights.BU?.narrow(0, start, len).to(DType);
                parts.Add(F.linear(x, slice, bias));
            }
            return cat(parts, -1);
        }
        var shape = x.shape.ToArray(); shape[^1] = vocab;
        var logits = empty(shape, DType, Device);
        using var wide = empty(new long[] { rows, Weights.WU.shape[1] }, DType, Device);
        for (long start = 0; start < vocab; start += rows)
        {
            using var scope = NewDisposeScope();
            long len = Math.Min(rows, vocab - start);
            var slice = wide.narrow(0, 0, len);
            slice.copy_(Weights.WU.narrow(0, start, len));
            logits.narrow(-1, start, len).copy_(F.linear(x, slice, Weights.BU?.narrow(0, start, len).to(DType)));
        }
        return logits;
    }

    Tensor Execute(Tensor input, RunOptions o, ForwardState s)
    {
        using var grad = o.EnableGrad || s.KeepGraph ? enable_grad() : no_grad();
        using var scope = NewDisposeScope();
        try
        {
            var output = Forward(input, o, s);
            return output.MoveToOuterDisposeScope();
        }
        finally { foreach (var splice in s.Splices) splice.Dispose(); }
    }

    Tensor Hook(ForwardState s, string name, int? layer, Tensor x)
    {
        var ctx = new HookContext(name, layer);
        x = HookDispatch.Forward(s.Forward, name, layer, x);
        foreach (var splice in s.Splices)
            if (splice.AtHook(name, x, (n, v) => Hook(s, n, layer, v)) is { } spliced) x = spliced;
        foreach (var spec in s.Backward)
            if (spec.Filter.Matches(name) && x.requires_grad) x = GradientHook.Apply(x, spec.Hook, ctx);
        if (s.Cache != null && s.CacheFilter(name))
        {
            s.Cache.Store(name, x.detach());
            if (s.KeepGraph && x.requires_grad)
            {
                x.retain_grad();
                // Kept past the forward's dispose scope until the gradient is read.
                s.GradSources[name] = x.DetachFromDisposeScope();
            }
        }
        return x;
    }

    Tensor Forward(Tensor input, RunOptions o, ForwardState s)
    {
        var cfg = Config;
        int start = o.StartAtLayer, stop = o.StopAtLayer ?? cfg.NLayers;
        if (start < 0 || start > cfg.NLayers || stop < start || stop > cfg.NLayers)
            throw new MechanistException($"layers {start}..{stop} are outside the model's 0..{cfg.NLayers}");
        long batch = input.shape[0], pos = input.shape[1];
        int past = s.Past = o.KvCache?.Length ?? 0;
        s.NarrowProducts = StorageDType != DType && batch * pos <= NarrowProductRows;
        // Allocated in the run's own dispose scope (not a block's), so it lives for the whole run and no longer.
        if (StorageDType != DType && !s.NarrowProducts && !is_grad_enabled())
            s.WideBuffer = empty(Weights.Blocks.SelectMany(b => b.Named()).Where(t => t.Tensor.dim() > 1)
                .Select(t => t.Tensor.dim() == 3 ? t.Tensor.numel() / t.Tensor.shape[0] : t.Tensor.numel()).DefaultIfEmpty(0).Max(), DType, Device);
        if (past + pos > cfg.NCtx) throw new MechanistException($"{past + pos} positions exceed the model's context of {cfg.NCtx}");

        var mask = o.AttentionMask?.to(Device);
        if (mask is not null && (mask.dim() != 2 || mask.shape[0] != batch || mask.shape[1] != past + pos))
            throw new MechanistException($"attention mask has shape [{string.Join(", ", mask.shape)}]; expected [{batch}, {past + pos}]");
        var positions = o.PositionIds?.to(Device) ?? DefaultPositions(batch, pos, past, mask);

        Tensor x;
        if (start == 0)
        {
            Tensor embed;
            if (o.InputIsEmbeddings)
            {
                if (input.dim() != 3 || input.shape[2] != cfg.DModel) throw new MechanistException($"input embeddings must be [batch, pos, {cfg.DModel}]");
                embed = input.to(DType, Device);
            }
            else
            {
                if (input.dtype != ScalarType.Int64 || input.dim() != 2) throw new MechanistException("tokens must be an int64 tensor [batch, pos]");
                if (pos == 0) throw new MechanistException("no tokens to run");
                long min = input.min().item<long>(), max = input.max().item<long>();
                if (min < 0 || max >= cfg.VocabSize) throw new MechanistException($"token id {(min < 0 ? min : max)} is outside the vocabulary (0..{cfg.VocabSize - 1})");
                embed = Computed(Weights.WE.index_select(0, input.to(Device).flatten()).view(batch, pos, cfg.DModel));
                if (cfg.EmbeddingScale != 1.0) embed = embed * tensor(cfg.EmbeddingScale, DType, Device);
            }
            // Weights need not require grad: with gradients on, the graph starts at the embeddings so that
            // every activation downstream has a gradient.
            if (is_grad_enabled() && !embed.requires_grad) embed = embed.detach().requires_grad_(true);
            embed = Hook(s, HookNames.Embed, null, embed);
            if (cfg.Positional == PositionKind.Learned)
            {
                var posEmbed = Computed(Weights.WPos!.index_select(0, positions.flatten()).view(batch, pos, cfg.DModel));
                if (is_grad_enabled() && !posEmbed.requires_grad) posEmbed = posEmbed.detach().requires_grad_(true);
                posEmbed = Hook(s, HookNames.PosEmbed, null, posEmbed);
                x = embed.add(posEmbed, Mechanist.Tensors.Scalars.One);
            }
            else x = embed;
            // BLOOM normalises the token embedding; BERT the sum of token, position and token-type embeddings.
            if (cfg.EmbeddingNorm) x = F.layer_norm(x, new long[] { cfg.DModel }, ComputedOrNull(Weights.EmbedLnW), ComputedOrNull(Weights.EmbedLnB), cfg.NormEps);
        }
        else
        {
            if (input.dim() != 3 || input.shape[2] != cfg.DModel) throw new MechanistException($"a start layer needs a residual stream [batch, pos, {cfg.DModel}]");
            x = input.to(DType, Device);
            if (is_grad_enabled() && !x.requires_grad) x = x.detach().requires_grad_(true);
        }

        var attnMask = BuildMask(batch, pos, past, mask, sliding: false);
        var slidingMask = cfg.SlidingWindow != null ? BuildMask(batch, pos, past, mask, sliding: true) : null;
        (Tensor Cos, Tensor Sin)? rope = _rotary?.For(positions, DType);
        if (cfg.Positional == PositionKind.Alibi) s.Alibi = AlibiBias(batch, past + pos, mask);
        (Tensor Cos, Tensor Sin)? localRope = _localRotary?.For(positions, DType) ?? rope;
        for (int l = start; l < stop; l++)
        {
            // Each block's intermediates are freed as soon as it is done (cached ones are owned by the cache).
            using var blockScope = NewDisposeScope();
            // Weights kept narrower than the activations: the block's vectors (norms, biases) are widened here and freed with the
            // block's scope; its matrices are widened one at a time where they are used (Linear).
            if (StorageDType != DType)
            {
                s.Widened = Weights.Blocks[l].Map(t => t.dim() > 1 ? t : Computed(t));
                s.WidenedLayer = l;
            }
            bool local = cfg.UsesSlidingWindow(l);
            x = Block(s, o, l, x, local ? slidingMask! : attnMask, local ? localRope : rope).MoveToOuterDisposeScope();
        }
        o.KvCache?.Advance((int)pos);
        if (stop < cfg.NLayers) return x;

        s.Widened = null; s.WidenedLayer = -1;
        if (cfg.MlmHead) x = Activation(F.linear(x, Computed(Weights.HeadDenseW!), ComputedOrNull(Weights.HeadDenseB)));
        x = Norm(s, o, x, cfg.Norm, ComputedOrNull(Weights.LnFinalW), ComputedOrNull(Weights.LnFinalB), HookNames.LnFinalScale, HookNames.LnFinalNormalized, null, out _);
        x = Hook(s, HookNames.UnembedIn, null, x);
        if (o.SkipUnembedding) return x;
        var logits = Unembed(x, s.NarrowProducts);
        if (cfg.FinalSoftcap is { } cap) logits = Softcap(logits, cap);
        return Hook(s, HookNames.UnembedOut, null, logits);
    }

    Tensor DefaultPositions(long batch, long pos, int past, Tensor? mask)
    {
        if (mask is null) return SafeOps.Arange(past, past + pos, device: Device).unsqueeze(0).expand(batch, pos);
        // Left padding: real tokens count from 0; pad slots get 0 (they are masked anyway).
        var cumulative = mask.to(ScalarType.Int64).cumsum(1).sub(Scalars.Int(1));
        return cumulative.clamp_min(Scalars.Int(0))[.., past..];
    }

    /// <summary>
    /// ALiBi's bias slope_h · key position [batch, heads, 1, keys]: positions count real keys (cumsum(mask) − 1, 0 at pads) as BLOOM does;
    /// per query row this equals slope_h · (key − query) up to a constant, which softmax ignores.
    /// </summary>
    Tensor AlibiBias(long batch, long keys, Tensor? mask)
    {
        int h = Config.NHeads;
        int closest = 1 << (int)Math.Floor(Math.Log2(h));
        double baseSlope = Math.Pow(2, -Math.Pow(2, -(Math.Log2(closest) - 3)));
        var slopes = Enumerable.Range(1, closest).Select(i => Math.Pow(baseSlope, i)).ToList();
        if (closest != h)
        {
            double extra = Math.Pow(2, -Math.Pow(2, -(Math.Log2(2 * closest) - 3)));
            slopes.AddRange(Enumerable.Range(0, Math.Min(closest, h - closest)).Select(i => Math.Pow(extra, 1 + 2 * i)));
        }
        var keyPos = mask is null
            ? SafeOps.Arange(keys, ScalarType.Float32, Device).unsqueeze(0).expand(batch, keys)
            : mask.to(ScalarType.Int64).cumsum(1).sub(Scalars.Int(1)).mul(mask.to(ScalarType.Int64)).to(ScalarType.Float32);
        var slope = tensor(slopes.Select(x => (float)x).ToArray(), device: Device).view(1, h, 1, 1);
        return slope * keyPos.view(batch, 1, 1, keys);
    }

    /// <summary>True where attention is forbidden: future keys, padding keys, keys outside the sliding window.</summary>
    Tensor BuildMask(long batch, long pos, int past, Tensor? padding, bool sliding)
    {
        long keys = past + pos;
        var q = SafeOps.Arange(past, keys, device: Device).unsqueeze(1);
        var k = SafeOps.Arange(0, keys, device: Device).unsqueeze(0);
        var masked = Config.Causal ? k > q : zeros(new long[] { pos, keys }, ScalarType.Bool, Device);
        if (sliding) masked = masked.logical_or((q - k).Ge(Config.SlidingWindow!.Value));
        masked = masked.view(1, 1, pos, keys);
        if (padding is not null) masked = masked.logical_or(padding.Eq(0).view(batch, 1, 1, keys));
        return masked;
    }

    Tensor Block(ForwardState s, RunOptions o, int l, Tensor resid, Tensor mask, (Tensor Cos, Tensor Sin)? rope)
    {
        var cfg = Config; var n = _blockNames[l]; var w = BlockFor(s, l);
        resid = Hook(s, n.ResidPre, l, resid);
        if (cfg.PostLayerNorm) return PostLnBlock(s, o, l, resid, mask, rope);
        var attnIn = cfg.PreNorms ? Norm(s, o, resid, cfg.Norm, w.Ln1W, w.Ln1B, n.Ln1Scale, n.Ln1Normalized, l, out _) : resid;
        var attnOut = Attention(s, o, l, attnIn, mask, rope);
        if (cfg.PostNorms) attnOut = Norm(s, o, attnOut, cfg.Norm, w.PostAttnNormW, null, n.Ln1PostScale, n.Ln1PostNormalized, l, out _);
        attnOut = Hook(s, n.AttnOut, l, attnOut);
        if (cfg.AttnOnly) return Hook(s, n.ResidPost, l, resid.add(attnOut, Mechanist.Tensors.Scalars.One));

        Tensor mid = resid;
        if (!cfg.ParallelResidual) mid = Hook(s, n.ResidMid, l, resid.add(attnOut, Mechanist.Tensors.Scalars.One));
        var mlpResid = cfg.ParallelResidual ? resid : mid;
        Tensor mlpIn, normalized;
        if (cfg.PreNorms) mlpIn = Norm(s, o, mlpResid, cfg.Norm, w.Ln2W, w.Ln2B, n.Ln2Scale, n.Ln2Normalized, l, out normalized);
        else mlpIn = normalized = mlpResid;
        Tensor TrueMlp()
        {
            var y = Mlp(s, l, mlpIn);
            return cfg.PostNorms ? Norm(s, o, y, cfg.Norm, w.PostMlpNormW, null, n.Ln2PostScale, n.Ln2PostNormalized, l, out _) : y;
        }
        Tensor? mlpOut = null;
        foreach (var splice in s.Splices)
            if ((mlpOut = splice.ReplaceMlp(new MlpSite(l, mlpResid, normalized, mlpIn, s.Past), TrueMlp, (hn, v) => Hook(s, hn, l, v))) is not null) break;
        mlpOut = Hook(s, n.MlpOut, l, mlpOut ?? TrueMlp());

        var post = cfg.ParallelResidual ? mlpOut.add(attnOut, Mechanist.Tensors.Scalars.One).add(resid, Mechanist.Tensors.Scalars.One) : mid.add(mlpOut, Mechanist.Tensors.Scalars.One);
        return Hook(s, n.ResidPost, l, post);
    }

    /// <summary>BERT's post-LN block: resid_mid = ln1(resid_pre + attn_out), resid_post = ln2(resid_mid + mlp_out).</summary>
    Tensor PostLnBlock(ForwardState s, RunOptions o, int l, Tensor resid, Tensor mask, (Tensor Cos, Tensor Sin)? rope)
    {
        var cfg = Config; var n = _blockNames[l]; var w = BlockFor(s, l);
        var attnOut = Hook(s, n.AttnOut, l, Attention(s, o, l, resid, mask, rope));
        var mid = Norm(s, o, resid.add(attnOut, Scalars.One), cfg.Norm, w.Ln1W, w.Ln1B, n.Ln1Scale, n.Ln1Normalized, l, out var normalized);
        mid = Hook(s, n.ResidMid, l, mid);
        Tensor? mlpOut = null;
        foreach (var splice in s.Splices)
            if ((mlpOut = splice.ReplaceMlp(new MlpSite(l, mid, mid, mid, s.Past), () => Mlp(s, l, mid), (hn, v) => Hook(s, hn, l, v))) is not null) break;
        mlpOut = Hook(s, n.MlpOut, l, mlpOut ?? Mlp(s, l, mid));
        var post = Norm(s, o, mid.add(mlpOut, Scalars.One), cfg.Norm, w.Ln2W, w.Ln2B, n.Ln2Scale, n.Ln2Normalized, l, out _);
        return Hook(s, n.ResidPost, l, post);
    }

    Tensor Attention(ForwardState s, RunOptions o, int l, Tensor x, Tensor mask, (Tensor Cos, Tensor Sin)? rope)
    {
        var cfg = Config; var n = _blockNames[l]; var w = BlockFor(s, l);
        long b = x.shape[0], p = x.shape[1];
        var qFlat = Linear(s, x, w.Wq, w.Bq); var kFlat = Linear(s, x, w.Wk, w.Bk);
        if (cfg.QkNorm && cfg.QkNormAcrossHeads) { qFlat = RmsNormHead(qFlat, w.QNormW!); kFlat = RmsNormHead(kFlat, w.KNormW!); }
        var q = qFlat.view(b, p, cfg.NHeads, cfg.DHead);
        var k = kFlat.view(b, p, cfg.NKvHeads, cfg.DHead);
        var v = Linear(s, x, w.Wv, w.Bv).view(b, p, cfg.NKvHeads, cfg.DHead);
        if (cfg.QkNorm && !cfg.QkNormAcrossHeads)
        {
            q = RmsNormHead(q, w.QNormW!);
            k = RmsNormHead(k, w.KNormW!);
        }
        q = Hook(s, n.Q, l, q);
        k = Hook(s, n.K, l, k);
        v = Hook(s, n.V, l, v);
        if (rope is { } r)
        {
            q = Hook(s, n.RotQ, l, _rotary!.Apply(q, r.Cos, r.Sin));
            k = Hook(s, n.RotK, l, _rotary!.Apply(k, r.Cos, r.Sin));
        }
        int past = o.KvCache?.Length ?? 0;
        if (o.KvCache is { } cache) (k, v) = cache.Append(l, k, v);

        if (CanFuseAttention(s, o, l, n, past))
        {
            // Nothing reads the scores or the pattern: libtorch's fused attention computes z in one pass.
            var qf = q.permute(0, 2, 1, 3);
            var kf = k.permute(0, 2, 1, 3);
            var vf = v.permute(0, 2, 1, 3);
            if (cfg.HeadsPerKvHead > 1) { kf = kf.repeat_interleave(cfg.HeadsPerKvHead, dim: 1); vf = vf.repeat_interleave(cfg.HeadsPerKvHead, dim: 1); }
            double rescale = cfg.AttnScale * Math.Sqrt(cfg.DHead); // the fused kernel scales by 1/sqrt(d_head)
            if (Math.Abs(rescale - 1) > 1e-12) qf = qf.mul(Scalars.Of(rescale));
            if (s.Cache is { } activations) CacheLazyAttention(s, activations, n, q.permute(0, 2, 1, 3), kf);
            // A frozen pattern is a function of detached queries and keys: the gradient reaches v only, and the fused
            // kernel's backward recomputes the pattern instead of keeping [heads, pos, pos] per layer for it.
            if (o.FreezeAttention) { qf = qf.detach(); kf = kf.detach(); }
            var zFused = Hook(s, n.Z, l, F.scaled_dot_product_attention(qf, kf, vf, null, 0.0, true).permute(0, 2, 1, 3));
            return OutputProjection(s, o, l, zFused, b, p);
        }

        var qh = q.permute(0, 2, 1, 3);
        var kh = k.permute(0, 2, 3, 1);
        var vh = v.permute(0, 2, 1, 3);
        if (cfg.HeadsPerKvHead > 1)
        {
            kh = kh.repeat_interleave(cfg.HeadsPerKvHead, dim: 1);
            vh = vh.repeat_interleave(cfg.HeadsPerKvHead, dim: 1);
        }
        var scores = matmul(qh, kh).mul(Scalars.Of(cfg.AttnScale));
        if (cfg.AttnSoftcap is { } cap) scores = Softcap(scores, cap);
        if (s.Alibi is { } alibi) scores = scores.add(alibi.to(scores.dtype), Scalars.One);
        scores = scores.masked_fill(mask, Scalars.Of(MinValue(scores.dtype)));
        scores = Hook(s, n.AttnScores, l, scores);
        var pattern = F.softmax(scores, -1, scores.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32).to(scores.dtype);
        if (o.FreezeAttention) pattern = pattern.detach();
        pattern = Hook(s, n.Pattern, l, pattern);
        var z = Hook(s, n.Z, l, matmul(pattern, vh).permute(0, 2, 1, 3));
        return OutputProjection(s, o, l, z, b, p);
    }

    /// <summary>
    /// Whether attention can run fused: causal only (no padding mask, no past keys, no sliding window), no
    /// soft-capping, and nothing hooks or differentiates the scores or pattern (a frozen pattern runs fused on
    /// detached queries and keys). A cache that
    /// only reads them gets them lazily (<see cref="CacheLazyAttention"/>).
    /// </summary>
    bool CanFuseAttention(ForwardState s, RunOptions o, int l, BlockHookNames n, int past)
    {
        if (!o.FusedAttention || o.AttentionMask is not null || past > 0 || Config.UsesSlidingWindow(l) || Config.AttnSoftcap is not null || Config.Positional == PositionKind.Alibi || !Config.Causal) return false;
        bool Touched(string name) =>
            s.Forward.Any(h => h.Filter.Matches(name)) || s.Backward.Any(h => h.Filter.Matches(name)) || (s.Cache != null && s.KeepGraph && s.CacheFilter(name));
        return !Touched(n.AttnScores) && !Touched(n.Pattern);
    }

    /// <summary>
    /// Caches the scores and pattern of a fused-attention layer without computing them: they are rebuilt from the
    /// queries [b, h, p, dh] and keys [b, h, p, dh] (heads repeated for GQA) with the same operations as the
    /// unfused path, on first access. Nothing hooks them here, so the lazy values equal what the forward used.
    /// </summary>
    void CacheLazyAttention(ForwardState s, ActivationCache cache, BlockHookNames n, Tensor q, Tensor k)
    {
        bool scores = s.CacheFilter(n.AttnScores), pattern = s.CacheFilter(n.Pattern);
        if (!scores && !pattern) return;
        var qd = q.detach(); var kd = k.detach();
        double scale = Config.AttnScale;
        Tensor Scores()
        {
            long p = qd.shape[2];
            var causal = ones(p, p, ScalarType.Bool, qd.device).triu(1);
            // The same operand layouts as the unfused path, so the same kernel sums in the same order: there the keys are
            // transposed before heads are repeated for GQA (a contiguous [b, h, dh, p] copy), a view otherwise.
            var kt = Config.HeadsPerKvHead > 1 ? kd.transpose(2, 3).contiguous() : kd.transpose(2, 3);
            var x = matmul(qd, kt).Mul(scale);
            return x.masked_fill(causal, Scalars.Of(MinValue(x.dtype)));
        }
        if (scores) cache.StoreLazy(n.AttnScores, Scores, qd, kd);
        if (pattern)
            cache.StoreLazy(n.Pattern, () =>
            {
                var x = scores ? cache[n.AttnScores] : Scores();
                return F.softmax(x, -1, x.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32).to(x.dtype);
            }, scores ? Array.Empty<Tensor>() : new[] { qd, kd });
    }

    Tensor OutputProjection(ForwardState s, RunOptions o, int l, Tensor z, long b, long p)
    {
        var cfg = Config; var n = _blockNames[l]; var w = BlockFor(s, l);
        if (!o.UseAttnResult) return Linear(s, z.reshape(b, p, cfg.NHeads * cfg.DHead), w.Wo, w.Bo);
        var perHead = Computed(w.Wo).view(cfg.DModel, cfg.NHeads, cfg.DHead).permute(1, 2, 0);
        var result = Hook(s, n.Result, l, einsum("bphd,hdm->bphm", z, perHead));
        var summed = result.sum(2);
        return w.Bo is null ? summed : summed.add(w.Bo, Mechanist.Tensors.Scalars.One);
    }

    /// <summary>
    /// Rotates x [batch, n, heads, d_head] as layer <paramref name="layer"/> rotates its queries and keys at one position (a sliding-window
    /// layer with its own base uses its own tables); x unchanged for models without rotary embeddings. For decompositions (QK attribution).
    /// </summary>
    internal Tensor RotateAt(int layer, long position, Tensor x)
    {
        if (_rotary is null) return x;
        var table = Config.UsesSlidingWindow(layer) && _localRotary is not null ? _localRotary : _rotary;
        using var positions = SafeOps.FullInt(new long[] { 1, 1 }, position, ScalarType.Int64, Device);
        var (cos, sin) = table.For(positions, x.dtype);
        using (cos) using (sin) return _rotary.Apply(x, cos, sin);
    }

    /// <summary>ALiBi's bias slope_h · key position for one query row [heads, keys] (keys counted from 0), null without ALiBi.</summary>
    internal Tensor? AlibiRow(long keys) => Config.Positional == PositionKind.Alibi ? AlibiBias(1, keys, null).view(Config.NHeads, keys) : null;

    /// <summary>tanh(x / cap) · cap with rooted scalars.</summary>
    static Tensor Softcap(Tensor x, double cap) => x.div(Scalars.Of(cap)).tanh().mul(Scalars.Of(cap));

    static double MinValue(ScalarType t) => t switch
    {
        ScalarType.Float16 => -65504.0,
        ScalarType.BFloat16 => -3.3895313892515355e38,
        ScalarType.Float64 => double.MinValue,
        _ => float.MinValue,
    };

    Tensor RmsNormHead(Tensor x, Tensor weight)
    {
        var xf = x.dtype == ScalarType.Float64 ? x : x.to(ScalarType.Float32);
        var normed = xf * xf.Square().mean(new long[] { -1 }, keepdim: true).add(Scalars.Of(Config.NormEps), Scalars.One).rsqrt();
        return weight * normed.to(x.dtype);
    }

    Tensor Norm(ForwardState s, RunOptions o, Tensor x, NormKind kind, Tensor? weight, Tensor? bias, string scaleName, string normalizedName, int? layer,
        out Tensor normalizedOut)
    {
        // Half-precision inputs are normalised in fp32 (as HF does); fp32 and fp64 keep their precision.
        var xf = x.dtype is ScalarType.Float16 or ScalarType.BFloat16 ? x.to(ScalarType.Float32) : x;
        bool centre = kind is NormKind.LayerNorm or NormKind.LayerNormNoAffine;
        var centred = centre ? xf.sub(xf.mean(new long[] { -1 }, keepdim: true)) : xf;
        var scale = centred.Square().mean(new long[] { -1 }, keepdim: true).add(Scalars.Of(Config.NormEps), Scalars.One).sqrt();
        if (o.FreezeNormScales) scale = scale.detach();
        scale = Hook(s, scaleName, layer, scale);
        var normalized = Hook(s, normalizedName, layer, centred / scale);
        normalizedOut = normalized;
        if (weight is null && bias is null) return normalized.to(x.dtype); // folded into the readers
        return kind switch
        {
            NormKind.RmsNorm => weight! * normalized.to(x.dtype),
            NormKind.RmsNormPlusOne => (normalized * weight!.to(xf.dtype).add(Scalars.One, Scalars.One)).to(x.dtype),
            NormKind.LayerNorm => (bias is null ? normalized * weight! : weight is null ? normalized.Add(bias.to(xf.dtype)) : torch.addcmul(bias.to(xf.dtype), normalized, weight!.to(xf.dtype), Scalars.One)).to(x.dtype),
            _ => normalized.to(x.dtype),
        };
    }

    Tensor Mlp(ForwardState s, int l, Tensor x)
    {
        var n = _blockNames[l]; var w = BlockFor(s, l);
        if (Config.Moe is { } moe) return MixtureOfExperts(s, l, x, moe);
        var pre = Hook(s, n.MlpPre, l, Linear(s, x, w.WIn, w.BIn));
        Tensor post;
        if (Config.GatedMlp)
        {
            var preLinear = Hook(s, n.MlpPreLinear, l, Linear(s, x, w.WUp!, w.BUp));
            post = Hook(s, n.MlpPost, l, Activation(pre) * preLinear);
        }
        else post = Hook(s, n.MlpPost, l, Activation(pre));
        return Linear(s, post, w.WOut, w.BOut);
    }

    /// <summary>
    /// A mixture-of-experts MLP: router logits, softmax in fp32, the top-k experts per token (renormalised when the config says),
    /// each expert run only on the tokens routed to it, outputs weighted and summed; plus a sigmoid-gated shared expert.
    /// </summary>
    Tensor MixtureOfExperts(ForwardState s, int l, Tensor x, MoeConfig moe)
    {
        var n = _blockNames[l]; var w = BlockFor(s, l);
        long b = x.shape[0], p = x.shape[1], d = Config.DModel, tokens = b * p;
        var flat = x.reshape(tokens, d);
        var router = Hook(s, n.RouterLogits, l, Linear(s, flat, w.Router!).view(b, p, moe.Experts)).reshape(tokens, moe.Experts);
        var probs = F.softmax(router.to(ScalarType.Float32), -1);
        var (topW, topI) = probs.topk(moe.TopK, -1);
        if (moe.NormalizeTopK) topW = topW / topW.sum(new long[] { -1 }, keepdim: true);
        topW = Hook(s, n.ExpertWeights, l, topW.to(x.dtype).view(b, p, moe.TopK)).reshape(tokens, moe.TopK);
        topI = Hook(s, n.ExpertIndices, l, topI.view(b, p, moe.TopK)).reshape(tokens, moe.TopK);
        var outputs = zeros(new long[] { tokens, moe.TopK, d }, x.dtype, x.device);
        var chosen = topI.cpu().data<long>().ToArray();
        for (int e = 0; e < moe.Experts; e++)
        {
            // Only the (token, slot) pairs routed to expert e run through it.
            var pairs = new List<long>();
            for (int i = 0; i < chosen.Length; i++) if (chosen[i] == e) pairs.Add(i);
            if (pairs.Count == 0) continue;
            using var scope = NewDisposeScope();
            var at = tensor(pairs.ToArray(), device: x.device);
            var rows = at.div(Scalars.Int(moe.TopK), RoundingMode.floor);
            var xe = flat.index_select(0, rows);
            var ye = Linear(s, Activation(Linear(s, xe, w.ExpertGate![e])) * Linear(s, xe, w.ExpertUp![e]), w.ExpertDown![e]);
            outputs.view(tokens * moe.TopK, d).index_copy_(0, at, ye);
        }
        outputs = Hook(s, n.ExpertOut, l, outputs.view(b, p, moe.TopK, d)).reshape(tokens, moe.TopK, d);
        var mixed = (outputs * topW.unsqueeze(-1)).sum(new long[] { 1 });
        if (moe.SharedExpert)
        {
            var shared = Linear(s, Activation(Linear(s, flat, w.WIn)) * Linear(s, flat, w.WUp!), w.WOut);
            mixed = mixed.add(Linear(s, flat, w.SharedExpertGate!).sigmoid() * shared, Scalars.One);
        }
        return mixed.view(b, p, d);
    }

    Tensor Activation(Tensor x) => Config.Activation switch
    {
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" or "gelu_python_tanh" => F.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
        "gelu" or "gelu_python" => F.gelu(x),
        "silu" or "swish" => F.silu(x),
        "relu" => F.relu(x),
        "quick_gelu" => x * x.mul(Scalars.Of(1.702)).sigmoid(),
        var other => throw new MechanistException($"activation '{other}' is not supported"),
    };
}

public sealed partial class HookedTransformer
{
    /// <summary>
    /// Logits from any residual stream [..., d_model]: the final norm (with its own fresh scale) and the
    /// unembedding, no hooks. This is the logit lens.
    /// </summary>
    public Tensor UnembedResidual(Tensor residual)
    {
        using var scope = NewDisposeScope();
        var s = new ForwardState(new List<ForwardHookSpec>(), Array.Empty<BackwardHookSpec>(), null, false);
        var input = residual.to(DType, Device);
        if (Config.MlmHead) input = Activation(nn.functional.linear(input, Computed(Weights.HeadDenseW!), ComputedOrNull(Weights.HeadDenseB)));
        var normed = Norm(s, new RunOptions(), input, Config.Norm, ComputedOrNull(Weights.LnFinalW), ComputedOrNull(Weights.LnFinalB),
            HookNames.LnFinalScale, HookNames.LnFinalNormalized, null, out _);
        var logits = Unembed(normed);
        if (Config.FinalSoftcap is { } cap) logits = Softcap(logits, cap);
        return logits.MoveToOuterDisposeScope();
    }
}
