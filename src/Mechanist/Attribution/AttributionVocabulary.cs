namespace Mechanist.Attribution;

/// <summary>
/// The words and bounds of attribution and intervention requests, spelled once: the CLI's <c>trace</c> and <c>intervene</c>
/// and the workbench's graph endpoints parse through these, so both give the same answers and the same errors.
/// </summary>
public static class AttributionVocabulary
{
    /// <summary>Default share of the influence kept by node pruning (circuit-tracer's default).</summary>
    public const double DefaultNodeThreshold = 0.8;

    /// <summary>Default share of the edge scores kept by edge pruning (circuit-tracer's default).</summary>
    public const double DefaultEdgeThreshold = 0.98;

    /// <summary>The workbench's default feature-node budget of a trace (the CLI's default is every active feature); either is written in the graph's metadata.</summary>
    public const int DefaultWorkbenchFeatureNodes = 400;

    /// <summary>Intervention modes: free (circuit-tracer's default), constrained, replacement.</summary>
    public static readonly NameTable<InterventionMode> Modes = new("intervention mode",
        new[] { (InterventionMode.Free, "free"), (InterventionMode.Constrained, "constrained"), (InterventionMode.Replacement, "replacement") });

    /// <summary>A share in (0, 1] (a pruning threshold, a logit probability mass); a clear error naming <paramref name="what"/> otherwise.</summary>
    public static double Share(string what, double value) =>
        value > 0 && value <= 1 ? value : throw new MechanistException($"the {what} must be in (0, 1] (got {value})");

    /// <summary>Node and edge pruning thresholds, defaulted and checked.</summary>
    public static (double Node, double Edge) Thresholds(double? node, double? edge) =>
        (Share("node threshold", node ?? DefaultNodeThreshold), Share("edge threshold", edge ?? DefaultEdgeThreshold));
}
