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
    /// <summary>A folder of published features (circuit-tracer's layout), the server's second store.</summary>
    public string Published => Path.Combine(_dir.Path, "published");

    public async Task InitializeAsync()
    {
        var (code, _, err) = CliRunner.Run("features", "build", "--texts", "600", "--out", _dir.Path);
        if (code != 0) throw new InvalidOperationException(err);
        var model = HookedTransformer.Load(Path.Combine(SharedData.RepoRoot, "models", "toy-4l"));
        Features.PublishedFeaturesTests.WriteFixture(Published);
        Server = WorkbenchServer.Create(new[] { model }, new WorkbenchOptions
        {
            Port = 0, FeatureStores = new[] { Store, Published }, GraphDir = Path.Combine(_dir.Path, "graphs"),
            Transcoders = new Dictionary<string, string> { ["toy-4l"] = Path.Combine(SharedData.RepoRoot, "models", "toy-4l", "clt") },
        });
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

/// <summary>Feature pages, the attribution-graph explorer, interventions and steering: the API and the pages in real Chromium.</summary>
[Collection("workbench")]
public sealed class FeaturePageTests(FeatureWorkbenchFixture fx) : IClassFixture<FeatureWorkbenchFixture>
{
    [Fact]
    public async Task TheApiSearchesShowsAndLabelsFeaturesAndRefusesBadRequests()
    {
        var stores = await fx.Client.GetFromJsonAsync<JsonElement>("/api/features");
        Assert.Equal("clt", stores[0].GetProperty("name").GetString());
        // The store built with the served model's transcoders names that model (its features steer there); published ones name none.
        Assert.Equal("toy-4l", stores[0].GetProperty("model").GetString());
        Assert.Equal(JsonValueKind.Null, stores[1].GetProperty("model").ValueKind);
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

    /// <summary>Debian's Chromium on <paramref name="url"/>, collecting console and page errors.</summary>
    internal static async Task<(IPlaywright, IBrowser, IPage, List<string>)> Browser(string url)
    {
        var playwright = await Playwright.CreateAsync();
        var browser = await playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = Environment.GetEnvironmentVariable("MECHANIST_CHROMIUM") ?? "/usr/bin/chromium", Headless = true,
            Args = new[] { "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking" },
        });
        var page = await browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1500, Height = 1000 } });
        var errors = new List<string>();
        page.Console += (_, m) => { if (m.Type == "error") errors.Add(m.Text); };
        page.PageError += (_, e) => errors.Add(e);
        await page.GotoAsync(url);
        return (playwright, browser, page, errors);
    }

    internal static string ScreenshotPath(string name)
    {
        Directory.CreateDirectory(Path.Combine(AppContext.BaseDirectory, "screenshots"));
        return Path.Combine(AppContext.BaseDirectory, "screenshots", name);
    }

    [Fact]
    public async Task TheFeaturePageShadesExamplesDrawsTheHistogramAndKeepsALabelAcrossAReload()
    {
        var (playwright, browser, page, errors) = await Browser($"{fx.Server.Url}/#view=features");
        using var _p = playwright; await using var _b = browser;
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
        // The most similar features (output-direction cosine) link to their own cards.
        var similarFirst = await page.GetAttributeAsync("#similar-features a.similar >> nth=0", "data-feature");
        Assert.NotNull(similarFirst);
        await page.ClickAsync("#similar-features a.similar >> nth=0");
        await page.WaitForSelectorAsync($".feature-card[data-feature='{similarFirst}']");
        await page.GoBackAsync();
        await page.WaitForSelectorAsync($".feature-card[data-feature='{first}']");

        await page.FillAsync("#label-input", "Texas cities");
        await page.ClickAsync("#label-form button");
        await page.WaitForFunctionAsync("() => document.querySelector('#feature-label').textContent === 'Texas cities'");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = ScreenshotPath("features.png"), FullPage = true });
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

    [Fact]
    public async Task AFeaturePageSteersTheModelWithItsFeature()
    {
        // The store was built with toy-4l's shipped CLT, which the server serves: its pages can steer.
        var (playwright, browser, page, errors) = await Browser($"{fx.Server.Url}/#view=features&feature=2:570");
        using var _p = playwright; await using var _b = browser;
        await page.WaitForSelectorAsync("#feature-steer");
        // 2:570 fires on state capitals in stories; set at twice its maximum everywhere, it rewrites who gives what to whom.
        await page.FillAsync("#fs-prompt", "When Mary and John went to the store,");
        await page.ClickAsync("#feature-steer button");
        await page.WaitForSelectorAsync("#fs-after", new PageWaitForSelectorOptions { Timeout = 60_000 });
        string before = (await page.TextContentAsync("#fs-before"))!, after = (await page.TextContentAsync("#fs-after"))!;
        Assert.NotEqual(before, after);
        // The same setting through the library's own intervention: the page shows what the library computes.
        var report = await fx.Client.PostAsJsonAsync("/api/intervene", new { prompt = "When Mary and John went to the store,",
            set = new[] { $"2:*:570={await page.InputValueAsync("#fs-value")}" }, generate = 12, topK = 5 });
        var expected = JsonDocument.Parse(await report.Content.ReadAsStringAsync()).RootElement.GetProperty("generated").GetProperty("intervened");
        Assert.Equal(string.Join(' ', expected.EnumerateArray().Select(t => t.GetString())), after);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = ScreenshotPath("feature-steer.png"), FullPage = true });
        Assert.Empty(errors);
    }

    [Fact]
    public async Task PublishedFeaturesOpenAsFeaturePagesReadOnly()
    {
        var (playwright, browser, page, errors) = await Browser($"{fx.Server.Url}/#view=features&store=1&feature=0:1");
        using var _p = playwright; await using var _b = browser;
        await page.WaitForSelectorAsync(".feature-card[data-feature='0:1']");
        Assert.Equal("cats on mats", await page.TextContentAsync("#feature-label"));
        Assert.Contains("published features keep no token counts", await page.TextContentAsync(".feature-card"));
        Assert.Contains("equal-width bins", await page.TextContentAsync("svg.histogram"));
        Assert.Equal(3, await page.Locator("svg.histogram rect").CountAsync());
        Assert.Contains("Subsample Interval 0", await page.TextContentAsync("details.interval summary"));
        Assert.Equal(" cat", await page.TextContentAsync("#top-examples .tk.max"));
        Assert.Equal(0, await page.Locator("#feature-steer").CountAsync()); // no served model built these features
        // A text search and a label are refused with the reason.
        await page.FillAsync("#feature-query", "cat");
        await page.ClickAsync("#feature-search button");
        await page.WaitForSelectorAsync("#feature-list .error");
        Assert.Contains("LAYER:FEATURE", await page.TextContentAsync("#feature-list .error"));
        var label = await fx.Client.PostAsJsonAsync("/api/features/1/0/1/label", new { label = "x" });
        Assert.Equal(400, (int)label.StatusCode);
        string refusal = await label.Content.ReadAsStringAsync();
        Assert.Contains("published: published features are read-only", refusal); // the folder by its name, never the server's path to it
        Assert.DoesNotContain(Path.GetDirectoryName(fx.Published)!, refusal);
        Assert.All(errors, e => Assert.Contains("400", e)); // the refused search's answer, nothing else
    }

    /// <summary>Client coordinates of a graph node, from the explorer's own transform.</summary>
    static async Task<(float X, float Y)> NodePoint(IPage page, string id)
    {
        var p = await page.EvaluateAsync<float[]>(@"id => { const x = window.mechanistGraph.explorer, n = x.data.byId.get(id), r = x.canvas.getBoundingClientRect();
            return [r.left + x.tx + n.x * x.scale, r.top + x.ty + n.y * x.scale]; }", id);
        return (p[0], p[1]);
    }

    [Fact]
    public async Task TheGraphExplorerTracesPinsGroupsSavesAndAnInterventionFromTheGraphChangesTheAnswer()
    {
        var (playwright, browser, page, errors) = await Browser($"{fx.Server.Url}/#view=graph");
        using var _p = playwright; await using var _b = browser;
        await page.FillAsync("#graph-prompt", "The capital of the state containing Dallas is");
        await page.ClickAsync("#graph-form button");
        await page.WaitForFunctionAsync("() => window.mechanistGraph.explorer && window.mechanistGraph.explorer.visible.size > 5", null, new PageWaitForFunctionOptions { Timeout = 60_000 });
        // The side panel is drawn last (after the node labels load); node positions on screen are final only then.
        await page.WaitForSelectorAsync("#graph-pins h3");
        Assert.Contains("graph=g-", page.Url);
        // The feature budget is asked in the form, sent, written in the graph's metadata and said above the graph.
        Assert.Contains("with a budget of 400 feature nodes", await page.InnerTextAsync("#graph-budget-note"));
        Assert.Equal(400, await page.EvaluateAsync<int>(
            "async () => (await (await fetch('/api/graphs/' + new URLSearchParams(location.hash.slice(1)).get('graph'))).json()).metadata.max_feature_nodes"));
        // The most influential features at the last position ("is").
        var top = await page.EvaluateAsync<string[]>(@"() => window.mechanistGraph.explorer.data.nodes
            .filter(n => n.feature_type === 'cross layer transcoder' && n.ctx_idx === 8).sort((a, b) => a.influence - b.influence).slice(0, 10).map(n => n.node_id)");
        Assert.Equal(10, top.Length);
        // Hover highlights neighbours; a click opens the feature's card.
        var (x0, y0) = await NodePoint(page, top[0]);
        // Approach in steps: several mousemove events, as a real pointer sends.
        await page.Mouse.MoveAsync(x0 - 30, y0 - 30);
        await page.Mouse.MoveAsync(x0, y0, new MouseMoveOptions { Steps = 6 });
        await page.WaitForFunctionAsync("id => window.mechanistGraph.explorer.hover?.node_id === id", top[0]);
        Assert.True(await page.EvaluateAsync<int>("() => (window.mechanistGraph.explorer.neighbours.get(window.mechanistGraph.explorer.hover) ?? []).length") > 0);
        // Every node sits inside its token's column and has a label (the store's, else L{l}/{f}); leaving the canvas clears the tooltip.
        Assert.True(await page.EvaluateAsync<bool>(@"() => { const d = window.mechanistGraph.explorer.data;
            return d.nodes.every(n => n.x > d.colX[n.ctx_idx] && n.x < d.colX[n.ctx_idx + 1] - 11); }"));
        Assert.True(await page.EvaluateAsync<bool>(@"() => { const x = window.mechanistGraph.explorer;
            return [...x.visible].every(n => n.feature_type === 'embedding' || x.labelOf(n).length > 0); }"));
        Assert.True(await page.IsVisibleAsync("#graph-tip"));
        await page.Mouse.MoveAsync(2, 2, new MouseMoveOptions { Steps = 4 });
        await page.WaitForFunctionAsync("() => getComputedStyle(document.querySelector('#graph-tip')).display === 'none'");
        await page.Mouse.ClickAsync(x0, y0);
        var f = top[0].Split('_');
        await page.WaitForSelectorAsync($"#node-card .feature-card[data-feature='{f[0]}:{f[1]}']");
        // The clicked node's incoming and outgoing edges, strongest first, as the file holds them.
        var strongestIn = await page.EvaluateAsync<double>(@"async id => { const g = await (await fetch('/api/graphs/' + new URLSearchParams(location.hash.slice(1)).get('graph'))).json();
            return Math.max(...g.links.filter(l => l.target === id).map(l => Math.abs(l.weight))); }", top[0]);
        var firstIn = await page.TextContentAsync("#node-edges table:first-child tr[data-node] td:nth-child(3)");
        Assert.Equal(strongestIn, Math.Abs(double.Parse(firstIn!, System.Globalization.CultureInfo.InvariantCulture)), 3);
        Assert.Contains("outgoing", await page.TextContentAsync("#node-edges"));
        // An edge from another position names the head that carried it; its QK terms say why that head attended there, and
        // hovering a term marks both of its components in the graph.
        await page.ClickAsync("#node-edges table:first-child a[data-qk]");
        await page.WaitForSelectorAsync("#qk-terms tr[data-q]");
        Assert.Contains("Why L", await page.TextContentAsync("#qk-panel h3"));
        string qkKey = (await page.GetAttributeAsync("#node-edges table:first-child a[data-qk]", "data-qk"))!;
        var qkSums = await page.EvaluateAsync<double[]>(@"key => { const r = window.mechanistGraph.explorer.data.qk.get(key);
            return [r.terms.reduce((a, t) => a + Number(t.value), 0) + Number(r.rest), Number(r.score)]; }", qkKey);
        Assert.Equal(qkSums[1], qkSums[0], 3);
        await page.HoverAsync("#qk-terms tr[data-q] >> nth=0");
        await page.WaitForFunctionAsync("() => window.mechanistGraph.explorer.marked.size === 2");
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = ScreenshotPath("graph-qk.png"), FullPage = true });
        await page.EvaluateAsync("() => window.scrollTo(0, 0)");
        // Shift+click pins; pinned nodes are grouped into a supernode and saved.
        await page.Keyboard.DownAsync("Shift");
        foreach (var id in top) { var (x, y) = await NodePoint(page, id); await page.Mouse.ClickAsync(x, y); }
        await page.Keyboard.UpAsync("Shift");
        await page.WaitForFunctionAsync("() => window.mechanistGraph.explorer.pinned.size === 10");
        foreach (var box in await page.QuerySelectorAllAsync("#pin-list input")) await box.CheckAsync();
        await page.FillAsync("#group-name", "Texas capital");
        await page.ClickAsync("#group-form button");
        await page.WaitForSelectorAsync(".supernode");
        await page.ClickAsync("#save-state");
        await page.WaitForFunctionAsync("() => document.querySelector('#save-status').textContent === 'saved'");
        string slug = new Uri(page.Url).Fragment.Split('&').First(p => p.StartsWith("graph=") || p.StartsWith("#graph=")).Split('=')[1];
        var saved = JsonDocument.Parse(File.ReadAllText(Path.Combine(fx.Server.GraphDir, slug + ".json"))).RootElement.GetProperty("qParams");
        Assert.Equal(10, saved.GetProperty("pinnedIds").GetArrayLength());
        Assert.Equal("Texas capital", saved.GetProperty("supernodes")[0][0].GetString());
        // The pinned subgraph only; thresholds.
        // The pinned subgraph keeps the tokens and logits, draws the supernode as one node, and sums its members' edges.
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = ScreenshotPath("graph.png"), FullPage = true });
        await page.CheckAsync("#pinned-only");
        await page.WaitForFunctionAsync("() => [...window.mechanistGraph.explorer.visible].some(n => n.isSupernode)");
        var kinds = await page.EvaluateAsync<string[]>("() => [...window.mechanistGraph.explorer.visible].map(n => n.feature_type)");
        var tokens = await page.EvaluateAsync<int>("() => window.mechanistGraph.explorer.data.nodes.filter(n => n.feature_type === 'embedding').length");
        Assert.Equal(1, kinds.Count(k => k == "supernode"));
        Assert.Equal(tokens, kinds.Count(k => k == "embedding"));
        Assert.Contains("logit", kinds);
        Assert.DoesNotContain("cross layer transcoder", kinds);
        var sums = await page.EvaluateAsync<double[]>(@"async () => {
            const x = window.mechanistGraph.explorer, g = await (await fetch('/api/graphs/' + new URLSearchParams(location.hash.slice(1)).get('graph'))).json();
            const members = new Set(x.supernodes[0].slice(1)), logit = g.nodes.find(n => n.feature_type === 'logit' && n.is_target_logit).node_id;
            const edge = x.edges.find(l => l.s.isSupernode && l.t.node_id === logit);
            return [edge ? edge.w : 0, g.links.filter(l => members.has(l.source) && l.target === logit).reduce((a, l) => a + l.weight, 0)]; }");
        Assert.NotEqual(0, sums[1]);
        Assert.Equal(sums[1], sums[0], 4);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = ScreenshotPath("graph-pinned.png"), FullPage = true });

        // A reload keeps pins, supernodes and the subgraph toggle (URL); a fresh visit with only the graph gets them from the saved file.
        await page.ReloadAsync();
        await page.WaitForFunctionAsync("() => window.mechanistGraph.explorer?.pinned.size === 10 && window.mechanistGraph.explorer.supernodes.length === 1");
        Assert.True(await page.IsCheckedAsync("#pinned-only"));
        await page.GotoAsync($"{fx.Server.Url}/#view=graph&graph={slug}");
        await page.WaitForFunctionAsync("() => window.mechanistGraph.explorer?.pinned.size === 10 && window.mechanistGraph.explorer.supernodes[0][0] === 'Texas capital'");

        // Intervene on the supernode: x-2 on every member turns the answer away from Austin.
        await page.FillAsync("[data-target='0']", "x-2");
        await page.FillAsync("#intervene-generate", "3");
        await page.ClickAsync("#intervene-form button");
        await page.WaitForSelectorAsync("#intervene-result table", new PageWaitForSelectorOptions { Timeout = 60_000 });
        string before = (await page.TextContentAsync("#intervene-result table:first-child td.tok"))!;
        string after = (await page.GetAttributeAsync("#intervene-result", "data-after"))!;
        Assert.Equal("\"Austin\"", before.Trim());
        Assert.NotEqual("Austin", after.Trim());
        Assert.Contains("Austin", await page.TextContentAsync("#gen-before"));
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = ScreenshotPath("graph-intervention.png"), FullPage = true });
        // A swap from the graph: the last position's layer-0 features taken from "The capital of Oregon is".
        await page.FillAsync("#swap-prompt", "The capital of Oregon is");
        await page.FillAsync("#swap-layers", "0");
        await page.ClickAsync("#swap-form button");
        await page.WaitForFunctionAsync("() => document.querySelector('#intervene-result').dataset.after === 'Salem'", null, new PageWaitForFunctionOptions { Timeout = 60_000 });
        Assert.Empty(errors);
    }

    [Fact]
    public async Task AGraphTracedByTheCliSwapsAndIntervenesInTheWorkbench()
    {
        // Traced with the CLI; its display tokens run together ("<bos>Thecapitalof…") do not tokenize back into the prompt,
        // so the old files' metadata.prompt broke every intervention. The page now sends the graph's token ids.
        using var dir = new TempDir();
        var (code, _, err) = Cli.CliRunner.Run("trace", "--prompt", "The capital of the state containing Dallas is", "--out", dir.File("cli-dallas.json"));
        Assert.True(code == 0, err);
        string path = Path.Combine(fx.Server.GraphDir, "cli-dallas.json");
        var root = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(dir.File("cli-dallas.json")))!;
        var meta = root["metadata"]!;
        meta["slug"] = "cli-dallas";
        meta["prompt"] = string.Concat(meta["prompt_tokens"]!.AsArray().Select(t => (string)t!)); // as files traced before carried it
        var feature = root["nodes"]!.AsArray().First(n => (string)n!["feature_type"]! == "cross layer transcoder" && (int)n!["ctx_idx"]! == 8)!;
        root["qParams"] = new System.Text.Json.Nodes.JsonObject
        {
            ["pinnedIds"] = new System.Text.Json.Nodes.JsonArray((string)feature["node_id"]!),
            ["supernodes"] = new System.Text.Json.Nodes.JsonArray(),
        };
        File.WriteAllText(path, root.ToJsonString());
        Mechanist.Attribution.GraphFile.UpdateIndex(path);

        var (playwright, browser, page, errors) = await Browser($"{fx.Server.Url}/#view=graph&graph=cli-dallas");
        using var _p = playwright; await using var _b = browser;
        await page.WaitForFunctionAsync("() => window.mechanistGraph.explorer?.pinned.size === 1", null, new PageWaitForFunctionOptions { Timeout = 60_000 });
        await page.FillAsync("#swap-prompt", "The capital of Oregon is");
        await page.FillAsync("#swap-layers", "0");
        await page.ClickAsync("#swap-form button");
        await page.WaitForFunctionAsync("() => document.querySelector('#intervene-result').dataset.after === 'Salem'", null, new PageWaitForFunctionOptions { Timeout = 60_000 });
        // The pinned feature set to x0 runs (before: "'0:8:776=x0': … positions 0..2").
        await page.FillAsync("[data-target='0']", "x0");
        await page.ClickAsync("#intervene-form button");
        await page.WaitForFunctionAsync("() => document.querySelector('#intervene-result p.muted')?.textContent.includes('feature setting')", null, new PageWaitForFunctionOptions { Timeout = 60_000 });
        Assert.Null(await page.QuerySelectorAsync("#intervene-result p.error"));
        Assert.Empty(errors);
    }

    [Fact]
    public async Task TheSteeringPlaygroundShowsUnsteeredAndSteeredContinuationsSideBySide()
    {
        var (playwright, browser, page, errors) = await Browser($"{fx.Server.Url}/#view=steer");
        using var _p = playwright; await using var _b = browser;
        // The defaults visibly steer the built-in model, in both modes ("market" becomes "park"; "Owen" becomes "Mary").
        await page.ClickAsync("#steer-form button");
        await page.WaitForSelectorAsync("#steer-after", new PageWaitForSelectorOptions { Timeout = 60_000 });
        Assert.NotEqual(await page.TextContentAsync("#steer-before"), await page.TextContentAsync("#steer-after"));
        await page.CheckAsync("input[name=steer-mode][value=feature]");
        await page.ClickAsync("#steer-form button");
        await page.WaitForFunctionAsync("() => document.querySelector('.muted')?.textContent.includes('feature setting')", null, new PageWaitForFunctionOptions { Timeout = 60_000 });
        Assert.NotEqual(await page.TextContentAsync("#steer-before"), await page.TextContentAsync("#steer-after"));
        await page.FillAsync("#steer-prompt", "The capital of the state containing Dallas is");
        await page.FillAsync("#steer-features", "0:324=x-2\n0:45=x-2\n1:559=x-2");
        await page.ClickAsync("#steer-form button");
        await page.WaitForFunctionAsync("() => document.querySelector('#steer-before')?.textContent.includes('Dallas')", null, new PageWaitForFunctionOptions { Timeout = 60_000 });
        // The continuations end where the model stops; the stop token (BOS doubles as EOS in the toy model) is not shown.
        Assert.DoesNotContain("<bos>", await page.TextContentAsync("#steer-before"));
        Assert.DoesNotContain("<bos>", await page.TextContentAsync("#steer-after"));
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = ScreenshotPath("steer.png"), FullPage = true });
        Assert.Empty(errors);
    }

    [Fact]
    public async Task TheGraphApiRefusesBadSlugsBadStatesAndBadInterventions()
    {
        var res = await fx.Client.PostAsJsonAsync("/api/graph", new { prompt = "The capital of the state containing Tulsa is", maxFeatureNodes = 60 });
        Assert.Equal(HttpStatusCode.OK, res.StatusCode);
        var graph = JsonDocument.Parse(await res.Content.ReadAsStringAsync()).RootElement;
        string slug = graph.GetProperty("metadata").GetProperty("slug").GetString()!;
        Assert.Equal("The capital of the state containing Tulsa is", graph.GetProperty("metadata").GetProperty("prompt").GetString());
        var index = await fx.Client.GetFromJsonAsync<JsonElement>("/api/graphs");
        Assert.Contains(index.GetProperty("graphs").EnumerateArray(), g => g.GetProperty("slug").GetString() == slug);

        Assert.Equal(HttpStatusCode.NotFound, (await fx.Client.GetAsync("/api/graphs/..%2Fetc")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await fx.Client.GetAsync("/api/graphs/nope")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await fx.Client.PostAsJsonAsync($"/api/graphs/{slug}/state", new { supernodes = new[] { new[] { "lonely" } } })).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await fx.Client.PostAsync($"/api/graphs/{slug}/state", new StringContent("{oops", System.Text.Encoding.UTF8, "application/json"))).StatusCode);
        // A failed save leaves the file as it was.
        Assert.Equal(0, JsonDocument.Parse(File.ReadAllText(Path.Combine(fx.Server.GraphDir, slug + ".json"))).RootElement.GetProperty("qParams").GetProperty("pinnedIds").GetArrayLength());

        var bad = await fx.Client.PostAsJsonAsync("/api/intervene", new { prompt = "The capital of", set = new[] { "9:1:2=0" } });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("layer", await bad.Content.ReadAsStringAsync());
        bad = await fx.Client.PostAsJsonAsync("/api/intervene", new { prompt = "The capital of", set = new[] { "garbage" } });
        Assert.Contains("LAYER:POSITION:FEATURE=VALUE", await bad.Content.ReadAsStringAsync());
        // A swap: the state at "is" taken from another prompt moves the answer to that state's capital.
        var swap = await fx.Client.PostAsJsonAsync("/api/intervene", new { prompt = "The capital of the state containing Dallas is", swapPrompt = "The capital of Oregon is", swapLayers = new[] { 0 } });
        var swapped = JsonDocument.Parse(await swap.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal("Austin", swapped.GetProperty("before")[0].GetProperty("token").GetString());
        Assert.Equal("Salem", swapped.GetProperty("after")[0].GetProperty("token").GetString());
        bad = await fx.Client.PostAsJsonAsync("/api/steer", new { prompt = "Alice", positive = Array.Empty<string>(), negative = new[] { "x" } });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        bad = await fx.Client.PostAsJsonAsync("/api/graph", new { prompt = "x", nodeThreshold = 3 });
        string webError = JsonDocument.Parse(await bad.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetString()!;
        Assert.Equal("the node threshold must be in (0, 1] (got 3)", webError);
        // The CLI parses through the same vocabulary: the same words.
        var (code, _, cliErr) = Mechanist.Tests.Cli.CliRunner.Run("trace", "--prompt", "x", "--node-threshold", "3", "--out", Path.Combine(Path.GetTempPath(), "never-written.json"));
        Assert.Equal(2, code);
        Assert.Contains(webError, cliErr);
    }

    [Fact]
    public async Task TheExplorerOpensCircuitTracersGraphFilesAndRefusesOtherJson()
    {
        var (playwright, browser, page, errors) = await Browser($"{fx.Server.Url}/#view=graph");
        using var _p = playwright; await using var _b = browser;
        // An independent reference graph written by circuit-tracer itself.
        string golden = SharedData.PathOf("golden", "attribution", "gpt2_clt_relu_mlpin", "graph.json");
        var expected = JsonDocument.Parse(File.ReadAllText(golden)).RootElement;
        await page.SetInputFilesAsync("#graph-file", golden);
        await page.WaitForFunctionAsync("() => window.mechanistGraph.explorer?.data.nodes.length > 0");
        Assert.Equal(expected.GetProperty("nodes").GetArrayLength(), await page.EvaluateAsync<int>("() => window.mechanistGraph.explorer.data.nodes.length"));
        Assert.Equal(expected.GetProperty("links").GetArrayLength(), await page.EvaluateAsync<int>("() => window.mechanistGraph.explorer.edges.length"));
        // Every node sits in its layer's row and its position's column.
        Assert.True(await page.EvaluateAsync<bool>(@"() => window.mechanistGraph.explorer.data.nodes.every(n =>
            n.feature_type === 'embedding' ? n.row === 0 : n.feature_type === 'logit' ? n.row === window.mechanistGraph.explorer.data.layers + 1 : n.row === Number(n.layer) + 1)"));
        using var tmp = new TempDir();
        File.WriteAllText(tmp.File("other.json"), "{\"hello\": 1}");
        await page.SetInputFilesAsync("#graph-file", tmp.File("other.json"));
        await page.WaitForSelectorAsync("#graph-message .error");
        Assert.Contains("nodes", await page.TextContentAsync("#graph-message"));
        Assert.Empty(errors);
    }
}
