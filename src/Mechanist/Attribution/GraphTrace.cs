using Mechanist.Analysis;
using Mechanist.Dictionaries.Formats;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>What one trace produced.</summary>
/// <param name="Path">The graph file.</param>
/// <param name="Nodes">Nodes of the full graph.</param>
/// <param name="ActiveFeatures">Feature nodes.</param>
/// <param name="LogitTargets">Logit nodes.</param>
/// <param name="KeptNodes">Nodes kept by pruning.</param>
/// <param name="KeptEdges">Edges kept by pruning.</param>
/// <param name="Replacement">Replacement score.</param>
/// <param name="Completeness">Completeness score.</param>
/// <param name="Seconds">Time taken.</param>
/// <param name="QkSeconds">Of which the head loadings and QK attributions took.</param>
/// <param name="QkScores">Attention scores decomposed.</param>
/// <param name="Edges">Edges of the full graph, before pruning.</param>
/// <param name="PruneSeconds">Of which pruning and scoring the graph took (they run over every edge).</param>
public sealed record GraphTraceSummary(string Path, int Nodes, int ActiveFeatures, int LogitTargets, int KeptNodes, long KeptEdges, double Replacement, double Completeness, double Seconds,
    double QkSeconds = 0, int QkScores = 0, long Edges = 0, double PruneSeconds = 0);

/// <summary>Traces a prompt into a pruned graph file (circuit-tracer's frontend JSON): what <c>mechanist trace</c> and the workbench's graph view run.</summary>
public static class GraphTrace
{
    /// <summary>
    /// Builds the replacement model (with <paramref name="bundle"/>'s transcoders; none for an attention-only model), attributes, prunes
    /// and writes <paramref name="path"/> atomically; <paramref name="inspect"/>, when given,
    /// sees the graph and its pruning before they are disposed; <paramref name="promptText"/> is written as the metadata's prompt.
    /// </summary>
    public static GraphTraceSummary Write(HookedTransformer model, TranscoderBundle? bundle, Tensor tokens, string path, AttributionOptions options,
        double nodeThreshold = 0.8, double edgeThreshold = 0.98, bool prune = true, string? slug = null, string scan = "mechanist",
        Action<AttributionGraph, PrunedGraph>? inspect = null, string? promptText = null, GraphQkOptions? qk = null)
    {
        if (tokens.shape[0] != 1) throw new MechanistException("trace takes one prompt");
        if (tokens.shape[1] > model.Config.NCtx) throw new MechanistException($"the prompt is {tokens.shape[1]} tokens; the model's context is {model.Config.NCtx}");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var rm = bundle is null ? ReplacementModel.AttentionOnly(model, tokens) : ReplacementModel.Build(model, bundle.Dictionary, bundle.Input, tokens);
        using var gradients = qk is null ? null : new ZGradientCache(qk.GradientBudgetMb * (1L << 20));
        var graph = Attributor.Attribute(rm, options with { ZGradients = gradients });
        double pruneStart = clock.Elapsed.TotalSeconds;
        using var pruned = Pruning.Prune(graph, nodeThreshold, edgeThreshold);
        var scores = Pruning.Scores(graph, pruned);
        double attributed = clock.Elapsed.TotalSeconds;
        var attention = qk is null ? null : GraphQk.Build(rm, graph, pruned, prune, qk, options.Targets, gradients);
        GraphFile.Write(path, graph, pruned, prune, nodeThreshold, slug: slug ?? System.IO.Path.GetFileNameWithoutExtension(path), scan: scan,
            tokenText: model.Tokenizer is null ? null : id => TokenText.Of(model, id), promptText: promptText, maxFeatureNodes: options.MaxFeatureNodes, qk: attention);
        inspect?.Invoke(graph, pruned);
        return new GraphTraceSummary(path, graph.Nodes.Length, graph.Nodes.Count(n => n.Kind == NodeKind.Feature), graph.Nodes.Count(n => n.Kind == NodeKind.Logit),
            pruned.NodeMask.Count(k => k), pruned.KeptEdges, scores.Replacement, scores.Completeness, clock.Elapsed.TotalSeconds,
            attention is null ? 0 : clock.Elapsed.TotalSeconds - attributed, attention?.Scores.Count ?? 0, graph.Edges.Count, attributed - pruneStart);
    }
}
