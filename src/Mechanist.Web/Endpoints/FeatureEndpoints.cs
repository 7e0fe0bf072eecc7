using System.Text.Json;
using Mechanist.Features;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Mechanist.Web;

/// <summary>Feature stores: the list, search, a feature's dashboard, labels, and setting a label.</summary>
public static class FeatureEndpoints
{
    /// <summary>Maps /api/features and beneath it.</summary>
    public static void Map(WebApplication app, AnalysisRunner runner, IReadOnlyList<IFeatureStore> stores)
    {
        // A store's features can be steered on the served model whose transcoders have the fingerprint the store recorded.
        var fingerprints = runner.Models.TranscoderDirs.Where(kv => Directory.Exists(kv.Value)).Select(kv => (Model: kv.Key, Id: FeatureSource.Fingerprint(kv.Value))).ToList();
        var summaries = stores.Select((st, i) => new FeatureStoreSummary(i, Path.GetFileName(st.Info.Dictionary.TrimEnd('/', '\\')), st.Info,
            st.Info.DictionaryId.Length == 0 ? null : fingerprints.FirstOrDefault(f => f.Id == st.Info.DictionaryId).Model)).ToList();
        app.MapGet("/api/features", () => Results.Json(summaries, Answers.Json));
        app.MapGet("/api/features/{id:int}/search", (HttpContext ctx, int id, string? q, int? layer, int? limit) =>
            Query(ctx, id, st => st.Search(q is { Length: > 200 } ? q[..200] : q, Math.Clamp(limit ?? 50, 1, 200), layer)));
        app.MapGet("/api/features/{id:int}/{layer:int}/{feature:int}", (HttpContext ctx, int id, int layer, int feature) =>
            Query(ctx, id, st => st.Dashboard(layer, feature)));
        app.MapGet("/api/features/{id:int}/{layer:int}/{feature:int}/scores", (HttpContext ctx, int id, int layer, int feature) =>
            Query(ctx, id, st => st.Scores(layer, feature)));
        app.MapGet("/api/features/{id:int}/labels", (HttpContext ctx, int id, string? ids) =>
            Query(ctx, id, st => st.LabelsOf((ids ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries).Take(5000)
                .Select(x => x.Split(':')).Where(x => x.Length == 2 && int.TryParse(x[0], out _) && int.TryParse(x[1], out _))
                .Select(x => (int.Parse(x[0]), int.Parse(x[1]))).ToList())));
        app.MapPost("/api/features/{id:int}/{layer:int}/{feature:int}/label", async (HttpContext ctx, int id, int layer, int feature) =>
        {
            var (request, failure) = await Answers.ReadJson<LabelRequest>(ctx, runner.Options.MaxRequestBytes);
            if (request is null) return failure!;
            return await Query(ctx, id, st => { st.SetLabel(layer, feature, request.Label); return st.Dashboard(layer, feature).Summary; });
        });

        // A store query runs under the analysis slots, abandoned when the client goes away.
        Task<IResult> Query(HttpContext ctx, int id, Func<IFeatureStore, object> query) =>
            id < 0 || id >= stores.Count ? Task.FromResult(Answers.Fail(404, $"no feature store {id} (this server has {stores.Count})"))
            : runner.Run("/api/features", ctx, () => JsonSerializer.SerializeToUtf8Bytes(query(stores[id]), Answers.Json));
    }
}
