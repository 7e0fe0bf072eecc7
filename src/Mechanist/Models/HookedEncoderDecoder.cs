using Mechanist.Hooks;
using Mechanist.IO;
using Mechanist.Runtime;
using Mechanist.Tensors;
using Mechanist.Tokenization;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Mechanist.Models;

/// <summary>The configuration of a T5-style encoder-decoder.</summary>
/// <param name="DModel">Residual width.</param>
/// <param name="DKv">Per-head width.</param>
/// <param name="NHeads">Heads.</param>
/// <param name="DFf">Feed-forward width.</param>
/// <param name="EncoderLayers">Encoder blocks.</param>
/// <param name="DecoderLayers">Decoder blocks.</param>
/// <param name="VocabSize">Vocabulary.</param>
/// <param name="Buckets">Relative-position buckets.</param>
/// <param name="MaxDistance">Relative distance beyond which buckets saturate.</param>
/// <param name="Eps">RMSNorm epsilon.</param>
/// <param name="Activation">Feed-forward activation (relu or gelu_new; gated for "gated-…").</param>
/// <param name="Gated">Whether the feed-forward is gated (T5 v1.1).</param>
/// <param name="Tied">Tied embeddings (the decoder output is scaled by d_model^-0.5 before the unembedding).</param>
/// <param name="DecoderStart">decoder_start_token_id.</param>
/// <param name="Eos">EOS id.</param>
public sealed record EncoderDecoderConfig(int DModel, int DKv, int NHeads, int DFf, int EncoderLayers, int DecoderLayers, int VocabSize, int Buckets, int MaxDistance,
    double Eps, string Activation, bool Gated, bool Tied, int DecoderStart, int? Eos);

/// <summary>
/// A hooked T5 (encoder-decoder): RMSNorm pre-norm blocks, unscaled attention with learned relative-position buckets (computed
/// in block 0 of each stack and reused by every layer), causal decoder self-attention and cross-attention to the encoder.
/// Hook points follow TransformerLens's encoder-decoder names: <c>encoder.L.attn.hook_pattern</c>, <c>decoder.L.attn.hook_pattern</c>,
/// <c>decoder.L.cross_attn.hook_pattern</c>, <c>encoder.L.hook_resid_post</c>, ...
/// </summary>
public sealed class HookedEncoderDecoder : IDisposable
{
    readonly Dictionary<string, Tensor> _w;

    readonly HookScopes _hookScopes;
    readonly BlockNames[] _encoder, _decoder;

    HookedEncoderDecoder(EncoderDecoderConfig cfg, Dictionary<string, Tensor> weights, TextTokenizer? tokenizer, string name)
    {
        Config = cfg; _w = weights; Tokenizer = tokenizer; Name = name;
        HookPoints = HookRegistry.ForEncoderDecoder(cfg);
        _hookScopes = new HookScopes(() => HookPoints);
        _encoder = Enumerable.Range(0, cfg.EncoderLayers).Select(l => new BlockNames(HookPoints, HookStack.Encoder, l)).ToArray();
        _decoder = Enumerable.Range(0, cfg.DecoderLayers).Select(l => new BlockNames(HookPoints, HookStack.Decoder, l)).ToArray();
    }

