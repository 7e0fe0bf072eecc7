using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace Mechanist.Features;

/// <summary>Where to ask for explanations: any OpenAI-compatible chat-completions server (llama.cpp, Ollama, vLLM, ...).</summary>
/// <param name="Endpoint">Base URL (e.g. http://127.0.0.1:8080/v1) or the full .../chat/completions URL.</param>
/// <param name="Model">The model name the server expects.</param>
/// <param name="ApiKey">Bearer token, if the server wants one.</param>
/// <param name="Examples">Top examples shown to it.</param>
/// <param name="TimeoutSeconds">Per request.</param>
public sealed record ExplainerOptions(string Endpoint, string Model, string? ApiKey = null, int Examples = 10, double TimeoutSeconds = 120);

/// <summary>Asks a language model for a one-sentence explanation of a feature from its top examples and logit effects.</summary>
public static class FeatureExplainer
{
    /// <summary>The prompt: examples with the firing token in ⟦ ⟧ and each token's activation when notable, then the promoted tokens.</summary>
    public static string Prompt(FeatureDashboard d, int examples)
    {
        var sb = new StringBuilder();
        sb.AppendLine("Below are text excerpts where one feature of a neural language model is most active. The token where it is most active in");
        sb.AppendLine("each excerpt is marked ⟦like this⟧, with its activation. Then come the output tokens the feature promotes.");
        sb.AppendLine("Answer with one short sentence (at most 15 words) that says what the feature detects. No preamble.");
        sb.AppendLine();
        foreach (var (e, i) in d.Top.Take(examples).Select((e, i) => (e, i)))
        {
            sb.Append($"{i + 1}. ");
            for (int t = 0; t < e.Tokens.Length; t++)
                sb.Append(t == e.MaxIndex ? $"⟦{e.Tokens[t]}⟧({e.Activation:G3})" : e.Tokens[t]);
            sb.AppendLine();
        }
        sb.AppendLine();
        sb.AppendLine("Promoted tokens: " + string.Join(", ", d.TopLogits.Take(10).Select(t => $"\"{t.Token}\"")));
        return sb.ToString();
    }

    /// <summary>Posts the prompt and returns the answer's text; clear errors for an unreachable server, an HTTP error or an odd reply.</summary>
    public static Task<string> ExplainAsync(HttpClient http, ExplainerOptions o, FeatureDashboard d, CancellationToken ct = default) =>
        ChatCompletions.AskAsync(http, o.Endpoint, o.Model, o.ApiKey, o.TimeoutSeconds, "You explain features of neural networks briefly and concretely.",
            Prompt(d, o.Examples), maxTokens: 80, ct);
}
