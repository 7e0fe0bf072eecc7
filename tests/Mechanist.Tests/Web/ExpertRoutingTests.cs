using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Mechanist.Hooks;
using Mechanist.IO;
using Mechanist.Models;
using Mechanist.Web;
using Microsoft.Playwright;
using static TorchSharp.torch;

namespace Mechanist.Tests.Web;

/// <summary>Expert routing in the workbench, on HF's golden Mixtral (with the built-in word-level tokenizer, whose ids fit its vocabulary).</summary>
[Collection("workbench")]
public sealed class ExpertRoutingTests : IAsyncLifetime
{
    WorkbenchServer _server = null!;
    HttpClient _client = null!;
    const string Prompt = "Alice went to the park with Ben";

    public async Task InitializeAsync()
    {
        var mixtral = HookedTransformer.Load(SharedData.PathOf("golden", "models", "mixtral"), new LoadOptions { Open = SharedData.WithToyTokenizer });
        var toy = HookedTransformer.Load(Path.Combine(SharedData.RepoRoot, "models", "toy-4l"));
        _server = WorkbenchServer.Create(new[] { mixtral, toy }, new WorkbenchOptions { Port = 0 });
        await _server.StartAsync();
        _client = new HttpClient { BaseAddress = new Uri(_server.Url) };
    }

    public async Task DisposeAsync() { _client.Dispose(); await _server.DisposeAsync(); }

    [Fact]
    public async Task TheRoutingPageShowsEachTokensTopExpertsAndADenseModelIsRefused()
    {
        var res = await _client.PostAsJsonAsync("/api/experts", new { model = "mixtral", prompt = Prompt });
        Assert.Equal(HttpStatusCode.OK, res.StatusCode);
        var r = JsonDocument.Parse(await res.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(4, r.GetProperty("expertCount").GetInt32());
        int tokens = r.GetProperty("tokens").GetArrayLength();
        // The shown experts are the top-2 of the softmax of the router logits, best first.
        using (var scope = NewDisposeScope())
        {
                using var model = HookedTransformer.Load(SharedData.PathOf("golden", "models", "mixtral"), new LoadOptions { Open = SharedData.WithToyTokenizer });
            var (_, cache) = model.RunWithCache(model.ToTokens(Prompt));
            using var _c = cache;
            for (int l = 0; l < 3; l++)
            {
                var (_, top) = cache[HookKind.RouterLogits, l][0].softmax(-1).topk(2, -1);
                var want = top.data<long>().ToArray();
                var shown = r.GetProperty("layers")[l].GetProperty("experts").EnumerateArray().SelectMany(p => p.EnumerateArray().Select(e => (long)e.GetInt32())).ToArray();
                Assert.Equal(want, shown);
                Assert.Equal(tokens * 2, r.GetProperty("layers")[l].GetProperty("load").EnumerateArray().Sum(x => x.GetInt32()));
            }
        }
        var dense = await _client.PostAsJsonAsync("/api/experts", new { model = "toy-4l", prompt = Prompt });
        Assert.Equal(HttpStatusCode.BadRequest, dense.StatusCode);
        Assert.Contains("no mixture-of-experts layers", await dense.Content.ReadAsStringAsync());

        var (playwright, browser, page, errors) = await FeaturePageTests.Browser($"{_server.Url}/#view=experts&model=mixtral&prompt={Uri.EscapeDataString(Prompt)}");
        using var _p = playwright; await using var _b = browser;
        await page.WaitForSelectorAsync("#routing .expert");
        Assert.Equal(3 * tokens * 2, await page.Locator("#routing .expert").CountAsync());
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = FeaturePageTests.ScreenshotPath("experts.png"), FullPage = true });
        Assert.Empty(errors);
        // The models list says which models have experts; the Experts view is greyed out for a dense one, and not for the MoE
        // (opened anyway, it shows the server's refusal).
        Assert.DoesNotContain("unsupported", await page.GetAttributeAsync("#nav a[data-view=experts]", "class") ?? "");
        await page.SelectOptionAsync("#model", "toy-4l");
        await page.WaitForFunctionAsync("() => document.querySelector('#nav a[data-view=experts]').classList.contains('unsupported')");
        Assert.Equal("needs a mixture-of-experts model", await page.GetAttributeAsync("#nav a[data-view=experts]", "title"));
        Assert.DoesNotContain("unsupported", await page.GetAttributeAsync("#nav a[data-view=run]", "class") ?? "");
        await page.WaitForSelectorAsync("#view .error");
        Assert.Contains("no mixture-of-experts layers", await page.InnerTextAsync("#view .error"));
    }
}