    /// <summary>The hook points of one block, asked of the registry once (the registry is where names are spelled).</summary>
    sealed class BlockNames(HookRegistry r, HookStack stack, int l)
    {
        // Cross-attention and ln3 exist in decoder blocks only (an encoder block's stay empty and never fire).
        static string DecoderOnly(HookRegistry r, HookStack stack, HookKind k, int l) => stack == HookStack.Decoder ? r.Name(stack, k, l) : "";
        public readonly string ResidPre = r.Name(stack, HookKind.ResidPre, l), Ln1 = r.Name(stack, HookKind.Ln1Normalized, l), AttnOut = r.Name(stack, HookKind.AttnOut, l),
            ResidMid = r.Name(stack, HookKind.ResidMid, l), Ln2 = r.Name(stack, HookKind.Ln2Normalized, l), MlpPre = r.Name(stack, HookKind.MlpPre, l),
            MlpPost = r.Name(stack, HookKind.MlpPost, l), MlpOut = r.Name(stack, HookKind.MlpOut, l), ResidPost = r.Name(stack, HookKind.ResidPost, l);
        public readonly AttentionNames Self = new(r.Name(stack, HookKind.Q, l), r.Name(stack, HookKind.K, l), r.Name(stack, HookKind.V, l),
            r.Name(stack, HookKind.AttnScores, l), r.Name(stack, HookKind.Pattern, l), r.Name(stack, HookKind.Z, l));
        public readonly AttentionNames Cross = new(DecoderOnly(r, stack, HookKind.CrossQ, l), DecoderOnly(r, stack, HookKind.CrossK, l), DecoderOnly(r, stack, HookKind.CrossV, l),
            DecoderOnly(r, stack, HookKind.CrossAttnScores, l), DecoderOnly(r, stack, HookKind.CrossPattern, l), DecoderOnly(r, stack, HookKind.CrossZ, l));
        public readonly string CrossOut = DecoderOnly(r, stack, HookKind.CrossAttnOut, l), ResidMidCross = DecoderOnly(r, stack, HookKind.ResidMidCross, l),
            Ln3 = DecoderOnly(r, stack, HookKind.Ln3Normalized, l);
        public readonly int Layer = l;
    }

    sealed record AttentionNames(string Q, string K, string V, string Scores, string Pattern, string Z);

    /// <summary>Configuration.</summary>
    public EncoderDecoderConfig Config { get; }
    /// <summary>Tokenizer, if one was found.</summary>
    public TextTokenizer? Tokenizer { get; }
    /// <summary>Name (what the user passed).</summary>
    public string Name { get; }
    /// <summary>Every hook point (names, kinds, stacks and shapes), built from the configuration: the one place its names are spelled.</summary>
    public HookRegistry HookPoints { get; }

    /// <summary>Every hook point's name, in forward order.</summary>
    public IReadOnlyList<string> HookNames => HookPoints.Points.Select(p => p.Name).ToList();

    /// <summary>Parameter count (the shared embedding counted once).</summary>
    public long ParameterCount => _w.Values.Sum(t => t.numel());

    /// <summary>A hook point's shape for an encoder input [batch, enc_pos] and decoder input [batch, dec_pos], as <c>mechanist hooks</c> prints it.</summary>
    public string HookShape(string name) => (HookPoints.Find(name) ?? throw new MechanistException($"unknown hook point '{name}' for {Name}")).Shape.ToString();

    /// <summary>Whether a config.json describes an encoder-decoder this class runs.</summary>
    public static bool Handles(ModelConfig c) => c.ModelType == "t5";

