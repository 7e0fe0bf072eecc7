using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Mechanist.Web;

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
        Assert.Equal(5 * 8, attention.GetProperty("heads").GetArrayLength());
        var head = attention.GetProperty("heads").EnumerateArray().Single(h => h.GetProperty("layer").GetInt32() == 2 && h.GetProperty("head").GetInt32() == 3);
        var pattern = head.GetProperty("pattern"); // [query][key]
        Assert.Equal(n, pattern.GetArrayLength());
        Assert.Equal(1.0, pattern[n - 1].EnumerateArray().Sum(v => v.GetDouble()), 2);
        Assert.Equal(0.0, pattern[0][1].GetDouble()); // causal: the first query sees only itself
        // One head on request: the same numbers, without the rest.
        var one = await Json(await Post("/api/attention", new { prompt = Prompt, layers = new[] { 2 }, heads = new[] { 3 } }));
        Assert.Equal(1, one.GetProperty("heads").GetArrayLength());
        Assert.Equal(pattern.GetRawText(), one.GetProperty("heads")[0].GetProperty("pattern").GetRawText());
        // Thumbnails: each cell is the mean of its block of the full pattern, blocks as PyTorch's adaptive average pooling cuts them
        // (rows floor(i·n/t) to ceil((i+1)·n/t)).
        const int t = 3;
        var thumb = await Json(await Post("/api/attention", new { prompt = Prompt, layers = new[] { 2 }, heads = new[] { 3 }, thumbnail = t }));
        Assert.Equal(t, thumb.GetProperty("thumbnail").GetInt32());
        var cells = thumb.GetProperty("heads")[0].GetProperty("pattern");
        Assert.Equal(t, cells.GetArrayLength());
        for (int i = 0; i < t; i++)
            for (int j = 0; j < t; j++)
            {
                int r0 = i * n / t, r1 = ((i + 1) * n + t - 1) / t, c0 = j * n / t, c1 = ((j + 1) * n + t - 1) / t;
                double mean = 0;
                for (int r = r0; r < r1; r++) for (int c = c0; c < c1; c++) mean += pattern[r][c].GetDouble();
                mean /= (r1 - r0) * (c1 - c0);
                Assert.True(Math.Abs(mean - cells[i][j].GetDouble()) < 1e-3, $"thumbnail cell [{i},{j}]: {cells[i][j].GetDouble()} vs {mean}");
            }
        var badThumb = await Post("/api/attention", new { prompt = Prompt, thumbnail = 0 });
        Assert.Equal(HttpStatusCode.BadRequest, badThumb.StatusCode);
        Assert.Contains("thumbnail", await badThumb.Content.ReadAsStringAsync());

        var lens = await Json(await Post("/api/lens", new { prompt = Prompt, target = " Lily" }));
        Assert.Equal(6, lens.GetProperty("layers").GetArrayLength());
        // The lens and patching answers are the library's records, field for field.
        using var m = Mechanist.Models.HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin"));
        using (var tokens = m.ToTokens(Prompt))
            Assert.Equal(Mechanist.Reporting.JsonFormat.Serialize(Mechanist.Analysis.LogitLens.Run(m, tokens, Mechanist.Analysis.TokenText.AnswerId(m, " Lily"), 3)), lens.GetRawText());
        var micro = await Json(await Post("/api/microscope", new { prompt = Prompt }));
        Assert.Equal(5, micro.GetProperty("nonlinearity").GetArrayLength());
        var heads = await Json(await Post("/api/heads", new { model = "stories260K" }));
        Assert.Equal(40, heads.GetProperty("heads").GetArrayLength());
        var patch = await Json(await Post("/api/patch", new
        {
            clean = "Lily and Tim went to the park. Tim gave the ball to", corrupt = "Lily and Tim went to the park. Lily gave the ball to",
            answer = " Lily", wrong = " Tim", what = "heads",
        }));
        Assert.Equal(5, patch.GetProperty("grids")[0].GetProperty("scores").GetArrayLength());
        Assert.Equal("heads", patch.GetProperty("grids")[0].GetProperty("target").GetString());
        using (var clean = m.ToTokens("Lily and Tim went to the park. Tim gave the ball to"))
        using (var corrupt = m.ToTokens("Lily and Tim went to the park. Lily gave the ball to"))
            Assert.Equal(Mechanist.Reporting.JsonFormat.Serialize(Mechanist.Analysis.PatchingExperiment.Run(m, clean, corrupt, " Lily", " Tim", null, Mechanist.Analysis.PatchTarget.Heads)),
                patch.GetRawText());
        var targets = await Json(await fx.Client.GetAsync("/api/patch-targets"));
        Assert.Equal(new[] { "resid", "attn", "mlp", "heads", "heads-pos", "head-qkv" }, targets.EnumerateArray().Select(t => t.GetString()));
        var headsPos = await Json(await Post("/api/patch", new
        {
            clean = "Lily and Tim went to the park. Tim gave the ball to", corrupt = "Lily and Tim went to the park. Lily gave the ball to",
            answer = " Lily", wrong = " Tim", what = "heads-pos",
        }));
        Assert.Equal(5 * 8, headsPos.GetProperty("grids")[0].GetProperty("scores").GetArrayLength());
    }

    [Fact]
    public async Task CliAndWebGiveTheSameRecords()
    {
        string model = SharedData.PathOf("models", "stories260K", "stories260K.bin");
        // Head detection: one parameter set, the same scores from the CLI and the web.
        var web = await Json(await Post("/api/heads", new { model = "stories260K" }));
        var (code, cliOut, _) = Mechanist.Tests.Cli.CliRunner.Run("heads", "-m", model, "--json");
        Assert.Equal(0, code);
        var cli = JsonDocument.Parse(cliOut).RootElement;
        Assert.Equal(cli.GetProperty("heads").GetRawText(), web.GetProperty("heads").GetRawText());
        Assert.Equal(cli.GetProperty("sequenceLength").GetInt32(), web.GetProperty("sequenceLength").GetInt32());

        // Next tokens: the CLI's run --json, the web's run and the library's record agree field for field.
        var webRun = await Json(await Post("/api/run", new { model = "stories260K", prompt = Prompt, topK = 5 }));
        (code, cliOut, _) = Mechanist.Tests.Cli.CliRunner.Run("run", "-m", model, "--prompt", Prompt, "--top-k", "5", "--json");
        Assert.Equal(0, code);
        Assert.Equal(JsonDocument.Parse(cliOut).RootElement.GetRawText(), webRun.GetRawText());
        using var m = Mechanist.Models.HookedTransformer.Load(model);
        using var tokens = m.ToTokens(Prompt);
        var record = Mechanist.Analysis.NextTokens.Run(m, tokens, 5);
        Assert.Equal(Mechanist.Reporting.JsonFormat.Serialize(record), webRun.GetRawText());
        // And the record is what the model says: the top token is the argmax of the last logits.
        using var logits = m.Run(tokens);
        Assert.Equal(logits[0, -1].argmax().item<long>(), record.Top[0].Id);
        Assert.Equal(logits[0, -1].softmax(-1).max().item<float>(), record.Top[0].Prob, 5);
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

        Assert.Equal(HttpStatusCode.OK, (await Post("/api/run", new { prompt = Prompt })).StatusCode);
    }

    [Fact]
    public async Task RequestsBeyondTheSlotsAreRefusedAndTheRestAnswered()
    {
        // Two slots, no queue; the first two analyses are held until the other 18 requests have been answered: exactly 18
        // refusals (503), then exactly 2 answers, and the server goes on serving.
        const int slots = 2, requests = 20;
        using var holding = new CountdownEvent(slots);
        using var release = new ManualResetEventSlim();
        var observer = new RecordingObserver
        {
            OnStarted = (_, _) =>
            {
                if (release.IsSet) return;
                holding.Signal();
                Assert.True(release.Wait(TimeSpan.FromSeconds(120)), "never released");
            },
        };
        await using var server = WorkbenchServer.Create(new[] { Mechanist.Models.HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin")) },
            new WorkbenchOptions { Port = 0, MaxConcurrentAnalyses = slots, QueueTimeout = TimeSpan.Zero, Observer = observer });
        await server.StartAsync();
        using var client = new HttpClient { BaseAddress = new Uri(server.Url), Timeout = TimeSpan.FromSeconds(180) };
        Task<HttpResponseMessage> Send(int i) => client.PostAsJsonAsync(i % 2 == 0 ? "/api/run" : "/api/attention", new { prompt = $"Lily saw {i} dogs." });
        var held = Enumerable.Range(0, slots).Select(Send).ToList();
        Assert.True(holding.Wait(TimeSpan.FromSeconds(60)), "the first analyses never started");
        var refused = await Task.WhenAll(Enumerable.Range(slots, requests - slots).Select(Send));
        Assert.All(refused, r => Assert.Equal(HttpStatusCode.ServiceUnavailable, r.StatusCode));
        release.Set();
        Assert.All(await Task.WhenAll(held), r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsJsonAsync("/api/run", new { prompt = Prompt })).StatusCode);
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
