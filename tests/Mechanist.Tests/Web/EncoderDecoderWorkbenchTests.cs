using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Mechanist.IO;
using Mechanist.Models;
using Mechanist.Web;
using Microsoft.Playwright;
using static TorchSharp.torch;

namespace Mechanist.Tests.Web;

/// <summary>
/// HF's golden T5 (an encoder-decoder) and BERT (an encoder) in the workbench, with the built-in word-level tokenizer (its ids fit
/// their 512-token vocabularies): the attention views of all three T5 stacks and of a bidirectional model, the lens, patching
/// and refusals by model kind.
/// </summary>
[Collection("workbench")]
public sealed class EncoderDecoderWorkbenchTests : IAsyncLifetime
{
    WorkbenchServer _server = null!;
    HttpClient _client = null!;
    const string Prompt = "Alice went to the park", Corrupt = "Alice went to the store";

    static HookedEncoderDecoder LoadT5() => HookedEncoderDecoder.Load(SharedData.PathOf("golden", "models", "t5"), SharedData.WithToyTokenizer);
    static HookedTransformer LoadBert() => HookedTransformer.Load(SharedData.PathOf("golden", "models", "bert"), new LoadOptions { Open = SharedData.WithToyTokenizer });

    public async Task InitializeAsync()
    {
        _server = WorkbenchServer.Create(new ServedModel[] { LoadT5(), LoadBert(), HookedTransformer.Load(Path.Combine(SharedData.RepoRoot, "models", "toy-4l")) },
            new WorkbenchOptions { Port = 0 });
        await _server.StartAsync();
        _client = new HttpClient { BaseAddress = new Uri(_server.Url) };
    }

    public async Task DisposeAsync() { _client.Dispose(); await _server.DisposeAsync(); }

    async Task<JsonElement> Post(string path, object body)
    {
        var res = await _client.PostAsJsonAsync(path, body);
        string text = await res.Content.ReadAsStringAsync();
        Assert.True(res.StatusCode == HttpStatusCode.OK, $"{path}: {res.StatusCode} {text}");
        return JsonDocument.Parse(text).RootElement;
    }

