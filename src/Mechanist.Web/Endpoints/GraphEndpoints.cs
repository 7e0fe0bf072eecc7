using Mechanist.Attribution;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Mechanist.Web;

/// <summary>
/// Attribution graphs: tracing a prompt into the graph folder, listing and reading graphs, saving a graph's state, and
/// interventions on a prompt's features. Traces run concurrently, each into its own temp file; only the commit (carry the
/// saved state over, rename, update the folder's index) takes the folder's write lock, which saves share.
/// </summary>
public sealed class GraphEndpoints(AnalysisRunner runner, RequestInputs inputs, string graphDir) : IDisposable
{
    static readonly System.Text.RegularExpressions.Regex Slug = new("^[A-Za-z0-9_-]{1,80}$");

    readonly SemaphoreSlim _folderWrite = new(1);

    /// <summary>Maps /api/graphs, /api/graphs/{slug}, its state, /api/graph and /api/intervene.</summary>
    public void Map(WebApplication app)
    {
        app.MapGet("/api/graphs", () =>
        {
            string? index = GraphFolders.Existing(graphDir, "graph-metadata.json");
            return Results.Text(index is null ? "{\"graphs\":[]}" : File.ReadAllText(index), "application/json; charset=utf-8");
        });
        app.MapGet("/api/graphs/{slug}", (string slug) =>
        {
            if (!Slug.IsMatch(slug)) return Answers.Fail(404, "no such graph");
            string? path = GraphFolders.Existing(graphDir, slug + ".json");
            return path is null ? Answers.Fail(404, $"no graph '{slug}'")
                : Results.Stream(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete), "application/json; charset=utf-8");
        });
        app.MapPost("/api/graphs/{slug}/state", SaveState);
        runner.PostCancellable<GraphRequest>(app, "/api/graph", Trace);
        runner.PostCancellable<InterveneRequest>(app, "/api/intervene", Intervene);
    }

    async Task<IResult> SaveState(HttpContext ctx, string slug)
    {
        if (!Slug.IsMatch(slug)) return Answers.Fail(404, "no such graph");
        if (GraphFolders.Existing(graphDir, slug + ".json") is null) return Answers.Fail(404, $"no graph '{slug}'");
        var (request, failure) = await Answers.ReadJson<GraphStateRequest>(ctx, runner.Options.MaxRequestBytes);
        if (request is null) return failure!;
        var pinned = request.PinnedIds ?? Array.Empty<string>();
        var groups = request.Supernodes ?? Array.Empty<string[]>();
        if (pinned.Length > 5000 || groups.Length > 500 || pinned.Concat(groups.SelectMany(g => g ?? Array.Empty<string>())).Any(id => id is null || id.Length > 200))
            return Answers.Fail(400, "too many pinned nodes or supernodes, or an id over 200 characters");
        if (groups.Any(g => g is null || g.Length < 2)) return Answers.Fail(400, "a supernode is [name, node id, ...] with at least one node");
        // The file is streamed into a temp file and renamed, so a kill leaves the old or the new state and memory stays
        // independent of the graph's size.
        await _folderWrite.WaitAsync(ctx.RequestAborted);
        try
        {
            string path = GraphFolders.Existing(graphDir, slug + ".json") ?? throw new MechanistException($"no graph '{slug}'");
            await Task.Run(() => GraphState.Save(path, pinned, groups), ctx.RequestAborted);
        }
        catch (MechanistException e) { return Answers.Fail(422, e.Message); }
        finally { _folderWrite.Release(); }
        return Results.Json(new { saved = slug, pinned = pinned.Length, supernodes = groups.Length }, Answers.Json);
    }

    object Trace(GraphRequest r, Models.HookedTransformer m, CancellationToken ct)
    {
        using var tokens = inputs.Tokens(m, r.Prompt);
        var models = runner.Models;
        string name = models.Resolve(r.Model);
        var bundle = m.Config.AttnOnly ? null : models.Transcoders(name, m);   // an attention-only model's graph needs none
        var (node, edge) = AttributionVocabulary.Thresholds(r.NodeThreshold, r.EdgeThreshold);
        int maxFeatures = Math.Clamp(r.MaxFeatureNodes ?? AttributionVocabulary.DefaultWorkbenchFeatureNodes, 1, 5000);
        string slug = "g-" + Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes($"{name}\n{r.Prompt}\n{maxFeatures}\n{node}\n{edge}")))[..12].ToLowerInvariant();
        string path = Path.Combine(graphDir, slug + ".json");
        string tmp = Path.Combine(graphDir, $".{slug}.{Guid.NewGuid():N}.tracing");
        var observer = runner.Options.Observer;
        try
        {
            GraphTrace.Write(m, bundle, tokens, tmp, new AttributionOptions(MaxFeatureNodes: maxFeatures, Progress: (_, _) =>
            {
                ct.ThrowIfCancellationRequested();
                observer?.Progress("/api/graph");
            }), node, edge, slug: slug, scan: name, promptText: r.Prompt, qk: new GraphQkOptions());
            _folderWrite.Wait(ct);
            try
            {
                if (GraphFolders.Existing(graphDir, slug + ".json") is { } old) GraphState.CarryOver(old, tmp);
                File.Move(tmp, path, overwrite: true);
                GraphFile.UpdateIndex(path);
            }
            finally { _folderWrite.Release(); }
        }
        finally { if (File.Exists(tmp)) File.Delete(tmp); }
        return new RawJson(File.ReadAllText(path));
    }

    object Intervene(InterveneRequest r, Models.HookedTransformer m, CancellationToken ct)
    {
        // A graph's own token ids when the page has them (a traced prompt's display text need not tokenize back into it).
        using var tokens = r.Tokens is { Length: > 0 } ids ? RequestInputs.TokenIds(m, ids) : inputs.Tokens(m, r.Prompt);
        if (m.Config.AttnOnly) throw new MechanistException($"{runner.Models.Resolve(r.Model)} is attention-only: its graphs have no features to set or swap");
        var bundle = runner.Models.Transcoders(runner.Models.Resolve(r.Model), m);
        var mode = AttributionVocabulary.Modes.Parse(r.Mode ?? AttributionVocabulary.Modes.Name(InterventionMode.Free));
        int topK = Math.Clamp(r.TopK ?? 10, 1, 50), generate = Math.Clamp(r.Generate ?? 0, 0, 64);
        using var rm = ReplacementModel.Build(m, bundle.Dictionary, bundle.Input, tokens);
        ct.ThrowIfCancellationRequested();
        if (!string.IsNullOrEmpty(r.SwapPrompt))
        {
            using var donorTokens = inputs.Tokens(m, r.SwapPrompt, "swapPrompt");
            using var donor = ReplacementModel.Build(m, bundle.Dictionary, bundle.Input, donorTokens);
            return InterventionExperiment.Swap(rm, donor, r.SwapPosition ?? -1, r.SwapLayers is { Length: > 0 } ls ? ls : null, mode, topK, generate);
        }
        if (r.Set is not { Length: > 0 } set || set.Length > 200) throw new MechanistException("'set' needs 1 to 200 interventions (LAYER:POSITION:FEATURE=VALUE), or give 'swapPrompt'");
        return InterventionExperiment.Run(rm, set, mode, topK, generate);
    }

    /// <inheritdoc/>
    public void Dispose() => _folderWrite.Dispose();
}