    /// <summary>Loads a T5 folder.</summary>
    public static HookedEncoderDecoder Load(string spec, ModelOpenOptions? open = null)
    {
        TorchRuntime.EnsureLoaded();
        using var source = ModelSource.Open(spec, open);
        var c = source.Config;
        if (!Handles(c)) throw new MechanistException($"{c.Source}: model_type '{c.ModelType}' is not an encoder-decoder Mechanist runs (supported: t5)");
        string ff = c.String("feed_forward_proj") ?? "relu";
        bool gated = ff.StartsWith("gated-");
        string act = gated ? ff["gated-".Length..] : ff;
        if (act is not ("relu" or "gelu_new" or "gelu")) throw c.Bad("feed_forward_proj", $"'{ff}' is not supported (relu, gelu_new, gated-…)");
        int d = c.PositiveInt("d_model");
        var cfg = new EncoderDecoderConfig(d, c.PositiveInt("d_kv"), c.PositiveInt("num_heads"), c.PositiveInt("d_ff"), c.PositiveInt("num_layers"),
            c.IntOrNull("num_decoder_layers") ?? c.PositiveInt("num_layers"), c.PositiveInt("vocab_size"), c.IntOrNull("relative_attention_num_buckets") ?? 32,
            c.IntOrNull("relative_attention_max_distance") ?? 128, c.Double("layer_norm_epsilon", 1e-6), act == "gelu" ? "gelu_new" : act, gated,
            c.Bool("tie_word_embeddings", true), c.IntOrNull("decoder_start_token_id") ?? 0, c.IntOrNull("eos_token_id"));
        var r = new WeightReader(source.Weights, source.Location, ScalarType.Float32, CPU);
        var w = new Dictionary<string, Tensor>();
        long inner = cfg.NHeads * cfg.DKv;
        void Take(string name, params long[] shape) => w[name] = r.Take(name, shape).DetachFromDisposeScope();
        Take("shared.weight", cfg.VocabSize, d);
        r.Ignore(n => n is "encoder.embed_tokens.weight" or "decoder.embed_tokens.weight");
        foreach (var (stack, layers) in new[] { ("encoder", cfg.EncoderLayers), ("decoder", cfg.DecoderLayers) })
        {
            for (int l = 0; l < layers; l++)
            {
                string b = $"{stack}.block.{l}.layer.";
                foreach (var p in new[] { "q", "k", "v" }) Take($"{b}0.SelfAttention.{p}.weight", inner, d);
                Take($"{b}0.SelfAttention.o.weight", d, inner);
                Take($"{b}0.layer_norm.weight", d);
                if (l == 0) Take($"{b}0.SelfAttention.relative_attention_bias.weight", cfg.Buckets, cfg.NHeads);
                int ffIndex = 1;
                if (stack == "decoder")
                {
                    foreach (var p in new[] { "q", "k", "v" }) Take($"{b}1.EncDecAttention.{p}.weight", inner, d);
                    Take($"{b}1.EncDecAttention.o.weight", d, inner);
                    Take($"{b}1.layer_norm.weight", d);
                    ffIndex = 2;
                }
                if (gated) { Take($"{b}{ffIndex}.DenseReluDense.wi_0.weight", cfg.DFf, d); Take($"{b}{ffIndex}.DenseReluDense.wi_1.weight", cfg.DFf, d); }
                else Take($"{b}{ffIndex}.DenseReluDense.wi.weight", cfg.DFf, d);
                Take($"{b}{ffIndex}.DenseReluDense.wo.weight", d, cfg.DFf);
                Take($"{b}{ffIndex}.layer_norm.weight", d);
            }
            Take($"{stack}.final_layer_norm.weight", d);
        }
        if (!cfg.Tied) Take("lm_head.weight", cfg.VocabSize, d); else r.Ignore(n => n == "lm_head.weight");
        r.EnsureAllUsed();
        return new HookedEncoderDecoder(cfg, w, source.Tokenizer, source.Name);
    }

    /// <summary>One run's hooks and cache: every point fires through <see cref="HookDispatch"/>, as in every model.</summary>
    sealed class Run(IReadOnlyList<ForwardHookSpec> hooks, ActivationCache? cache, Func<string, bool>? cached)
    {
        public Tensor Hook(string name, int? layer, Tensor x)
        {
            x = HookDispatch.Forward(hooks, name, layer, x);
            if (cache is not null && cached?.Invoke(name) != false) cache.Store(name, x.DetachedClone());
            return x;
        }
    }

    /// <summary>Checks a hook name (with the same kind of suggestion the decoder models give).</summary>
    public void CheckHook(string name) => HookPoints.Check(name);

    /// <summary>
    /// Hooks active until the returned handle is disposed (<c>using var _ = model.Hooks(...)</c>), visible only to runs in the
    /// same async flow, as the decoder models' scoped hooks.
    /// </summary>
    public IDisposable Hooks(params ForwardHookSpec[] hooks) => _hookScopes.Add(hooks);

    /// <summary>Adds a hook that stays until <see cref="ResetHooks"/>.</summary>
    public void AddPermanentHook(HookFilter filter, ForwardHook hook) => _hookScopes.AddPermanent(filter, hook);

    /// <summary>Removes all permanent hooks.</summary>
    public void ResetHooks() => _hookScopes.Reset();

    Run NewRun(IReadOnlyList<ForwardHookSpec>? hooks, ActivationCache? cache, Func<string, bool>? cached)
    {
        foreach (var h in hooks ?? Array.Empty<ForwardHookSpec>()) if (h.Filter.ExactName is { } n) HookPoints.Check(n);
        var all = _hookScopes.Active();
        all.AddRange(hooks ?? Array.Empty<ForwardHookSpec>());
        return new Run(all, cache, cached);
    }

