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
    public static async Task<string> ExplainAsync(HttpClient http, ExplainerOptions o, FeatureDashboard d, CancellationToken ct = default)
    {
        if (!Uri.TryCreate(o.Endpoint, UriKind.Absolute, out var baseUri) || (baseUri.Scheme != "http" && baseUri.Scheme != "https"))
            throw new MechanistException($"--endpoint '{o.Endpoint}' is not an http(s) URL");
        var url = baseUri.AbsolutePath.TrimEnd('/').EndsWith("/chat/completions") ? baseUri : new Uri(baseUri.ToString().TrimEnd('/') + "/chat/completions");
        var body = new
        {
            model = o.Model, temperature = 0, max_tokens = 80,
            messages = new object[]
            {
                new { role = "system", content = "You explain features of neural networks briefly and concretely." },
                new { role = "user", content = Prompt(d, o.Examples) },
            },
        };
        using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = JsonContent.Create(body) };
        if (o.ApiKey is { } key) request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(o.TimeoutSeconds));
        HttpResponseMessage response;
        try { response = await http.SendAsync(request, timeout.Token); }
        catch (HttpRequestException e) { throw new MechanistException($"cannot reach {url}: {e.Message}"); }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested) { throw new MechanistException($"{url} did not answer within {o.TimeoutSeconds:G} s"); }
        using (response)
        {
            string text = await response.Content.ReadAsStringAsync(timeout.Token);
            if (!response.IsSuccessStatusCode)
                throw new MechanistException($"{url} answered {(int)response.StatusCode} {response.ReasonPhrase}: {Snippet(text)}");
            try
            {
                using var doc = JsonDocument.Parse(text);
                var content = doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
                if (string.IsNullOrWhiteSpace(content)) throw new MechanistException($"{url} returned an empty explanation");
                return content.Trim();
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or IndexOutOfRangeException)
            {
                throw new MechanistException($"{url} did not return an OpenAI-style chat completion (choices[0].message.content): {Snippet(text)}");
            }
        }
    }

    static string Snippet(string s) => s.Length > 200 ? s[..200] + "…" : s;
}
