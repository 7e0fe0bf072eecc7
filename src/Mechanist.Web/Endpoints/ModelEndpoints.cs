using Mechanist.Analysis;
using Mechanist.Models;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Mechanist.Web;

/// <summary>The analyses of one prompt (or a clean/corrupted pair) on a served model: each calls one library analysis and answers its record.</summary>
public static class ModelEndpoints
{
    /// <summary>Maps /api/models, /api/patch-targets, run, attention, lens, microscope, experts, heads, patch and steer.</summary>
    public static void Map(WebApplication app, AnalysisRunner runner, RequestInputs inputs)
    {
        var models = runner.Models;
        app.MapGet("/api/models", () => Results.Json(models.Names.Select(models.Summary), Answers.Json));
        app.MapGet("/api/patch-targets", () => Results.Json(PatchTargets.Names, Answers.Json));

        runner.Post<PromptRequest>(app, "/api/run", (r, m) =>
        {
            using var tokens = inputs.Tokens(m, r.Prompt);
            return NextTokens.Run(m, tokens, Math.Clamp(r.TopK ?? 10, 1, 50));
        }, (r, t5) =>
        {
            using var input = inputs.InputIds(t5, r.Prompt);
            using var decoder = inputs.DecoderIds(t5, r.Decoder);
            return EncoderDecoderAnalyses.Predict(t5, input, decoder, Math.Clamp(r.TopK ?? 10, 1, 50));
        });

        runner.Post<AttentionRequest>(app, "/api/attention", (r, m) =>
        {
            using var tokens = inputs.Tokens(m, r.Prompt);
            return AttentionPatterns.Compute(m, tokens, r.Layers is { Length: > 0 } l ? l : null, r.Heads is { Length: > 0 } h ? h : null, r.Thumbnail);
        }, (r, t5) =>
        {
            using var input = inputs.InputIds(t5, r.Prompt);
            using var decoder = inputs.DecoderIds(t5, r.Decoder);
            return EncoderDecoderAnalyses.Attention(t5, input, decoder, r.Layers is { Length: > 0 } l ? l : null, r.Heads is { Length: > 0 } h ? h : null, r.Thumbnail);
        });

        runner.Post<PromptRequest>(app, "/api/lens", (r, m) =>
        {
            using var tokens = inputs.Tokens(m, r.Prompt);
            long? target = string.IsNullOrEmpty(r.Target) ? null : TokenText.AnswerId(m, r.Target);
            return LogitLens.Run(m, tokens, target, Math.Clamp(r.TopK ?? 3, 1, 10));
        }, (r, t5) =>
        {
            using var input = inputs.InputIds(t5, r.Prompt);
            using var decoder = inputs.DecoderIds(t5, r.Decoder);
            long? target = string.IsNullOrEmpty(r.Target) ? null : t5.AnswerId(r.Target);
            return EncoderDecoderAnalyses.Lens(t5, input, decoder, null, target, Math.Clamp(r.TopK ?? 3, 1, 10));
        });

        runner.Post<PromptRequest>(app, "/api/microscope", (r, m) =>
        {
            inputs.Check(m, r.Prompt);
            return models.Baseline(models.Resolve(r.Model), m).For(m, r.Prompt!);
        });

        runner.Post<PromptRequest>(app, "/api/experts", (r, m) =>
        {
            using var tokens = inputs.Tokens(m, r.Prompt);
            return ExpertRoutingAnalysis.Run(m, tokens);
        });

        runner.Post<ModelRequest>(app, "/api/heads", (r, m) => models.Heads(models.Resolve(r.Model), m));

        runner.PostCancellable<PatchRequest>(app, "/api/patch", (r, m, ct) =>
        {
            using var clean = inputs.Tokens(m, r.Clean, "clean");
            using var corrupt = inputs.Tokens(m, r.Corrupt, "corrupt");
            if (string.IsNullOrEmpty(r.Answer)) throw new MechanistException("'answer' is required");
            var method = PatchVocabulary.Methods.Parse(r.Method ?? PatchVocabulary.Methods.Name(PatchMethods.Exact));
            return PatchingExperiment.Run(m, clean, corrupt, r.Answer, r.Wrong, r.Metric, PatchTargets.Parse(r.What ?? "resid"), method, r.Position, ct);
        }, (r, t5, ct) =>
        {
            PatchVocabulary.CheckEncoderDecoder(r.What, r.Method, r.Metric, r.Position);
            if (string.IsNullOrEmpty(r.Answer)) throw new MechanistException("'answer' is required");
            using var clean = inputs.InputIds(t5, r.Clean, "clean");
            using var corrupt = inputs.InputIds(t5, r.Corrupt, "corrupt");
            using var decoder = inputs.DecoderIds(t5, r.Decoder);
            long? wrong = string.IsNullOrEmpty(r.Wrong) ? null : t5.AnswerId(r.Wrong);
            return new PatchingReport(EncoderDecoderAnalyses.Patch(t5, clean, corrupt, decoder, t5.AnswerId(r.Answer), wrong, ct), null);
        });

        runner.Post<SteerRequest>(app, "/api/steer", (r, m) =>
        {
            inputs.Check(m, r.Prompt);
            if (r.Positive is not { Length: > 0 } pos || r.Negative is not { Length: > 0 } neg || pos.Length + neg.Length > 64)
                throw new MechanistException("'positive' and 'negative' each need at least one text (64 in all at most)");
            foreach (var t in pos.Concat(neg)) inputs.Check(m, t, "positive/negative");
            int layer = r.Layer ?? m.Config.NLayers / 2;
            if (layer < 0 || layer >= m.Config.NLayers) throw new MechanistException($"'layer' must be within 0..{m.Config.NLayers - 1}");
            using var vector = Steering.Vector(m, pos, neg, layer);
            return Steering.Compare(m, vector, layer, r.Coefficient ?? 4, new[] { r.Prompt! }, new GenerateOptions { MaxNewTokens = Math.Clamp(r.Generate ?? 20, 1, 64) });
        });
    }
}
