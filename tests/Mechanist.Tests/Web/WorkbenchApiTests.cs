using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace Mechanist.Tests.Web;

/// <summary>The JSON API against a real Kestrel on loopback, including hostile requests.</summary>
[Collection("workbench")]
public class WorkbenchApiTests(WorkbenchFixture fx) : IClassFixture<WorkbenchFixture>
{
    const string Prompt = "Once upon a time, Lily and Ben went to the park.";

    static async Task<JsonElement> Json(HttpResponseMessage r) => JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement;

    async Task<HttpResponseMessage> Post(string path, object body) => await fx.Client.PostAsJsonAsync(path, body);

    [Fact]
    public async Task ModelsListsTheServedModelWithItsHooks()
    {
        var models = await Json(await fx.Client.GetAsync("/api/models"));
        var m = models[0];
        Assert.Equal("stories260K", m.GetProperty("name").GetString());
        Assert.Equal(5, m.GetProperty("layers").GetInt32());
        Assert.Contains(m.GetProperty("hooks").EnumerateArray(), h => h.GetProperty("name").GetString() == "blocks.4.attn.hook_pattern");
    }

    [Fact]
    public async Task EveryAnalysisEndpointAnswers()
    {
        var run = await Json(await Post("/api/run", new { model = "stories260K", prompt = Prompt }));
        Assert.Equal("<s>", run.GetProperty("tokens")[0].GetString());
        Assert.True(run.GetProperty("bos").GetBoolean());
        Assert.Equal(10, run.GetProperty("top").GetArrayLength());

        var attention = await Json(await Post("/api/attention", new { prompt = Prompt }));
        int n = attention.GetProperty("tokens").GetArrayLength();
        var pattern = attention.GetProperty("layers")[2][3]; // layer 2, head 3: [query][key]
        Assert.Equal(n, pattern.GetArrayLength());
        Assert.Equal(1.0, pattern[n - 1].EnumerateArray().Sum(v => v.GetDouble()), 2);

        var lens = await Json(await Post("/api/lens", new { prompt = Prompt, target = " Lily" }));
        Assert.Equal(6, lens.GetProperty("layers").GetArrayLength());
        var micro = await Json(await Post("/api/microscope", new { prompt = Prompt }));
        Assert.Equal(5, micro.GetProperty("nonlinearity").GetArrayLength());
        var heads = await Json(await Post("/api/heads", new { model = "stories260K" }));
        Assert.Equal(40, heads.GetProperty("heads").GetArrayLength());
        var patch = await Json(await Post("/api/patch", new
        {
            clean = "Lily and Tim went to the park. Tim gave the ball to", corrupt = "Lily and Tim went to the park. Lily gave the ball to",
            answer = " Lily", wrong = " Tim", what = "heads",
        }));
        Assert.Equal(5, patch.GetProperty("scores").GetArrayLength());
    }

    [Fact]
    public async Task PromptAnalysesAnswerWithinASecond()
    {
        string prompt = string.Join(" ", Enumerable.Repeat("Lily saw a big dog.", 10)); // ~50 tokens
        await Post("/api/microscope", new { prompt = "warm up" }); // the per-model corpus fit is built once
        foreach (var path in new[] { "/api/run", "/api/attention", "/api/lens", "/api/microscope" })
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var r = await Post(path, new { prompt });
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"{path} took {sw.Elapsed.TotalSeconds:F2} s"); // generous under test load; see the note for timings
        }
    }

    [Theory]
    [InlineData("{\"model\": \"../../etc/passwd\", \"prompt\": \"x\"}", 400, "unknown model")]
    [InlineData("{\"prompt\": ", 400, "malformed JSON")]
    [InlineData("[1,2,3]", 400, "malformed JSON")]
    [InlineData("{}", 400, "'prompt' is required")]
    [InlineData("{\"prompt\": \"x\", \"target\": \" Lily Lily\"}", 400, "give one token")]
    public async Task BadRequestsGetJsonErrors(string body, int status, string message)
    {
        var r = await fx.Client.PostAsync("/api/lens", new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.Equal(status, (int)r.StatusCode);
        Assert.Contains(message, (await Json(r)).GetProperty("error").GetString());
    }

    [Fact]
    public async Task HostileRequestsAreRefusedAndTheServerKeepsServing()
    {
        var huge = new StringContent("{\"prompt\": \"" + new string('a', 200_000) + "\"}", Encoding.UTF8, "application/json");
        var r = await fx.Client.PostAsync("/api/run", huge);
        Assert.Equal(413, (int)r.StatusCode);
        Assert.Contains("too large", (await Json(r)).GetProperty("error").GetString());

        var longPrompt = await Post("/api/run", new { prompt = new string('a', 5000) });
        Assert.Equal(400, (int)longPrompt.StatusCode);

        var wrongType = await fx.Client.PostAsync("/api/run", new StringContent("prompt=x", Encoding.UTF8, "text/plain"));
        Assert.Equal(415, (int)wrongType.StatusCode);

        var traversal = await fx.Client.GetAsync("/static/..%2F..%2Fappsettings.json");
        Assert.Equal(404, (int)traversal.StatusCode);
        Assert.Equal(404, (int)(await fx.Client.GetAsync("/api/nope")).StatusCode);

        // 100 parallel requests: every one gets an answer (200, or 503 when the queue is full), never a hang or a crash.
        var tasks = Enumerable.Range(0, 100).Select(i => Post(i % 2 == 0 ? "/api/run" : "/api/attention", new { prompt = $"Lily saw {i} dogs." })).ToList();
        var results = await Task.WhenAll(tasks);
        Assert.All(results, x => Assert.Contains((int)x.StatusCode, new[] { 200, 503 }));
        Assert.True(results.Count(x => x.StatusCode == HttpStatusCode.OK) >= 50);
        Assert.Equal(HttpStatusCode.OK, (await Post("/api/run", new { prompt = Prompt })).StatusCode);
    }

    [Fact]
    public async Task ConcurrentRequestsGiveTheSameAnswersAsSequentialOnes()
    {
        string[] prompts = { "Lily saw a dog.", "Ben had a red ball.", "The sun was bright." };
        var sequential = new List<string>();
        foreach (var p in prompts) sequential.Add(await (await Post("/api/run", new { prompt = p })).Content.ReadAsStringAsync());
        var parallel = await Task.WhenAll(prompts.Concat(prompts).Select(async p => await (await Post("/api/run", new { prompt = p })).Content.ReadAsStringAsync()));
        Assert.Equal(sequential.Concat(sequential), parallel);
    }
}

[CollectionDefinition("workbench")]
public class WorkbenchCollection;
