namespace Mechanist.Hooks;

/// <summary>The TransformerLens names of one block's hook points, built once per model.</summary>
public sealed class BlockHookNames
{
    /// <summary>Builds the names of block <paramref name="layer"/>.</summary>
    public BlockHookNames(int layer)
    {
        string b = $"blocks.{layer}.";
        ResidPre = b + "hook_resid_pre"; Ln1Scale = b + "ln1.hook_scale"; Ln1Normalized = b + "ln1.hook_normalized";
        Q = b + "attn.hook_q"; K = b + "attn.hook_k"; V = b + "attn.hook_v"; RotQ = b + "attn.hook_rot_q"; RotK = b + "attn.hook_rot_k";
        AttnScores = b + "attn.hook_attn_scores"; Pattern = b + "attn.hook_pattern"; Z = b + "attn.hook_z"; Result = b + "attn.hook_result";
        AttnOut = b + "hook_attn_out"; ResidMid = b + "hook_resid_mid"; Ln2Scale = b + "ln2.hook_scale"; Ln2Normalized = b + "ln2.hook_normalized";
        MlpPre = b + "mlp.hook_pre"; MlpPreLinear = b + "mlp.hook_pre_linear"; MlpPost = b + "mlp.hook_post"; MlpOut = b + "hook_mlp_out";
        ResidPost = b + "hook_resid_post";
        Ln1PostScale = b + "ln1_post.hook_scale"; Ln1PostNormalized = b + "ln1_post.hook_normalized";
        Ln2PostScale = b + "ln2_post.hook_scale"; Ln2PostNormalized = b + "ln2_post.hook_normalized";
    }

#pragma warning disable CS1591 // the names say what they are
    public string ResidPre { get; }
    public string Ln1Scale { get; }
    public string Ln1Normalized { get; }
    public string Q { get; }
    public string K { get; }
    public string V { get; }
    public string RotQ { get; }
    public string RotK { get; }
    public string AttnScores { get; }
    public string Pattern { get; }
    public string Z { get; }
    public string Result { get; }
    public string AttnOut { get; }
    public string ResidMid { get; }
    public string Ln2Scale { get; }
    public string Ln2Normalized { get; }
    public string MlpPre { get; }
    public string MlpPreLinear { get; }
    public string MlpPost { get; }
    public string MlpOut { get; }
    public string ResidPost { get; }
    public string Ln1PostScale { get; }
    public string Ln1PostNormalized { get; }
    public string Ln2PostScale { get; }
    public string Ln2PostNormalized { get; }
#pragma warning restore CS1591
}

/// <summary>Model-level hook names.</summary>
public static class HookNames
{
    /// <summary>Token embedding output.</summary>
    public const string Embed = "hook_embed";
    /// <summary>Learned position embedding output.</summary>
    public const string PosEmbed = "hook_pos_embed";
    /// <summary>Final norm scale.</summary>
    public const string LnFinalScale = "ln_final.hook_scale";
    /// <summary>Final norm normalized input (before its weight).</summary>
    public const string LnFinalNormalized = "ln_final.hook_normalized";
    /// <summary>Input of the unembedding (after the final norm, weight included).</summary>
    public const string UnembedIn = "unembed.hook_in";
    /// <summary>Logits (after soft-capping).</summary>
    public const string UnembedOut = "unembed.hook_out";

    /// <summary>The name of a per-layer activation in the short form of TransformerLens's utils.get_act_name.</summary>
    public static string Act(string kind, int layer) => kind switch
    {
        "resid_pre" or "resid_mid" or "resid_post" or "attn_out" or "mlp_out" => $"blocks.{layer}.hook_{kind}",
        "q" or "k" or "v" or "z" or "result" or "pattern" or "attn_scores" or "rot_q" or "rot_k" => $"blocks.{layer}.attn.hook_{kind}",
        "attn" => $"blocks.{layer}.attn.hook_pattern",
        "pre" or "post" or "pre_linear" => $"blocks.{layer}.mlp.hook_{kind}",
        "scale" => $"blocks.{layer}.ln1.hook_scale",
        "normalized" => $"blocks.{layer}.ln1.hook_normalized",
        _ => throw new MechanistException($"unknown activation kind '{kind}'"),
    };
}
