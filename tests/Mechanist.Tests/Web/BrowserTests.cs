using Microsoft.Playwright;

namespace Mechanist.Tests.Web;

/// <summary>
/// The workbench in real Chromium (Debian's /usr/bin/chromium, driven by Playwright): every view opens,
/// renders real data for a submitted prompt, and logs no console errors. Screenshots go to
/// tests/Mechanist.Tests/bin/.../screenshots.
/// </summary>
[Collection("workbench")]
public sealed class BrowserTests(WorkbenchFixture fx) : IClassFixture<WorkbenchFixture>, IAsyncLifetime
{
    IPlaywright _playwright = null!;
    IBrowser _browser = null!;
    static readonly string Screenshots = Path.Combine(AppContext.BaseDirectory, "screenshots");

    static string ChromiumPath => Environment.GetEnvironmentVariable("MECHANIST_CHROMIUM") ?? "/usr/bin/chromium";

    public async Task InitializeAsync()
    {
        if (!File.Exists(ChromiumPath))
            throw new InvalidOperationException($"Chromium not found at {ChromiumPath}: install Debian's chromium (.ci/run does) or set MECHANIST_CHROMIUM");
        Directory.CreateDirectory(Screenshots);
        _playwright = await Playwright.CreateAsync();
        _browser = await _playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = ChromiumPath, Headless = true,
            Args = new[] { "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync" },
        });
    }

    public async Task DisposeAsync()
    {
        await _browser.CloseAsync();
        _playwright.Dispose();
    }

    async Task<(IPage Page, List<string> Errors)> Open(string hash)
    {
        var page = await _browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1300, Height = 900 } });
        var errors = new List<string>();
        page.Console += (_, msg) => { if (msg.Type == "error") errors.Add(msg.Text); };
        page.PageError += (_, e) => errors.Add(e);
        await page.GotoAsync($"{fx.BaseUrl}/{hash}");
        return (page, errors);
    }

    static async Task Submit(IPage page, string prompt)
    {
        await page.FillAsync("#prompt", prompt);
        await page.ClickAsync("#prompt-form button");
    }

    [Theory]
    [InlineData("run", "#next-token td.tok")]
    [InlineData("attention", ".head-cell canvas")]
    [InlineData("lens", "#lens-table td.cell")]
    [InlineData("microscope", "#nonlinearity td.cell")]
    [InlineData("heads", "#heads-table th")]
    [InlineData("patch&clean=Lily+and+Tim+went+to+the+park.+Tim+gave+the+ball+to&corrupt=Lily+and+Tim+went+to+the+park.+Lily+gave+the+ball+to&answer=+Lily&wrong=+Tim", "#grid td.cell")]
    [InlineData("models", "details summary")]
    public async Task EachViewRendersRealDataWithoutConsoleErrors(string view, string selector)
    {
        var (page, errors) = await Open($"#view={view}");
        await Submit(page, "Lily and Ben went to the park. Ben gave the ball to");
        await page.WaitForSelectorAsync(selector, new PageWaitForSelectorOptions { Timeout = 60_000 });
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(Screenshots, $"{view.Split('&')[0]}.png"), FullPage = true });
        Assert.Empty(errors);
        Assert.DoesNotContain("class=\"error\"", await page.InnerHTMLAsync("#view"));
        Assert.Contains("view=" + view.Split('&')[0], page.Url); // the view's state lives in the URL
    }

    [Fact]
    public async Task PromptTokensAndPredictionsShowAndTheUrlCarriesThePrompt()
    {
        var (page, errors) = await Open("#view=run");
        await Submit(page, "Once upon a time");
        await page.WaitForSelectorAsync("#next-token td.tok");
        var tokens = await page.Locator(".token").AllInnerTextsAsync();
        Assert.StartsWith("\"<s>\"", tokens[0]);
        Assert.Contains(tokens, t => t.StartsWith("\" time\""));
        Assert.Contains("prompt=Once+upon+a+time", page.Url);
        // Reloading the URL restores the same view and prompt.
        await page.ReloadAsync();
        await page.WaitForSelectorAsync("#next-token td.tok");
        Assert.Equal("Once upon a time", await page.InputValueAsync("#prompt"));
        Assert.Empty(errors);
    }

    [Fact]
    public async Task HoveringATokenHighlightsItsAttention()
    {
        var (page, errors) = await Open("#view=attention&prompt=Lily+saw+a+dog.+Lily+saw&layer=1&head=2");
        await page.WaitForSelectorAsync("#attn-tokens .token");
        await page.HoverAsync("#attn-tokens .token >> nth=5");
        var style = await page.GetAttributeAsync("#attn-tokens .token >> nth=0", "style");
        Assert.Contains("background", style ?? "");
        Assert.Empty(errors);
    }

    [Fact]
    public async Task ALongPromptsGridShowsThumbnailsAndTheSelectedHeadInFull()
    {
        string prompt = string.Join(" ", Enumerable.Repeat("Lily saw a dog and the dog saw Lily.", 8));
        var (page, errors) = await Open($"#view=attention&prompt={Uri.EscapeDataString(prompt)}&layer=1&head=2");
        await page.WaitForSelectorAsync("#attn-tokens .token");
        int n = await page.Locator("#attn-tokens .token").CountAsync();
        Assert.True(n > 48, $"{n} tokens");
        Assert.Contains("thumbnails averaged", await page.InnerTextAsync("#view h2"));
        // Grid canvases hold 48 x 48 cells; the selected head's canvas every query and key.
        Assert.Equal(48, await page.EvalOnSelectorAsync<int>(".head-cell canvas", "c => c.width"));
        Assert.Equal(n, await page.EvalOnSelectorAsync<int>("#attn-selected", "c => c.width"));
        await page.HoverAsync($"#attn-tokens .token >> nth={n - 1}");
        Assert.Contains("background", await page.GetAttributeAsync("#attn-tokens .token >> nth=0", "style") ?? "");
        Assert.Empty(errors);
    }

    [Fact]
    public async Task ErrorsFromTheApiShowInThePage()
    {
        var (page, errors) = await Open("#view=lens&target=+Lily+Lily");
        await Submit(page, "Lily went home");
        await page.WaitForSelectorAsync("p.error");
        Assert.Contains("give one token", await page.InnerTextAsync("p.error"));
        errors.RemoveAll(e => e.Contains("400")); // the browser logs the failed request itself
        Assert.Empty(errors);
    }
}
