using Mechanist.Models;

namespace Mechanist.Hooks;

/// <summary>What a hook point holds. Each kind has one TransformerLens name (per layer for block kinds).</summary>
public enum HookKind
{
#pragma warning disable CS1591 // the TransformerLens names below say what each kind is
    Embed, PosEmbed,
    ResidPre, Ln1Scale, Ln1Normalized, Q, K, V, RotQ, RotK, AttnScores, Pattern, Z, Result,
    Ln1PostScale, Ln1PostNormalized, AttnOut, ResidMid, Ln2Scale, Ln2Normalized,
    MlpPre, MlpPreLinear, MlpPost, RouterLogits, ExpertIndices, ExpertWeights, ExpertOut, Ln2PostScale, Ln2PostNormalized, MlpOut, ResidPost,
    LnFinalScale, LnFinalNormalized, UnembedIn, UnembedOut,
    // An encoder-decoder's decoder blocks: cross-attention to the encoder, and the norm before the MLP.
    CrossQ, CrossK, CrossV, CrossAttnScores, CrossPattern, CrossZ, CrossAttnOut, ResidMidCross, Ln3Normalized,
    /// <summary>A point added by something spliced into a run (a sparse dictionary's activations, say).</summary>
    Spliced,
#pragma warning restore CS1591
}

/// <summary>Which stack of blocks a hook point belongs to.</summary>
public enum HookStack
{
    /// <summary>A decoder-only or encoder-only model's one stack (<c>blocks.L.…</c>).</summary>
    Main,
    /// <summary>An encoder-decoder's encoder (<c>encoder.L.…</c>).</summary>
    Encoder,
    /// <summary>An encoder-decoder's decoder (<c>decoder.L.…</c>).</summary>
    Decoder,
}

/// <summary>One hook point of a model.</summary>
/// <param name="Name">TransformerLens name, e.g. <c>blocks.3.attn.hook_pattern</c>.</param>
/// <param name="Kind">What it holds.</param>
/// <param name="Layer">Block index, or null for model-level points.</param>
/// <param name="Shape">Shape for a [batch, pos] input, with batch and pos symbolic.</param>
/// <param name="Order">Position in forward order.</param>
/// <param name="NeedsAttnResult">Fires only in runs with <see cref="RunOptions.UseAttnResult"/> (per-head outputs cost memory).</param>
/// <param name="Stack">The stack it belongs to (an encoder-decoder has two).</param>
public sealed record HookPoint(string Name, HookKind Kind, int? Layer, HookShape Shape, int Order, bool NeedsAttnResult = false, HookStack Stack = HookStack.Main);

/// <summary>
/// Every hook point of one model, built once from its configuration: the single place where hook
/// names are spelled. The forward, the cache, <c>mechanist hooks</c>, the analyses and the web ask it
/// by kind and layer; names from users are checked against it (with suggestions). Runs that splice in
/// extra modules extend it with their own points (<see cref="With"/>).
/// </summary>
public sealed class HookRegistry
{
    readonly List<HookPoint> _points;
    readonly Dictionary<string, HookPoint> _byName;
    readonly Dictionary<(HookStack, HookKind, int), HookPoint> _byKindLayer;

    /// <summary>The registry of a model with this configuration.</summary>
    public HookRegistry(TransformerConfig cfg) : this(Build(cfg), cfg.NLayers) { }

    HookRegistry(List<HookPoint> points, int layers)
    {
        _points = points;
        Layers = layers;
        _byName = points.ToDictionary(p => p.Name, StringComparer.Ordinal);
        _byKindLayer = new();
        foreach (var p in points.Where(p => p.Kind != HookKind.Spliced)) _byKindLayer[(p.Stack, p.Kind, p.Layer ?? -1)] = p;
    }

    /// <summary>Number of blocks.</summary>
    public int Layers { get; }

    /// <summary>Every point in forward order (attn.hook_result included; see <see cref="HookPoint.NeedsAttnResult"/>).</summary>
    public IReadOnlyList<HookPoint> Points => _points;

    /// <summary>The points that fire in a run with or without per-head results.</summary>
    public IEnumerable<HookPoint> Firing(bool attnResult) => _points.Where(p => attnResult || !p.NeedsAttnResult);

