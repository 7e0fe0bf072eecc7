using System.Text.Json;

namespace Mechanist.Features;

/// <summary>One question to any OpenAI-compatible chat-completions server (llama.cpp, Ollama, vLLM, ...): what explaining and scoring features share.</summary>
public static class ChatCompletions
{
    /// <summary>
    /// Posts a system and a user message (temperature 0) and returns the answer's text; clear errors for a bad URL, an unreachable server,
    /// a timeout, an HTTP error, or a reply that is not a chat completion.
    /// </summary>
    public static async Task<string> AskAsync(HttpClient http, string endpoint, string model, string? apiKey, double timeoutSeconds, string system, string user,
        int maxTokens, CancellationToken ct = default)
    {
        if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var baseUri) || (baseUri.Scheme != "http" && baseUri.Scheme != "https"))
            throw new MechanistException($"--endpoint '{endpoint}' is not an http(s) URL");
        var url = baseUri.AbsolutePath.TrimEnd('/').EndsWith("/chat/completions") ? baseUri : new Uri(baseUri.ToString().TrimEnd('/') + "/chat/completions");
        var body = new
        {
            model, temperature = 0, max_tokens = maxTokens,
            messages = new object[] { new { role = "system", content = system }, new { role = "user", content = user } },
        };
        // A buffered body with its Content-Length: small servers often refuse chunked requests (what JsonContent would stream).
        using var request = new HttpRequestMessage(HttpMethod.Post, url)
        {
            Content = new StringContent(JsonSerializer.Serialize(body), System.Text.Encoding.UTF8, "application/json"),
        };
        if (apiKey is { } key) request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(timeoutSeconds));
        HttpResponseMessage response;
        try { response = await http.SendAsync(request, timeout.Token); }
        catch (HttpRequestException e) { throw new MechanistException($"cannot reach {url}: {e.Message}{(e.InnerException is { } inner ? $" ({inner.Message})" : "")}"); }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested) { throw new MechanistException($"{url} did not answer within {timeoutSeconds:G} s"); }
        using (response)
        {
            string text;
            try { text = await response.Content.ReadAsStringAsync(timeout.Token); }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested) { throw new MechanistException($"{url} did not finish its answer within {timeoutSeconds:G} s"); }
            if (!response.IsSuccessStatusCode)
                throw new MechanistException($"{url} answered {(int)response.StatusCode} {response.ReasonPhrase}: {Snippet(text)}");
            try
            {
                using var doc = JsonDocument.Parse(text);
                var content = doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
                if (string.IsNullOrWhiteSpace(content)) throw new MechanistException($"{url} returned an empty answer");
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
