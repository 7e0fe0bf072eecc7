namespace Mechanist.Hooks;

/// <summary>One block's hook-point names, taken from <see cref="HookRegistry"/> once per model (the forward reads them per call).</summary>
public sealed class BlockHookNames
{
    /// <summary>Builds the names of block <paramref name="layer"/>.</summary>
    public BlockHookNames(int layer)
    {
        string N(HookKind k) => HookRegistry.NameOf(k, layer);
        ResidPre = N(HookKind.ResidPre); Ln1Scale = N(HookKind.Ln1Scale); Ln1Normalized = N(HookKind.Ln1Normalized);
        Q = N(HookKind.Q); K = N(HookKind.K); V = N(HookKind.V); RotQ = N(HookKind.RotQ); RotK = N(HookKind.RotK);
        AttnScores = N(HookKind.AttnScores); Pattern = N(HookKind.Pattern); Z = N(HookKind.Z); Result = N(HookKind.Result);
        AttnOut = N(HookKind.AttnOut); ResidMid = N(HookKind.ResidMid); Ln2Scale = N(HookKind.Ln2Scale); Ln2Normalized = N(HookKind.Ln2Normalized);
        MlpPre = N(HookKind.MlpPre); MlpPreLinear = N(HookKind.MlpPreLinear); MlpPost = N(HookKind.MlpPost); MlpOut = N(HookKind.MlpOut);
        ResidPost = N(HookKind.ResidPost);
        RouterLogits = N(HookKind.RouterLogits); ExpertIndices = N(HookKind.ExpertIndices); ExpertWeights = N(HookKind.ExpertWeights); ExpertOut = N(HookKind.ExpertOut);
        Ln1PostScale = N(HookKind.Ln1PostScale); Ln1PostNormalized = N(HookKind.Ln1PostNormalized);
        Ln2PostScale = N(HookKind.Ln2PostScale); Ln2PostNormalized = N(HookKind.Ln2PostNormalized);
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
    public string RouterLogits { get; }
    public string ExpertIndices { get; }
    public string ExpertWeights { get; }
    public string ExpertOut { get; }
    public string ResidPost { get; }
    public string Ln1PostScale { get; }
    public string Ln1PostNormalized { get; }
    public string Ln2PostScale { get; }
    public string Ln2PostNormalized { get; }
#pragma warning restore CS1591
}

/// <summary>Model-level hook names and TransformerLens's short names, from <see cref="HookRegistry"/>.</summary>
public static class HookNames
{
    /// <summary>Token embedding output.</summary>
    public static readonly string Embed = HookRegistry.NameOf(HookKind.Embed);
    /// <summary>Learned position embedding output.</summary>
    public static readonly string PosEmbed = HookRegistry.NameOf(HookKind.PosEmbed);
    /// <summary>Final norm scale.</summary>
    public static readonly string LnFinalScale = HookRegistry.NameOf(HookKind.LnFinalScale);
    /// <summary>Final norm normalized input (before its weight).</summary>
    public static readonly string LnFinalNormalized = HookRegistry.NameOf(HookKind.LnFinalNormalized);
    /// <summary>Input of the unembedding (after the final norm, weight included).</summary>
    public static readonly string UnembedIn = HookRegistry.NameOf(HookKind.UnembedIn);
    /// <summary>Logits (after soft-capping).</summary>
    public static readonly string UnembedOut = HookRegistry.NameOf(HookKind.UnembedOut);

    /// <summary>The name of a per-layer activation in the short form of TransformerLens's utils.get_act_name ("resid_pre", "pattern", ...).</summary>
    public static string Act(string kind, int layer) => HookRegistry.NameOf(HookRegistry.ParseShortName(kind), layer);

    /// <summary>The name of a kind at a layer.</summary>
    public static string Act(HookKind kind, int layer) => HookRegistry.NameOf(kind, layer);
}
