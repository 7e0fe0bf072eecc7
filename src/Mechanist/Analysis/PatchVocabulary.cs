namespace Mechanist.Analysis;

/// <summary>
/// The words of a patching request, spelled once: the CLI's <c>patch</c> and the workbench's patch endpoint parse through
/// these (targets: <see cref="PatchTargets"/>; metrics: <see cref="PatchMetric.Names"/>), so both give the same errors.
/// </summary>
public static class PatchVocabulary
{
    /// <summary>Patching methods: exact, attribution, both.</summary>
    public static readonly NameTable<PatchMethods> Methods = new("patching method",
        new[] { (PatchMethods.Exact, "exact"), (PatchMethods.Attribution, "attribution"), (PatchMethods.Both, "both") });

    /// <summary>
    /// Checks the options of an encoder-decoder patching request: it patches the residual stream exactly, with the answer's
    /// logit (or logit-diff) at the decoder's last position.
    /// </summary>
    public static void CheckEncoderDecoder(string? what, string? method, string? metric, int? position)
    {
        if (what is { Length: > 0 } && what != PatchTargets.Name(PatchTarget.Resid))
            throw new MechanistException($"an encoder-decoder patches the residual stream only (target resid; got '{Short(what)}')");
        if (method is { Length: > 0 } && method != Methods.Name(PatchMethods.Exact))
            throw new MechanistException($"an encoder-decoder is patched exactly only (method exact; got '{Short(method)}')");
        if (position is not null) throw new MechanistException("an encoder-decoder's metric reads the decoder's last position: give the decoder text instead of a position");
        if (metric is { Length: > 0 } && metric != "logit-diff")
            throw new MechanistException($"an encoder-decoder's patching metric is the answer's logit, or logit-diff with a wrong answer (got '{Short(metric)}')");
    }

    static string Short(string s) => s.Length > 80 ? s[..80] + "…" : s;
}