    /// <summary>Logits [batch, dec_pos, vocab] of a teacher-forced run; hooks may read or replace activations.</summary>
    public Tensor Forward(Tensor inputIds, Tensor decoderInputIds, Tensor? attentionMask = null, IReadOnlyList<ForwardHookSpec>? hooks = null) =>
        Execute(inputIds, decoderInputIds, attentionMask, NewRun(hooks, null, null));

    /// <summary>Logits and the activations at every hook point that <paramref name="names"/> accepts (all by default); dispose the cache when done.</summary>
    public (Tensor Logits, ActivationCache Cache) RunWithCache(Tensor inputIds, Tensor decoderInputIds, Tensor? attentionMask = null, Func<string, bool>? names = null,
        IReadOnlyList<ForwardHookSpec>? hooks = null)
    {
        var cache = new ActivationCache(HookPoints, Name);
        try { return (Execute(inputIds, decoderInputIds, attentionMask, NewRun(hooks, cache, names)), cache); }
        catch { cache.Dispose(); throw; }
    }

    Tensor Execute(Tensor inputIds, Tensor decoderIds, Tensor? mask, Run run)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        Check(inputIds, "input_ids"); Check(decoderIds, "decoder_input_ids");
        if (mask is not null && !mask.shape.SequenceEqual(inputIds.shape)) throw new MechanistException($"attention_mask is [{string.Join(", ", mask.shape)}]; input_ids is [{string.Join(", ", inputIds.shape)}]");
        if (decoderIds.shape[0] != inputIds.shape[0]) throw new MechanistException("input_ids and decoder_input_ids need the same batch");
        var enc = Encode(inputIds, mask, run);
        var logits = Decode(decoderIds, enc, mask, run);
        return logits.MoveToOuterDisposeScope();
    }

    void Check(Tensor ids, string what)
    {
        if (ids.dtype != ScalarType.Int64 || ids.dim() != 2 || ids.shape[1] == 0) throw new MechanistException($"{what} must be an int64 tensor [batch, pos]");
        long min = ids.min().item<long>(), max = ids.max().item<long>();
        if (min < 0 || max >= Config.VocabSize) throw new MechanistException($"{what}: token id {(min < 0 ? min : max)} is outside the vocabulary (0..{Config.VocabSize - 1})");
    }

    Tensor Norm(Tensor x, string weight)
    {
        var xf = x.to(ScalarType.Float32);
        return _w[weight] * (xf * xf.Square().mean(new long[] { -1 }, keepdim: true).add(Scalars.Of(Config.Eps), Scalars.One).rsqrt()).to(x.dtype);
    }

    /// <summary>T5's relative-position bias [1, heads, queries, keys] from block 0's table; the queries sit at positions from <paramref name="queryStart"/>.</summary>
    Tensor PositionBias(long queries, long keys, bool bidirectional, string table, long queryStart = 0)
    {
        var rel = SafeOps.Arange(keys).unsqueeze(0) - SafeOps.Arange(queryStart, queryStart + queries).unsqueeze(1);
        int n = Config.Buckets;
        var buckets = zeros_like(rel);
        if (bidirectional)
        {
            n /= 2;
            buckets = buckets.Add(rel.Gt(0).to(ScalarType.Int64).Mul((long)n));
            rel = rel.abs();
        }
        else rel = -rel.clamp_max(Scalars.Int(0));
        int maxExact = n / 2;
        var isSmall = rel.Lt(maxExact);
        var large = rel.to(ScalarType.Float32).Div(maxExact).log().Div(Math.Log(Config.MaxDistance / (double)maxExact)).Mul((double)(n - maxExact));
        var largeBucket = large.to(ScalarType.Int64).Add((long)maxExact).clamp_max(Scalars.Int(n - 1));
        buckets = buckets.Add(where(isSmall, rel, largeBucket));
        return _w[table].index_select(0, buckets.flatten()).view(buckets.shape[0], buckets.shape[1], -1).permute(2, 0, 1).unsqueeze(0);
    }

    /// <summary>
    /// Keys and values kept between decoding steps: a decoder layer's self-attention (grown by each step's positions) or its
    /// cross-attention (the encoder's, computed once).
    /// </summary>
    sealed class KeyValues : IDisposable
    {
        public Tensor? K, V;
        public void Set(Tensor k, Tensor v) { K?.Dispose(); V?.Dispose(); K = k.DetachFromDisposeScope(); V = v.DetachFromDisposeScope(); }
        public void Dispose() { K?.Dispose(); V?.Dispose(); }
    }

    /// <summary>The decoder's kept keys and values while generating, and how many positions they hold.</summary>
    sealed class DecoderCache(int layers) : IDisposable
    {
        public readonly KeyValues[] Self = Enumerable.Range(0, layers).Select(_ => new KeyValues()).ToArray();
        public readonly KeyValues[] Cross = Enumerable.Range(0, layers).Select(_ => new KeyValues()).ToArray();
        public long Length;
        public void Dispose() { foreach (var kv in Self.Concat(Cross)) kv.Dispose(); }
    }

    /// <summary>
    /// One attention sublayer. With <paramref name="kept"/>, self-attention appends this step's keys and values to the kept ones
    /// (hooks see this step's), and cross-attention computes the encoder's keys and values on its first step only.
    /// </summary>
    Tensor Attention(Run run, AttentionNames n, int l, Tensor x, Tensor kv, Tensor bias, string w, KeyValues? kept = null, bool cross = false)
    {
        long b = x.shape[0], q = x.shape[1], k = kv.shape[1]; int h = Config.NHeads, dk = Config.DKv;
        var qh = run.Hook(n.Q, l, F.linear(x, _w[w + "q.weight"]).view(b, q, h, dk));
        Tensor kh, vh;
        if (cross && kept?.K is not null) (kh, vh) = (kept.K, kept.V!);
        else
        {
            kh = run.Hook(n.K, l, F.linear(kv, _w[w + "k.weight"]).view(b, k, h, dk));
            vh = run.Hook(n.V, l, F.linear(kv, _w[w + "v.weight"]).view(b, k, h, dk));
            if (kept is not null)
            {
                if (!cross && kept.K is not null) (kh, vh) = (cat(new[] { kept.K, kh }, 1), cat(new[] { kept.V!, vh }, 1));
                kept.Set(kh, vh);
            }
        }
        // T5 does not divide the scores by sqrt(d_kv); the bias carries positions and the mask.
        var scores = run.Hook(n.Scores, l, matmul(qh.permute(0, 2, 1, 3), kh.permute(0, 2, 3, 1)).add(bias, Scalars.One));
        var pattern = run.Hook(n.Pattern, l, F.softmax(scores.to(ScalarType.Float32), -1).to(scores.dtype));
        var z = run.Hook(n.Z, l, matmul(pattern, vh.permute(0, 2, 1, 3)).permute(0, 2, 1, 3));
        return F.linear(z.reshape(b, q, h * dk), _w[w + "o.weight"]);
    }

    Tensor FeedForward(Run run, BlockNames n, Tensor x, string w)
    {
        Tensor Act(Tensor t) => Config.Activation == "relu" ? F.relu(t) : F.gelu(t, TorchSharp.Modules.GELU.Approximate.tanh);
        var pre = run.Hook(n.MlpPre, n.Layer, F.linear(x, _w[w + (Config.Gated ? "wi_0.weight" : "wi.weight")]));
        var post = run.Hook(n.MlpPost, n.Layer, Config.Gated ? Act(pre) * F.linear(x, _w[w + "wi_1.weight"]) : Act(pre));
        return F.linear(post, _w[w + "wo.weight"]);
    }

    static Tensor MaskBias(Tensor? mask, long batch, long keys)
    {
        if (mask is null) return zeros(batch, 1, 1, keys);
        var m = mask.to(ScalarType.Float32);
        return ones_like(m).sub(m).mul(Scalars.Of(float.MinValue)).view(batch, 1, 1, keys);
    }

    Tensor Encode(Tensor ids, Tensor? mask, Run run)
    {
        long b = ids.shape[0], p = ids.shape[1];
        var x = run.Hook(HookPoints.Name(HookStack.Encoder, HookKind.Embed), null, _w["shared.weight"].index_select(0, ids.flatten()).view(ids.shape[0], ids.shape[1], -1));
        var bias = PositionBias(p, p, true, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight").add(MaskBias(mask, b, p), Scalars.One);
        foreach (var n in _encoder)
        {
            int l = n.Layer; string w = $"encoder.block.{l}.layer.";
            x = run.Hook(n.ResidPre, l, x);
            var n1 = run.Hook(n.Ln1, l, Norm(x, w + "0.layer_norm.weight"));
            var attn = run.Hook(n.AttnOut, l, Attention(run, n.Self, l, n1, n1, bias, w + "0.SelfAttention."));
            x = run.Hook(n.ResidMid, l, x.add(attn, Scalars.One));
            var mlp = run.Hook(n.MlpOut, l, FeedForward(run, n, run.Hook(n.Ln2, l, Norm(x, w + "1.layer_norm.weight")), w + "1.DenseReluDense."));
            x = run.Hook(n.ResidPost, l, x.add(mlp, Scalars.One));
        }
        return run.Hook(HookPoints.Name(HookStack.Encoder, HookKind.LnFinalNormalized), null, Norm(x, "encoder.final_layer_norm.weight"));
    }

    /// <summary>
    /// The decoder over <paramref name="ids"/>; with <paramref name="cache"/>, <paramref name="ids"/> are the positions after the
    /// cached ones, whose keys and values are reused (and this step's added).
    /// </summary>
    Tensor Decode(Tensor ids, Tensor enc, Tensor? encMask, Run run, DecoderCache? cache = null)
    {
        long b = ids.shape[0], p = ids.shape[1], e = enc.shape[1], start = cache?.Length ?? 0, keys = start + p;
        var y = run.Hook(HookPoints.Name(HookStack.Decoder, HookKind.Embed), null, _w["shared.weight"].index_select(0, ids.flatten()).view(ids.shape[0], ids.shape[1], -1));
        var causal = ones(p, keys, dtype: ScalarType.Bool).triu(1 + start);
        var selfBias = PositionBias(p, keys, false, "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", start)
            .masked_fill(causal, Scalars.Of(float.MinValue));
        var crossBias = MaskBias(encMask, b, e);
        foreach (var n in _decoder)
        {
            int l = n.Layer; string w = $"decoder.block.{l}.layer.";
            y = run.Hook(n.ResidPre, l, y);
            var n1 = run.Hook(n.Ln1, l, Norm(y, w + "0.layer_norm.weight"));
            y = run.Hook(n.ResidMid, l, y.add(run.Hook(n.AttnOut, l, Attention(run, n.Self, l, n1, n1, selfBias, w + "0.SelfAttention.", cache?.Self[l])), Scalars.One));
            var n2 = run.Hook(n.Ln2, l, Norm(y, w + "1.layer_norm.weight"));
            y = run.Hook(n.ResidMidCross, l, y.add(run.Hook(n.CrossOut, l, Attention(run, n.Cross, l, n2, enc, crossBias, w + "1.EncDecAttention.", cache?.Cross[l], cross: true)), Scalars.One));
            var n3 = run.Hook(n.Ln3, l, Norm(y, w + "2.layer_norm.weight"));
            y = run.Hook(n.ResidPost, l, y.add(run.Hook(n.MlpOut, l, FeedForward(run, n, n3, w + "2.DenseReluDense.")), Scalars.One));
        }
        if (cache is not null) cache.Length = keys;
        y = run.Hook(HookPoints.Name(HookStack.Decoder, HookKind.LnFinalNormalized), null, Norm(y, "decoder.final_layer_norm.weight"));
        // Tied embeddings: the decoder output is rescaled by d_model^-0.5 before the shared unembedding.
        if (Config.Tied) y = y.mul(Scalars.Of(Math.Pow(Config.DModel, -0.5)));
        y = run.Hook(HookPoints.Name(HookStack.Decoder, HookKind.UnembedIn), null, y);
        return run.Hook(HookPoints.Name(HookStack.Decoder, HookKind.UnembedOut), null, F.linear(y, Config.Tied ? _w["shared.weight"] : _w["lm_head.weight"]));
    }

    /// <summary>Logits from any decoder residual [..., d_model]: the decoder's final norm, the tied rescale and the unembedding (the logit lens).</summary>
    public Tensor UnembedDecoderResidual(Tensor residual)
    {
        using var scope = NewDisposeScope();
        var y = Norm(residual.to(ScalarType.Float32), "decoder.final_layer_norm.weight");
        if (Config.Tied) y = y.mul(Scalars.Of(Math.Pow(Config.DModel, -0.5)));
        return F.linear(y, Config.Tied ? _w["shared.weight"] : _w["lm_head.weight"]).MoveToOuterDisposeScope();
    }

    /// <summary>An encoder input [1, pos] from text: the tokenizer's ids and EOS, as T5's tokenizer makes them.</summary>
    public Tensor InputIds(string text)
    {
        var tok = Tokenizer ?? throw new MechanistException($"{Name} has no tokenizer: give token ids, or a tokenizer (--tokenizer FILE)");
        var ids = tok.Encode(text, prependBos: false).Select(i => (long)i).ToList();
        if (Config.Eos is { } eos) ids.Add(eos);
        return tensor(ids.ToArray(), new long[] { 1, ids.Count });
    }

    /// <summary>Decoder ids [1, pos]: the decoder start token, then <paramref name="prefix"/>'s tokens (no EOS) when given.</summary>
    public Tensor DecoderIds(string? prefix)
    {
        var ids = new List<long> { Config.DecoderStart };
        if (!string.IsNullOrEmpty(prefix))
        {
            var tok = Tokenizer ?? throw new MechanistException($"{Name} has no tokenizer: give decoder token ids, or a tokenizer (--tokenizer FILE)");
            ids.AddRange(tok.Encode(prefix, prependBos: false).Select(i => (long)i));
        }
        return tensor(ids.ToArray(), new long[] { 1, ids.Count });
    }

    /// <summary>One token id for an answer: "#id", or text that the tokenizer makes one token.</summary>
    public long AnswerId(string answer)
    {
        if (answer.StartsWith('#') && long.TryParse(answer[1..], out long raw))
            return raw >= 0 && raw < Config.VocabSize ? raw : throw new MechanistException($"token id {raw} is outside the vocabulary");
        var tok = Tokenizer ?? throw new MechanistException($"{Name} has no tokenizer: give answers as #id");
        var ids = tok.Encode(answer, prependBos: false);
        return ids.Length == 1 ? ids[0] : throw new MechanistException($"answer '{answer}' is {ids.Length} tokens; give one token or #id");
    }

    /// <summary>A token's display text (its id when there is no tokenizer).</summary>
    public string TokenText(long id) => Tokenizer?.DisplayTokens(new[] { id })[0] ?? $"#{id}";

    /// <summary>
    /// Greedy decoding from the decoder start token given one encoder input [1, pos]. The encoder runs once; each step runs the
    /// decoder over the new token only, with its self-attention keys and values and the encoder's cross-attention keys and values
    /// kept from earlier steps (<paramref name="useCache"/> false reruns the decoder over the whole prefix each step, as before the
    /// cache: the same tokens, for comparison). Returns the decoder ids (start token first) and each step's logits.
    /// </summary>
    public (long[] Ids, float[][] StepLogits) Generate(Tensor inputIds, int maxNewTokens, bool stopAtEos = true, bool useCache = true)
    {
        if (inputIds.shape[0] != 1) throw new MechanistException("generate takes one encoder input");
        if (maxNewTokens < 1) throw new MechanistException("generate needs at least one new token");
        using var noGrad = no_grad();
        Check(inputIds, "input_ids");
        var run = NewRun(null, null, null);
        using var scope = NewDisposeScope();
        var enc = Encode(inputIds, null, run);
        var ids = new List<long> { Config.DecoderStart };
        var steps = new List<float[]>();
        using var cache = useCache ? new DecoderCache(Config.DecoderLayers) : null;
        for (int i = 0; i < maxNewTokens; i++)
        {
            using var step = NewDisposeScope();
            var next = useCache ? tensor(new[] { ids[^1] }, new long[] { 1, 1 }) : tensor(ids.ToArray(), new long[] { 1, ids.Count });
            var logits = Decode(next, enc, null, run, cache)[0, -1];
            steps.Add(logits.to(ScalarType.Float32).data<float>().ToArray());
            long chosen = logits.argmax().item<long>();
            ids.Add(chosen);
            if (stopAtEos && Config.Eos is { } eos && chosen == eos) break;
        }
        return (ids.ToArray(), steps.ToArray());
    }

    /// <inheritdoc/>
    public void Dispose() { foreach (var t in _w.Values) t.Dispose(); }
}