    async Task<string> Refused(string path, object body)
    {
        var res = await _client.PostAsJsonAsync(path, body);
        Assert.Equal(HttpStatusCode.BadRequest, res.StatusCode);
        return JsonDocument.Parse(await res.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetString()!;
    }

    static float[][] Rows(JsonElement pattern) => pattern.EnumerateArray().Select(r => r.EnumerateArray().Select(v => v.GetSingle()).ToArray()).ToArray();

    [Fact]
    public async Task T5sThreeAttentionStacksLensRunAndPatchingAreServedAndOtherViewsRefuseByKind()
    {
        var models = JsonDocument.Parse(await _client.GetStringAsync("/api/models")).RootElement;
        Assert.Equal(new[] { "t5", "bert", "toy-4l" }, models.EnumerateArray().Select(m => m.GetProperty("name").GetString()));
        Assert.Equal("encoder-decoder", models[0].GetProperty("kind").GetString());
        Assert.Equal(3, models[0].GetProperty("encoderLayers").GetInt32());
        Assert.Equal(2, models[0].GetProperty("layers").GetInt32());
        Assert.Contains(models[0].GetProperty("hooks").EnumerateArray(), h => h.GetProperty("name").GetString() == "decoder.1.cross_attn.hook_pattern"
            && h.GetProperty("shape").GetString() == "[batch, 4, dec_pos, enc_pos]");
        Assert.Equal("encoder", models[1].GetProperty("kind").GetString());
        Assert.Equal("decoder", models[2].GetProperty("kind").GetString());

        using var t5 = LoadT5();
        using var scope = NewDisposeScope();
        var input = t5.InputIds(Prompt);
        var decoder = t5.DecoderIds("Ben");
        // The input is the tokenizer's ids and T5's EOS; the decoder starts from decoder_start_token_id.
        Assert.Equal((long)t5.Config.Eos!, input[0, -1].item<long>());
        Assert.Equal(new long[] { 0, t5.Tokenizer!.Encode("Ben", prependBos: false)[0] }, decoder[0].data<long>().ToArray());

        // Attention: each stack is the hook the library's model (checked against HF's patterns in the golden tests) writes, query rows by key columns.
        var attention = await Post("/api/attention", new { model = "t5", prompt = Prompt, decoder = "Ben" });
        var stacks = attention.GetProperty("stacks");
        Assert.Equal(new[] { "encoder", "decoder", "cross" }, stacks.EnumerateArray().Select(s => s.GetProperty("name").GetString()));
        var (_, cache) = t5.RunWithCache(input, decoder);
        try
        {
            foreach (var stack in stacks.EnumerateArray())
            {
                string name = stack.GetProperty("name").GetString()!;
                int layers = name == "encoder" ? 3 : 2;
                Assert.Equal(layers, stack.GetProperty("layers").GetInt32());
                Assert.Equal(layers * 4, stack.GetProperty("heads").GetArrayLength());
                Assert.Equal(name == "decoder", stack.GetProperty("causal").GetBoolean());
                int queries = stack.GetProperty("queries").GetArrayLength(), keys = stack.GetProperty("keys").GetArrayLength();
                Assert.Equal(name == "encoder" ? (6, 6) : name == "decoder" ? (2, 2) : (2, 6), (queries, keys));
                foreach (var head in stack.GetProperty("heads").EnumerateArray())
                {
                    int l = head.GetProperty("layer").GetInt32(), h = head.GetProperty("head").GetInt32();
                    string hook = stack.GetProperty("hook").GetString()!.Replace(".L.", $".{l}.");
                    var want = cache[hook][0, h];
                    var got = Rows(head.GetProperty("pattern"));
                    Assert.Equal(queries, got.Length);
                    for (int q = 0; q < queries; q++)
                    {
                        Assert.True(Math.Abs(got[q].Sum() - 1) < 1e-3, $"{hook} head {h} row {q} sums to {got[q].Sum()}");
                        for (int k = 0; k < keys; k++)
                        {
                            Assert.True(Math.Abs(got[q][k] - want[q, k].item<float>()) <= 6e-5, $"{hook} head {h} [{q},{k}]");
                            if (name == "decoder" && k > q) Assert.Equal(0f, got[q][k]);
                        }
                    }
                }
            }
        }
        finally { cache.Dispose(); }
        var oneHead = await Post("/api/attention", new { model = "t5", prompt = Prompt, layers = new[] { 2 }, heads = new[] { 1 } });
        // Layer 2 exists in the encoder only; each stack returns the asked layers it has.
        Assert.Equal(new[] { 1, 0, 0 }, oneHead.GetProperty("stacks").EnumerateArray().Select(s => s.GetProperty("heads").GetArrayLength()));
        Assert.Contains("outside the model's 0..2", await Refused("/api/attention", new { model = "t5", prompt = Prompt, layers = new[] { 3 } }));

        // Prompt view: next decoder token after "<start> Ben", and the greedy output.
        var run = await Post("/api/run", new { model = "t5", prompt = Prompt, decoder = "Ben", topK = 3 });
        long argmax = t5.Forward(input, decoder)[0, -1].argmax().item<long>();
        Assert.Equal(argmax, run.GetProperty("top")[0].GetProperty("id").GetInt64());
        var (generated, _) = t5.Generate(input, 20);
        Assert.Equal(generated.Select(t5.TokenText), run.GetProperty("generated").EnumerateArray().Select(t => t.GetString()));
        Assert.StartsWith("#", t5.TokenText(511)); // beyond the word-level tokenizer's 401 tokens: shown by id, not an error

        // Lens: the decoder's positions; its last layer is the model's output.
        var lens = await Post("/api/lens", new { model = "t5", prompt = Prompt, decoder = "Ben", target = "park" });
        Assert.Equal(2, lens.GetProperty("tokens").GetArrayLength());
        Assert.Equal(3, lens.GetProperty("layers").GetArrayLength());
        var logits = t5.Forward(input, decoder)[0];
        for (int p = 0; p < 2; p++)
            Assert.Equal(logits[p].argmax().item<long>(), lens.GetProperty("layers")[2].GetProperty("positions")[p].GetProperty("top")[0].GetProperty("id").GetInt64());

        // Patching: the inputs differ at position 4 only, so restoring encoder layer 0 there restores the clean run and elsewhere changes nothing.
        var patch = await Post("/api/patch", new { model = "t5", clean = Prompt, corrupt = Corrupt, answer = "#5", wrong = "#7", decoder = "Ben" });
        var encoderGrid = patch.GetProperty("grids")[0];
        var row0 = encoderGrid.GetProperty("scores")[0].EnumerateArray().Select(v => v.GetDouble()).ToArray();
        for (int p = 0; p < row0.Length; p++) Assert.True(Math.Abs(row0[p] - (p == 4 ? 1 : 0)) < 1e-5, $"encoder 0 at {p}: {row0[p]}");
        Assert.Equal(2, patch.GetProperty("grids")[1].GetProperty("columnLabels").GetArrayLength());

        // Refusals by kind, and of what an encoder-decoder's patching does not do.
        foreach (var path in new[] { "/api/microscope", "/api/experts", "/api/graph", "/api/heads" })
            Assert.Contains("encoder-decoder model (t5)", await Refused(path, new { model = "t5", prompt = Prompt }));
        Assert.Contains("residual stream only", await Refused("/api/patch", new { model = "t5", clean = Prompt, corrupt = Corrupt, answer = "#5", what = "mlp" }));
        Assert.Contains("give the decoder text instead of a position", await Refused("/api/patch", new { model = "t5", clean = Prompt, corrupt = Corrupt, answer = "#5", position = 1 }));
        Assert.Contains("1024 at most", await Refused("/api/run", new { model = "t5", prompt = string.Join(" ", Enumerable.Repeat(".", 1100)) }));
    }

    [Fact]
    public async Task AnEncodersAttentionIsBidirectionalAndItsPatchingMetricReadsAnyPosition()
    {
        var attention = await Post("/api/attention", new { model = "bert", prompt = Prompt, layers = new[] { 0 } });
        Assert.False(attention.GetProperty("causal").GetBoolean());
        // Bidirectional: queries put weight on later keys.
        Assert.Contains(attention.GetProperty("heads").EnumerateArray(), h => Rows(h.GetProperty("pattern"))[0].Skip(1).Sum() > 0.1);

        using var bert = LoadBert();
        var clean = bert.ToTokens(Prompt)[0].data<long>().ToArray();
        var corrupt = bert.ToTokens(Corrupt)[0].data<long>().ToArray();
        int differs = Enumerable.Range(0, clean.Length).Single(i => clean[i] != corrupt[i]);
        // The metric at position 1, before the changed token: an encoder carries the change backwards, which a causal model cannot.
        var patch = await Post("/api/patch", new { model = "bert", clean = Prompt, corrupt = Corrupt, answer = "#5", wrong = "#7", position = 1 });
        var grid = patch.GetProperty("grids")[0];
        Assert.Contains("at position 1", grid.GetProperty("metric").GetString());
        Assert.NotEqual(grid.GetProperty("cleanMetric").GetDouble(), grid.GetProperty("corruptedMetric").GetDouble(), 4);
        var row0 = grid.GetProperty("scores")[0].EnumerateArray().Select(v => v.GetDouble()).ToArray();
        for (int p = 0; p < row0.Length; p++) Assert.True(Math.Abs(row0[p] - (p == differs ? 1 : 0)) < 1e-5, $"layer 0 at {p}: {row0[p]}");
        Assert.Contains("metric position 9 is outside", await Refused("/api/patch", new { model = "bert", clean = Prompt, corrupt = Corrupt, answer = "#5", position = 9 }));
        Assert.Contains("the microscope measures causal language models", await Refused("/api/microscope", new { model = "bert", prompt = Prompt }));
        // The same question to a causal model: nothing after position 1 reaches it.
        Assert.Contains("give the same metric", await Refused("/api/patch", new { model = "toy-4l", clean = Prompt, corrupt = Corrupt, answer = "#5", wrong = "#7", position = 1 }));
    }

    [Fact]
    public async Task TheAttentionViewShowsT5sCrossAttentionWithQueriesOverKeys()
    {
        var (playwright, browser, page, errors) = await FeaturePageTests.Browser($"{_server.Url}/#view=attention&model=t5&prompt={Uri.EscapeDataString(Prompt)}&decoder=Ben&stack=cross&layer=1&head=2");
        using var _p = playwright; await using var _b = browser;
        await page.WaitForSelectorAsync("#attn-queries .token");
        Assert.Equal(3, await page.Locator("#attn-stacks button").CountAsync());
        Assert.Equal(8, await page.Locator(".head-cell canvas").CountAsync()); // 2 decoder layers x 4 heads
        Assert.Equal(2, await page.Locator("#attn-queries .token").CountAsync());
        Assert.Equal(6, await page.Locator("#attn-keys .token").CountAsync());
        Assert.True(await page.IsVisibleAsync("#decoder-label"));
        Assert.Contains("unsupported", await page.GetAttributeAsync("#nav a[data-view=microscope]", "class") ?? "");
        await page.HoverAsync("#attn-queries .token >> nth=1");
        var shaded = await page.EvalOnSelectorAllAsync<int>("#attn-keys .token", "els => els.filter(e => e.style.background.startsWith('rgba')).length");
        Assert.Equal(6, shaded);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = FeaturePageTests.ScreenshotPath("t5-cross-attention.png"), FullPage = true });
        // The encoder stack of the same run: a square bidirectional pattern, again as two rows.
        await page.ClickAsync("#attn-stacks button[data-stack=encoder]");
        await page.WaitForFunctionAsync("() => document.querySelectorAll('.head-cell canvas').length === 12");
        Assert.Equal(6, await page.Locator("#attn-queries .token").CountAsync());
        // A view an encoder-decoder does not have says why.
        await page.ClickAsync("#nav a[data-view=microscope]");
        await page.WaitForSelectorAsync("#view .error");
        Assert.Contains("encoder-decoder", await page.InnerTextAsync("#view .error"));
        Assert.DoesNotContain(errors, e => !e.Contains("400"));
    }
}
