using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Mechanist.Features;
using Mechanist.Models;
using Mechanist.Tests.Cli;
using Mechanist.Web;
using Microsoft.Playwright;

namespace Mechanist.Tests.Web;

/// <summary>The built-in model with a feature store of its shipped CLT, served on a free loopback port.</summary>
public sealed class FeatureWorkbenchFixture : IAsyncLifetime
{
    readonly TempDir _dir = new();
    public WorkbenchServer Server { get; private set; } = null!;
    public HttpClient Client { get; private set; } = null!;
    public string Store => Path.Combine(_dir.Path, FeatureBuild.MergedName);

    public async Task InitializeAsync()
    {
        var (code, _, err) = CliRunner.Run("features", "build", "--texts", "600", "--out", _dir.Path);
        if (code != 0) throw new InvalidOperationException(err);
        var model = HookedTransformer.Load(Path.Combine(SharedData.RepoRoot, "models", "toy-4l"));
        Server = WorkbenchServer.Create(new[] { model }, new WorkbenchOptions { Port = 0, FeatureStores = new[] { Store } });
        await Server.StartAsync();
        Client = new HttpClient { BaseAddress = new Uri(Server.Url), Timeout = TimeSpan.FromSeconds(60) };
    }

    public async Task DisposeAsync()
    {
        Client.Dispose();
        await Server.DisposeAsync();
        _dir.Dispose();
    }
}

/// <summary>Feature pages: the API over a feature store and the page in real Chromium.</summary>
[Collection("workbench")]
public sealed class FeaturePageTests(FeatureWorkbenchFixture fx) : IClassFixture<FeatureWorkbenchFixture>
{
    [Fact]
    public async Task TheApiSearchesShowsAndLabelsFeaturesAndRefusesBadRequests()
    {
        var stores = await fx.Client.GetFromJsonAsync<JsonElement>("/api/features");
        Assert.Equal("clt", stores[0].GetProperty("name").GetString());
        var hits = await fx.Client.GetFromJsonAsync<JsonElement>("/api/features/0/search?q=dallas");
        Assert.True(hits.GetArrayLength() > 0);
        int layer = hits[0].GetProperty("layer").GetInt32(), feature = hits[0].GetProperty("feature").GetInt32();
        // The page's numbers are the store's.
        var card = await fx.Client.GetFromJsonAsync<JsonElement>($"/api/features/0/{layer}/{feature}");
        var direct = FeatureStore.Open(fx.Store).Dashboard(layer, feature);
        Assert.Equal(direct.Summary.Count, card.GetProperty("summary").GetProperty("count").GetInt64());
        Assert.Equal(direct.Top.Length, card.GetProperty("top").GetArrayLength());

        var res = await fx.Client.PostAsJsonAsync($"/api/features/0/{layer}/{feature}/label", new { label = "city then 'is'" });
        Assert.Equal(HttpStatusCode.OK, res.StatusCode);
        Assert.Equal("city then 'is'", FeatureStore.Open(fx.Store).Dashboard(layer, feature).Summary.UserLabel);
        res = await fx.Client.PostAsJsonAsync($"/api/features/0/{layer}/{feature}/label", new { label = "" });
        Assert.Null(FeatureStore.Open(fx.Store).Dashboard(layer, feature).Summary.UserLabel);

        Assert.Equal(HttpStatusCode.NotFound, (await fx.Client.GetAsync("/api/features/7/0/1")).StatusCode);
        var bad = await fx.Client.GetAsync("/api/features/0/0/99999");
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("out of range", await bad.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.BadRequest, (await fx.Client.GetAsync("/api/features/0/9/1")).StatusCode);
        var text = await fx.Client.PostAsync($"/api/features/0/{layer}/{feature}/label", new StringContent("x"));
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, text.StatusCode);
        var tooLong = await fx.Client.PostAsJsonAsync($"/api/features/0/{layer}/{feature}/label", new { label = new string('a', 500) });
        Assert.Equal(HttpStatusCode.BadRequest, tooLong.StatusCode);
    }

    [Fact]
    public async Task TheFeaturePageShadesExamplesDrawsTheHistogramAndKeepsALabelAcrossAReload()
    {
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = Environment.GetEnvironmentVariable("MECHANIST_CHROMIUM") ?? "/usr/bin/chromium", Headless = true,
            Args = new[] { "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking" },
        });
        var page = await browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1400, Height = 1000 } });
        var errors = new List<string>();
        page.Console += (_, m) => { if (m.Type == "error") errors.Add(m.Text); };
        page.PageError += (_, e) => errors.Add(e);
        await page.GotoAsync($"{fx.Server.Url}/#view=features");
        await page.FillAsync("#feature-query", "dallas");
        await page.ClickAsync("#feature-search button");
        await page.WaitForSelectorAsync("#feature-hits tr.hit");
        var first = await page.GetAttributeAsync("#feature-hits tr.hit", "data-feature");
        await page.ClickAsync("#feature-hits tr.hit");
        await page.WaitForFunctionAsync("() => location.hash.includes('feature=')");
        await page.WaitForSelectorAsync($".feature-card[data-feature='{first}']");
        Assert.Contains("feature=" + Uri.EscapeDataString(first!), page.Url);
        // Shaded tokens: the firing token is outlined and fully coloured; the histogram has bars.
        Assert.True(await page.Locator("#top-examples .example").CountAsync() > 0);
        Assert.Contains("234, 88, 12", (await page.EvaluateAsync<string>("() => getComputedStyle(document.querySelector('#top-examples .tk.max')).backgroundColor")));
        Assert.True(await page.Locator("svg.histogram rect").CountAsync() > 0);
        Assert.True(await page.Locator("table.logits td.tok").CountAsync() >= 10);

        await page.FillAsync("#label-input", "Texas cities");
        await page.ClickAsync("#label-form button");
        await page.WaitForFunctionAsync("() => document.querySelector('#feature-label').textContent === 'Texas cities'");
        Directory.CreateDirectory(Path.Combine(AppContext.BaseDirectory, "screenshots"));
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(AppContext.BaseDirectory, "screenshots", "features.png"), FullPage = true });
        await page.ReloadAsync();
        await page.WaitForSelectorAsync($".feature-card[data-feature='{first}']");
        Assert.Equal("Texas cities", await page.TextContentAsync("#feature-label"));
        // The label is searchable.
        await page.FillAsync("#feature-query", "texas cities");
        await page.ClickAsync("#feature-search button");
        await page.WaitForFunctionAsync($"() => document.querySelector('#feature-hits tr.hit')?.dataset.feature === '{first}'");
        Assert.Empty(errors);
        var (l, f) = (int.Parse(first!.Split(':')[0]), int.Parse(first.Split(':')[1]));
        FeatureStore.Open(fx.Store).SetLabel(l, f, null);
    }
}