    /// <summary>The TransformerLens name of a kind at a layer (layer ignored for model-level kinds).</summary>
    public static string NameOf(HookKind kind, int layer = -1)
    {
        string b = $"blocks.{layer}.";
        return kind switch
        {
            HookKind.Embed => "hook_embed",
            HookKind.PosEmbed => "hook_pos_embed",
            HookKind.LnFinalScale => "ln_final.hook_scale",
            HookKind.LnFinalNormalized => "ln_final.hook_normalized",
            HookKind.UnembedIn => "unembed.hook_in",
            HookKind.UnembedOut => "unembed.hook_out",
            HookKind.Spliced => throw new MechanistException("spliced hook points have no fixed name"),
            _ when layer < 0 => throw new MechanistException($"{kind} is a per-layer hook point: give a layer"),
            HookKind.ResidPre => b + "hook_resid_pre",
            HookKind.Ln1Scale => b + "ln1.hook_scale",
            HookKind.Ln1Normalized => b + "ln1.hook_normalized",
            HookKind.Q => b + "attn.hook_q",
            HookKind.K => b + "attn.hook_k",
            HookKind.V => b + "attn.hook_v",
            HookKind.RotQ => b + "attn.hook_rot_q",
            HookKind.RotK => b + "attn.hook_rot_k",
            HookKind.AttnScores => b + "attn.hook_attn_scores",
            HookKind.Pattern => b + "attn.hook_pattern",
            HookKind.Z => b + "attn.hook_z",
            HookKind.Result => b + "attn.hook_result",
            HookKind.Ln1PostScale => b + "ln1_post.hook_scale",
            HookKind.Ln1PostNormalized => b + "ln1_post.hook_normalized",
            HookKind.AttnOut => b + "hook_attn_out",
            HookKind.ResidMid => b + "hook_resid_mid",
            HookKind.Ln2Scale => b + "ln2.hook_scale",
            HookKind.Ln2Normalized => b + "ln2.hook_normalized",
            HookKind.MlpPre => b + "mlp.hook_pre",
            HookKind.MlpPreLinear => b + "mlp.hook_pre_linear",
            HookKind.MlpPost => b + "mlp.hook_post",
            HookKind.RouterLogits => b + "mlp.hook_router_logits",
            HookKind.ExpertIndices => b + "mlp.hook_expert_indices",
            HookKind.ExpertWeights => b + "mlp.hook_expert_weights",
            HookKind.ExpertOut => b + "mlp.hook_expert_out",
            HookKind.Ln2PostScale => b + "ln2_post.hook_scale",
            HookKind.Ln2PostNormalized => b + "ln2_post.hook_normalized",
            HookKind.MlpOut => b + "hook_mlp_out",
            HookKind.ResidPost => b + "hook_resid_post",
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
    }

    /// <summary>
    /// The kind named by TransformerLens's short activation names (utils.get_act_name): resid_pre, resid_mid,
    /// resid_post, attn_out, mlp_out, q, k, v, rot_q, rot_k, z, result, pattern (or attn), attn_scores,
    /// pre, pre_linear, post, scale, normalized (ln1's).
    /// </summary>
    public static HookKind ParseShortName(string kind) => kind switch
    {
        "resid_pre" => HookKind.ResidPre, "resid_mid" => HookKind.ResidMid, "resid_post" => HookKind.ResidPost,
        "attn_out" => HookKind.AttnOut, "mlp_out" => HookKind.MlpOut,
        "q" => HookKind.Q, "k" => HookKind.K, "v" => HookKind.V, "rot_q" => HookKind.RotQ, "rot_k" => HookKind.RotK,
        "z" => HookKind.Z, "result" => HookKind.Result, "pattern" or "attn" => HookKind.Pattern, "attn_scores" => HookKind.AttnScores,
        "pre" => HookKind.MlpPre, "pre_linear" => HookKind.MlpPreLinear, "post" => HookKind.MlpPost,
        "scale" => HookKind.Ln1Scale, "normalized" => HookKind.Ln1Normalized,
        _ => throw new MechanistException($"unknown activation kind '{kind}' (use resid_pre, resid_mid, resid_post, attn_out, mlp_out, q, k, v, rot_q, rot_k, z, result, pattern, attn_scores, pre, pre_linear, post, scale or normalized)"),
    };

    /// <summary>TransformerLens's short name of a per-layer kind ("resid_pre", "pattern", ...): the inverse of <see cref="ParseShortName"/>.</summary>
    public static string ShortName(HookKind kind) => kind switch
    {
        HookKind.ResidPre => "resid_pre", HookKind.ResidMid => "resid_mid", HookKind.ResidPost => "resid_post",
        HookKind.AttnOut => "attn_out", HookKind.MlpOut => "mlp_out",
        HookKind.Q => "q", HookKind.K => "k", HookKind.V => "v", HookKind.RotQ => "rot_q", HookKind.RotK => "rot_k",
        HookKind.Z => "z", HookKind.Result => "result", HookKind.Pattern => "pattern", HookKind.AttnScores => "attn_scores",
        HookKind.MlpPre => "pre", HookKind.MlpPreLinear => "pre_linear", HookKind.MlpPost => "post",
        HookKind.Ln1Scale => "scale", HookKind.Ln1Normalized => "normalized",
        _ => throw new MechanistException($"{kind} has no short name"),
    };

    /// <summary>The point of a kind at a layer; a clear error when this model has none.</summary>
    public HookPoint Get(HookKind kind, int layer = -1) => Get(HookStack.Main, kind, layer);

    /// <summary>The point of a kind at a layer of one stack (an encoder-decoder's encoder or decoder); a clear error when there is none.</summary>
    public HookPoint Get(HookStack stack, HookKind kind, int layer = -1)
    {
        if (_byKindLayer.TryGetValue((stack, kind, IsModelLevel(kind) ? -1 : layer), out var p)) return p;
        if (stack != HookStack.Main) throw new MechanistException($"this model has no {kind} hook point at {stack.ToString().ToLowerInvariant()} layer {layer}");
        if (!IsModelLevel(kind) && (layer < 0 || layer >= Layers)) throw new MechanistException($"layer {layer} is outside the model's 0..{Layers - 1}");
        throw new MechanistException($"this model has no {NameOf(kind, layer)} hook point");
    }

    /// <summary>The name of a kind at a layer, checked against this model.</summary>
    public string Name(HookKind kind, int layer = -1) => Get(kind, layer).Name;

    /// <summary>The name of a kind at a layer of one stack, checked against this model.</summary>
    public string Name(HookStack stack, HookKind kind, int layer = -1) => Get(stack, kind, layer).Name;

    /// <summary>Whether this model has a point of this kind (at any layer).</summary>
    public bool Has(HookKind kind) => _points.Any(p => p.Kind == kind);

    /// <summary>Whether <paramref name="name"/> is a hook point.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The point of a name, or null.</summary>
    public HookPoint? Find(string name) => _byName.GetValueOrDefault(name);

    /// <summary>The points of some kinds, in forward order.</summary>
    public IEnumerable<HookPoint> OfKind(params HookKind[] kinds) => _points.Where(p => kinds.Contains(p.Kind));

    /// <summary>A name filter for <c>RunWithCache</c> selecting every point of these kinds.</summary>
    public Func<string, bool> Selector(params HookKind[] kinds)
    {
        var names = OfKind(kinds).Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        return names.Contains;
    }

    /// <summary>Throws an error suggesting the closest names when <paramref name="name"/> is not a hook point.</summary>
    public void Check(string name, string what = "hook point")
    {
        if (_byName.ContainsKey(name)) return;
        var closest = _points.OrderBy(p => Levenshtein(p.Name, name)).Take(3);
        throw new MechanistException($"unknown {what} '{name}'; did you mean {string.Join(", ", closest.Select(c => $"'{c.Name}'"))}? ('mechanist hooks' lists them all)");
    }

    /// <summary>
    /// This registry plus points that a spliced module adds beneath a parent point, named
    /// "{parent}.{suffix}" as SAELens names them (e.g. <c>blocks.3.hook_mlp_out.hook_sae_acts_post</c>).
    /// </summary>
    public HookRegistry With(IEnumerable<(string Parent, string Suffix, HookShape Shape)> added)
    {
        var list = new List<HookPoint>(_points);
        foreach (var (parent, suffix, shape) in added)
        {
            var p = Find(parent) ?? throw new MechanistException($"cannot splice at '{parent}': not a hook point");
            string name = SplicePoints.Under(parent, suffix);
            if (list.Any(x => x.Name == name)) continue;
            int at = list.FindLastIndex(x => x.Name == parent || x.Name.StartsWith(parent + ".", StringComparison.Ordinal)) + 1;
            list.Insert(at, new HookPoint(name, HookKind.Spliced, p.Layer, shape, 0));
        }
        return new HookRegistry(list.Select((x, i) => x with { Order = i }).ToList(), Layers);
    }

    /// <summary>
    /// The registry of a T5-style encoder-decoder, with TransformerLens's encoder-decoder names: <c>hook_embed</c>,
    /// <c>encoder.L.…</c>, <c>encoder_final_ln.hook_normalized</c>, <c>hook_decoder_embed</c>, <c>decoder.L.…</c> (with
    /// <c>cross_attn.…</c>), <c>decoder_final_ln.hook_normalized</c>, <c>unembed.hook_in/out</c>.
    /// </summary>
    public static HookRegistry ForEncoderDecoder(EncoderDecoderConfig c)
    {
        long d = c.DModel, h = c.NHeads, dk = c.DKv, B = HookShape.Batch, E = HookShape.EncPos, D = HookShape.DecPos;
        var points = new List<HookPoint>();
        void Add(string name, HookStack stack, HookKind kind, int? layer, params long[] dims) =>
            points.Add(new HookPoint(name, kind, layer, new HookShape(dims), points.Count, Stack: stack));
        void Attention(string p, HookStack stack, int l, HookKind[] k, long queries, long keys)
        {
            Add(p + "hook_q", stack, k[0], l, B, queries, h, dk);
            Add(p + "hook_k", stack, k[1], l, B, keys, h, dk);
            Add(p + "hook_v", stack, k[2], l, B, keys, h, dk);
            Add(p + "hook_attn_scores", stack, k[3], l, B, h, queries, keys);
            Add(p + "hook_pattern", stack, k[4], l, B, h, queries, keys);
            Add(p + "hook_z", stack, k[5], l, B, queries, h, dk);
        }
        void Block(HookStack stack, int l)
        {
            string p = $"{(stack == HookStack.Encoder ? "encoder" : "decoder")}.{l}.";
            long P = stack == HookStack.Encoder ? E : D;
            Add(p + "hook_resid_pre", stack, HookKind.ResidPre, l, B, P, d);
            Add(p + "ln1.hook_normalized", stack, HookKind.Ln1Normalized, l, B, P, d);
            Attention(p + "attn.", stack, l, new[] { HookKind.Q, HookKind.K, HookKind.V, HookKind.AttnScores, HookKind.Pattern, HookKind.Z }, P, P);
            Add(p + "hook_attn_out", stack, HookKind.AttnOut, l, B, P, d);
            Add(p + "hook_resid_mid", stack, HookKind.ResidMid, l, B, P, d);
            Add(p + "ln2.hook_normalized", stack, HookKind.Ln2Normalized, l, B, P, d);
            if (stack == HookStack.Decoder)
            {
                // Decoder queries over encoder keys and values.
                Attention(p + "cross_attn.", stack, l, new[] { HookKind.CrossQ, HookKind.CrossK, HookKind.CrossV, HookKind.CrossAttnScores, HookKind.CrossPattern, HookKind.CrossZ }, D, E);
                Add(p + "hook_cross_attn_out", stack, HookKind.CrossAttnOut, l, B, D, d);
                Add(p + "hook_resid_mid_cross", stack, HookKind.ResidMidCross, l, B, D, d);
                Add(p + "ln3.hook_normalized", stack, HookKind.Ln3Normalized, l, B, D, d);
            }
            Add(p + "mlp.hook_pre", stack, HookKind.MlpPre, l, B, P, c.DFf);
            Add(p + "mlp.hook_post", stack, HookKind.MlpPost, l, B, P, c.DFf);
            Add(p + "hook_mlp_out", stack, HookKind.MlpOut, l, B, P, d);
            Add(p + "hook_resid_post", stack, HookKind.ResidPost, l, B, P, d);
        }
        Add("hook_embed", HookStack.Encoder, HookKind.Embed, null, B, E, d);
        for (int l = 0; l < c.EncoderLayers; l++) Block(HookStack.Encoder, l);
        Add("encoder_final_ln.hook_normalized", HookStack.Encoder, HookKind.LnFinalNormalized, null, B, E, d);
        Add("hook_decoder_embed", HookStack.Decoder, HookKind.Embed, null, B, D, d);
        for (int l = 0; l < c.DecoderLayers; l++) Block(HookStack.Decoder, l);
        Add("decoder_final_ln.hook_normalized", HookStack.Decoder, HookKind.LnFinalNormalized, null, B, D, d);
        Add("unembed.hook_in", HookStack.Decoder, HookKind.UnembedIn, null, B, D, d);
        Add("unembed.hook_out", HookStack.Decoder, HookKind.UnembedOut, null, B, D, c.VocabSize);
        return new HookRegistry(points, Math.Max(c.EncoderLayers, c.DecoderLayers));
    }

    static bool IsModelLevel(HookKind k) => k is HookKind.Embed or HookKind.PosEmbed or HookKind.LnFinalScale or HookKind.LnFinalNormalized
        or HookKind.UnembedIn or HookKind.UnembedOut;

    static List<HookPoint> Build(TransformerConfig c)
    {
        long d = c.DModel, h = c.NHeads, kv = c.NKvHeads, dh = c.DHead, B = HookShape.Batch, P = HookShape.Pos;
        HookShape resid = HookShape.BatchPos(d), scale = HookShape.BatchPos(1), mlp = HookShape.BatchPos(c.DMlp);
        var points = new List<HookPoint>();
        void Add(HookKind kind, int layer, HookShape shape, bool needsResult = false) =>
            points.Add(new HookPoint(NameOf(kind, layer), kind, IsModelLevel(kind) ? null : layer, shape, points.Count, needsResult));

        Add(HookKind.Embed, -1, resid);
        if (c.Positional == PositionKind.Learned) Add(HookKind.PosEmbed, -1, resid);
        for (int l = 0; l < c.NLayers; l++)
        {
            Add(HookKind.ResidPre, l, resid);
            if (c.PreNorms) { Add(HookKind.Ln1Scale, l, scale); Add(HookKind.Ln1Normalized, l, resid); }
            Add(HookKind.Q, l, HookShape.BatchPos(h, dh)); Add(HookKind.K, l, HookShape.BatchPos(kv, dh)); Add(HookKind.V, l, HookShape.BatchPos(kv, dh));
            if (c.Positional == PositionKind.Rotary) { Add(HookKind.RotQ, l, HookShape.BatchPos(h, dh)); Add(HookKind.RotK, l, HookShape.BatchPos(kv, dh)); }
            Add(HookKind.AttnScores, l, new HookShape(B, h, P, P)); Add(HookKind.Pattern, l, new HookShape(B, h, P, P));
            Add(HookKind.Z, l, HookShape.BatchPos(h, dh));
            Add(HookKind.Result, l, HookShape.BatchPos(h, d), needsResult: true);
            if (c.PostNorms) { Add(HookKind.Ln1PostScale, l, scale); Add(HookKind.Ln1PostNormalized, l, resid); }
            Add(HookKind.AttnOut, l, resid);
            if (c.AttnOnly) { Add(HookKind.ResidPost, l, resid); continue; }
            if (!c.ParallelResidual) Add(HookKind.ResidMid, l, resid);
            if (c.PreNorms) { Add(HookKind.Ln2Scale, l, scale); Add(HookKind.Ln2Normalized, l, resid); }
            if (c.Moe is { } moe)
            {
                Add(HookKind.RouterLogits, l, HookShape.BatchPos(moe.Experts));
                Add(HookKind.ExpertIndices, l, HookShape.BatchPos(moe.TopK)); Add(HookKind.ExpertWeights, l, HookShape.BatchPos(moe.TopK));
                Add(HookKind.ExpertOut, l, HookShape.BatchPos(moe.TopK, d));
            }
            else
            {
                Add(HookKind.MlpPre, l, mlp);
                if (c.GatedMlp) Add(HookKind.MlpPreLinear, l, mlp);
                Add(HookKind.MlpPost, l, mlp);
            }
            if (c.PostNorms) { Add(HookKind.Ln2PostScale, l, scale); Add(HookKind.Ln2PostNormalized, l, resid); }
            Add(HookKind.MlpOut, l, resid); Add(HookKind.ResidPost, l, resid);
        }
        Add(HookKind.LnFinalScale, -1, scale); Add(HookKind.LnFinalNormalized, -1, resid);
        Add(HookKind.UnembedIn, -1, resid); Add(HookKind.UnembedOut, -1, HookShape.BatchPos(c.VocabSize));
        return points;
    }

    /// <summary>Edit distance, for name suggestions.</summary>
    public static int Levenshtein(string a, string b)
    {
        var d = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) d[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            int prev = d[0]; d[0] = i;
            for (int j = 1; j <= b.Length; j++)
            {
                int tmp = d[j];
                d[j] = Math.Min(Math.Min(d[j] + 1, d[j - 1] + 1), prev + (a[i - 1] == b[j - 1] ? 0 : 1));
                prev = tmp;
            }
        }
        return d[b.Length];
    }
}

/// <summary>The names of the points a spliced sparse dictionary adds beneath its anchor point (SAELens's names).</summary>
public static class SplicePoints
{
    /// <summary>What the dictionary reads.</summary>
    public const string Input = "hook_sae_input";
    /// <summary>Feature activations (editing them is a feature intervention).</summary>
    public const string Acts = "hook_sae_acts_post";
    /// <summary>The reconstruction.</summary>
    public const string Recons = "hook_sae_recons";
    /// <summary>What the reconstruction misses (true value − reconstruction).</summary>
    public const string Error = "hook_sae_error";

    /// <summary>The full name of a spliced point beneath <paramref name="parent"/>.</summary>
    public static string Under(string parent, string suffix) => $"{parent}.{suffix}";
}
