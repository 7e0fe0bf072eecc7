using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Mechanist.Models;
using Mechanist.Tests.Cli;
using Mechanist.Web;

namespace Mechanist.Tests.Web;

/// <summary>Findings of adversarial runs against the workbench, each a request that was answered wrongly before.</summary>
public class HostileRequestTests : IClassFixture<FeatureWorkbenchFixture>
{
    readonly FeatureWorkbenchFixture _fx;
    string GraphDir => _fx.Server.GraphDir;
    public HostileRequestTests(FeatureWorkbenchFixture fx) => _fx = fx;

    static HookedTransformer Stories() => HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin"));

    static HttpRequestMessage Json(HttpMethod method, string url, object body, string? origin = null, string? fetchSite = null)
    {
        var r = new HttpRequestMessage(method, url) { Content = JsonContent.Create(body) };
        if (origin is not null) r.Headers.Add("Origin", origin);
        if (fetchSite is not null) r.Headers.Add("Sec-Fetch-Site", fetchSite);
        return r;
    }

    /// <summary>This machine's first non-loopback IPv4 address, if it has one.</summary>
    static IPAddress? ExternalAddress() => System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces()
        .SelectMany(i => i.GetIPProperties().UnicastAddresses).Select(u => u.Address)
        .FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a));

    static bool Connects(IPAddress address, int port)
    {
        using var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try { socket.Connect(new IPEndPoint(address, port)); return true; }
        catch (SocketException) { return false; }
    }

    [Theory]
    [InlineData("[127.0.0.1]", "127.0.0.1")]
    [InlineData("::ffff:127.0.0.1", "127.0.0.1")]
    [InlineData("[::ffff:127.0.0.1]", "127.0.0.1")]
    [InlineData(" 127.0.0.1 ", "127.0.0.1")]
    public async Task ALoopbackSpellingBindsOnlyLoopbackAndNeedsNoToken(string host, string bound)
    {
        await using var server = WorkbenchServer.Create(new[] { Stories() }, new WorkbenchOptions { Host = host, Port = 0 });
        await server.StartAsync();
        Assert.Null(server.AccessToken);
        var url = new Uri(server.Url);
        Assert.Equal(bound, url.Host);
        Assert.True(Connects(IPAddress.Parse(bound), url.Port));
        // Bound to every interface before: a request to the machine's own network address got 200 without a token.
        if (ExternalAddress() is { } external) Assert.False(Connects(external, url.Port), $"{host} must not listen on {external}");
    }

    [Fact]
    public async Task BracketedIpv6LoopbackBindsOnlyIpv6Loopback()
    {
        if (!Socket.OSSupportsIPv6) return;
        WorkbenchServer server;
        try
        {
            server = WorkbenchServer.Create(new[] { Stories() }, new WorkbenchOptions { Host = "[::1]", Port = 0 });
            await server.StartAsync();
        }
        catch (IOException) { return; } // no IPv6 loopback in this sandbox
        await using var _ = server;
        Assert.Null(server.AccessToken);
        var port = new Uri(server.Url).Port;
        Assert.True(Connects(IPAddress.IPv6Loopback, port));
        Assert.False(Connects(IPAddress.Loopback, port));
        if (ExternalAddress() is { } external) Assert.False(Connects(external, port));
    }

    [Theory]
    [InlineData("example.com")]
    [InlineData("127.1")]
    [InlineData("[[::1]]")]
    [InlineData("")]
    public void AHostThatIsNotAnAddressIsRefusedWithOneLine(string host)
    {
        var e = Assert.Throws<MechanistException>(() => ListenAddress.Parse(host));
        Assert.Contains("--host must be an IP address", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void NonLoopbackAddressesNeedTheToken()
    {
        Assert.False(ListenAddress.Parse("0.0.0.0").Loopback);
        Assert.True(ListenAddress.Parse("0.0.0.0").AllInterfaces);
        Assert.False(ListenAddress.Parse("[::]").Loopback);
        Assert.False(ListenAddress.Parse("::ffff:10.1.2.3").Loopback);
        Assert.True(ListenAddress.Parse("LOCALHOST").Loopback);
    }

    [Fact]
    public async Task WritesFromAnotherOriginAreRefused()
    {
        var c = _fx.Client;
        string own = _fx.Server.Url.TrimEnd('/');
        var label = "/api/features/0/0/1/label";
        var foreign = await c.SendAsync(Json(HttpMethod.Post, label, new { label = "planted" }, origin: "http://evil.example.com"));
        Assert.Equal(HttpStatusCode.Forbidden, foreign.StatusCode);
        Assert.Contains("cross-origin write refused", (await foreign.Content.ReadFromJsonAsync<ErrorResponse>())!.Error);
        Assert.Equal(HttpStatusCode.Forbidden, (await c.SendAsync(Json(HttpMethod.Post, label, new { label = "planted" }, origin: "null"))).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await c.SendAsync(Json(HttpMethod.Post, label, new { label = "planted" }, fetchSite: "cross-site"))).StatusCode);
        // Another port of the same host is another origin.
        var otherPort = new UriBuilder(own) { Port = new Uri(own).Port + 1 }.Uri.ToString().TrimEnd('/');
        Assert.Equal(HttpStatusCode.Forbidden, (await c.SendAsync(Json(HttpMethod.Post, label, new { label = "planted" }, origin: otherPort))).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await c.SendAsync(Json(HttpMethod.Post, "/api/graph", new { prompt = "The capital of" }, origin: "http://evil.example.com"))).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await c.SendAsync(Json(HttpMethod.Post, "/api/graphs/g-x/state", new { pinnedIds = new[] { "a" } }, origin: "http://evil.example.com"))).StatusCode);
        // The label was never written; the page's own origin (and a script without Origin) still writes.
        var store = Mechanist.Features.FeatureStore.Open(_fx.Store);
        Assert.NotEqual("planted", store.Dashboard(0, 1).Summary.UserLabel);
        Assert.Equal(HttpStatusCode.OK, (await c.SendAsync(Json(HttpMethod.Post, label, new { label = "mine" }, origin: own, fetchSite: "same-origin"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await c.SendAsync(Json(HttpMethod.Post, label, new { label = "mine" }))).StatusCode);
        // Reads are not writes.
        var read = new HttpRequestMessage(HttpMethod.Get, "/api/models"); read.Headers.Add("Origin", "http://evil.example.com");
        Assert.Equal(HttpStatusCode.OK, (await c.SendAsync(read)).StatusCode);
    }

    [Fact]
    public async Task APlantedLinkInTheGraphsFolderIsNeverFollowed()
    {
        Directory.CreateDirectory(GraphDir);
        using var outside = new TempDir();
        File.WriteAllText(outside.File("secret.json"), "{\"secret\": \"do not serve\"}");
        File.CreateSymbolicLink(Path.Combine(GraphDir, "g-planted.json"), outside.File("secret.json"));
        var get = await _fx.Client.GetAsync("/api/graphs/g-planted");
        Assert.Equal(HttpStatusCode.NotFound, get.StatusCode);
        Assert.DoesNotContain("do not serve", await get.Content.ReadAsStringAsync());
        var save = await _fx.Client.SendAsync(Json(HttpMethod.Post, "/api/graphs/g-planted/state", new { pinnedIds = new[] { "0_1_2" } }));
        Assert.Equal(HttpStatusCode.NotFound, save.StatusCode);
        Assert.Equal("{\"secret\": \"do not serve\"}", File.ReadAllText(outside.File("secret.json")));
    }

    [Fact]
    public async Task SavingStateOnAMalformedGraphAnswersAJsonError()
    {
        Directory.CreateDirectory(GraphDir);
        File.WriteAllText(Path.Combine(GraphDir, "g-broken.json"), "{\"metadata\": {\"slug\": \"g-broken\"}, \"nodes\": [1, 2,");
        var save = await _fx.Client.SendAsync(Json(HttpMethod.Post, "/api/graphs/g-broken/state", new { pinnedIds = new[] { "0_1_2" } }));
        Assert.Equal((HttpStatusCode)422, save.StatusCode);
        var error = await save.Content.ReadFromJsonAsync<ErrorResponse>();
        Assert.Contains("not valid JSON", error!.Error);
        Assert.Equal("{\"metadata\": {\"slug\": \"g-broken\"}, \"nodes\": [1, 2,", File.ReadAllText(Path.Combine(GraphDir, "g-broken.json")));
    }

    [Fact]
    public async Task ReTracingAPromptKeepsItsSavedPinsAndSupernodes()
    {
        var body = new { prompt = "The capital of the state containing Dallas is", maxFeatureNodes = 40 };
        var first = await _fx.Client.PostAsJsonAsync("/api/graph", body);
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        using var graph = JsonDocument.Parse(await first.Content.ReadAsStringAsync());
        string slug = graph.RootElement.GetProperty("metadata").GetProperty("slug").GetString()!;
        var ids = graph.RootElement.GetProperty("nodes").EnumerateArray().Select(n => n.GetProperty("node_id").GetString()!).Take(3).ToArray();
        var saved = await _fx.Client.PostAsJsonAsync($"/api/graphs/{slug}/state", new { pinnedIds = ids, supernodes = new[] { new[] { "group", ids[0], ids[1] } } });
        Assert.Equal(HttpStatusCode.OK, saved.StatusCode);
        var again = await _fx.Client.PostAsJsonAsync("/api/graph", body);
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        using var retraced = JsonDocument.Parse(File.ReadAllText(Path.Combine(GraphDir, slug + ".json")));
        var q = retraced.RootElement.GetProperty("qParams");
        Assert.Equal(ids, q.GetProperty("pinnedIds").EnumerateArray().Select(e => e.GetString()!).ToArray());
        Assert.Equal(new[] { "group", ids[0], ids[1] }, q.GetProperty("supernodes")[0].EnumerateArray().Select(e => e.GetString()!).ToArray());
        Assert.Empty(Directory.GetFiles(GraphDir, ".*")); // no temp file left
    }

    [Fact]
    public async Task TwoTracesRunAtOnce()
    {
        // Both in flight together (two analysis slots); before, a lock held each whole trace.
        var a = _fx.Client.PostAsJsonAsync("/api/graph", new { prompt = "The capital of the state containing Houston is", maxFeatureNodes = 30 });
        var b = _fx.Client.PostAsJsonAsync("/api/graph", new { prompt = "The capital of the state containing Portland is", maxFeatureNodes = 30 });
        var results = await Task.WhenAll(a, b);
        Assert.All(results, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        var index = JsonDocument.Parse(await _fx.Client.GetStringAsync("/api/graphs")).RootElement.GetProperty("graphs");
        Assert.True(index.GetArrayLength() >= 2);
    }

    [Fact]
    public async Task ACliTracedGraphCarriesItsPromptAndItsTokenIdsDriveInterventions()
    {
        const string prompt = "The capital of the state containing Dallas is";
        using var dir = new TempDir();
        var (code, _, err) = CliRunner.Run("trace", "--prompt", prompt, "--out", dir.File("dallas.json"));
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(File.ReadAllText(dir.File("dallas.json")));
        var meta = doc.RootElement.GetProperty("metadata");
        Assert.Equal(prompt, meta.GetProperty("prompt").GetString());
        var ids = meta.GetProperty("prompt_token_ids").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        Assert.Equal(meta.GetProperty("prompt_tokens").GetArrayLength(), ids.Length);
        // The display text run together does not tokenize back into the prompt; the ids are what the page sends.
        string display = string.Concat(meta.GetProperty("prompt_tokens").EnumerateArray().Select(t => t.GetString()));
        var swap = await _fx.Client.PostAsJsonAsync("/api/intervene", new { prompt = display, tokens = ids, swapPrompt = "The capital of Oregon is" });
        Assert.Equal(HttpStatusCode.OK, swap.StatusCode);
        using var swapped = JsonDocument.Parse(await swap.Content.ReadAsStringAsync());
        Assert.Contains("Salem", swapped.RootElement.GetProperty("after")[0].GetProperty("token").GetString());
        var pinned = await _fx.Client.PostAsJsonAsync("/api/intervene", new { prompt = display, tokens = ids, set = new[] { $"0:{ids.Length - 1}:776=x0" } });
        Assert.Equal(HttpStatusCode.OK, pinned.StatusCode);
        var bad = await _fx.Client.PostAsJsonAsync("/api/intervene", new { tokens = new long[] { 0, 999_999 }, set = new[] { "0:1:1=0" } });
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("outside the vocabulary", (await bad.Content.ReadFromJsonAsync<ErrorResponse>())!.Error);
    }

    [Fact]
    public void TheDefaultGraphsFolderIsPrivateToTheUser()
    {
        if (OperatingSystem.IsWindows()) return;
        string dir = GraphFolders.PrivateDefault();
        Assert.False(dir.StartsWith(Path.GetTempPath(), StringComparison.Ordinal), dir);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(dir));
    }
}

/// <summary>Saving pins streams the graph file instead of loading it.</summary>
public class GraphStateStreamingTests
{
    [Fact]
    public void SavingStateOnALargeGraphAllocatesAFractionOfItsSize()
    {
        using var dir = new TempDir();
        string path = dir.File("g-big.json");
        using (var w = new StreamWriter(path, false, new UTF8Encoding(false)))
        {
            w.Write("{\"metadata\":{\"slug\":\"g-big\",\"prompt\":\"caf\\u00e9 \\\"quoted\\\"\"},\"qParams\":{\"pinnedIds\":[],\"linkType\":\"both\"},\"nodes\":[");
            for (int i = 0; i < 200_000; i++) w.Write($"{(i > 0 ? "," : "")}{{\"node_id\":\"{i % 4}_{i}_{i % 7}\",\"influence\":{i * 1e-6:R},\"clerp\":\"n{i}\"}}");
            w.Write("],\"links\":[");
            for (int i = 0; i < 200_000; i++) w.Write($"{(i > 0 ? "," : "")}{{\"source\":\"a{i}\",\"target\":\"b{i}\",\"weight\":-{i}.5e-3}}");
            w.Write("]}");
        }
        long size = new FileInfo(path).Length;
        Assert.True(size > 20_000_000, $"{size} bytes");
        long before = GC.GetAllocatedBytesForCurrentThread();
        GraphState.Save(path, new[] { "0_1_2", "3_4_5" }, new[] { new[] { "Texas", "0_1_2", "3_4_5" } });
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        // Loading it whole (JsonNode) took many times the file's size; streaming holds a buffer and the qParams.
        Assert.True(allocated < size / 4, $"allocated {allocated:N0} bytes to save state on a {size:N0}-byte graph");
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var root = doc.RootElement;
        Assert.Equal("café \"quoted\"", root.GetProperty("metadata").GetProperty("prompt").GetString());
        Assert.Equal(200_000, root.GetProperty("nodes").GetArrayLength());
        Assert.Equal(200_000, root.GetProperty("links").GetArrayLength());
        Assert.Equal(-199_999.5e-3, root.GetProperty("links")[199_999].GetProperty("weight").GetDouble());
        Assert.Equal("both", root.GetProperty("qParams").GetProperty("linkType").GetString());
        Assert.Equal(new[] { "0_1_2", "3_4_5" }, root.GetProperty("qParams").GetProperty("pinnedIds").EnumerateArray().Select(e => e.GetString()).ToArray());
        Assert.Equal("Texas", root.GetProperty("qParams").GetProperty("supernodes")[0][0].GetString());
    }

    [Fact]
    public void AGraphWithoutQParamsGetsThem()
    {
        using var dir = new TempDir();
        string path = dir.File("g.json");
        File.WriteAllText(path, "{\"metadata\":{\"slug\":\"g\"},\"nodes\":[],\"links\":[]}");
        GraphState.Save(path, new[] { "x" }, Array.Empty<string[]>());
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        Assert.Equal("x", doc.RootElement.GetProperty("qParams").GetProperty("pinnedIds")[0].GetString());
        Assert.Equal(0, doc.RootElement.GetProperty("nodes").GetArrayLength());
    }

    [Theory]
    [InlineData("[1, 2]")]
    [InlineData("{\"a\": 1")]
    [InlineData("")]
    public void NotAJsonObjectIsAClearError(string text)
    {
        using var dir = new TempDir();
        string path = dir.File("g.json");
        File.WriteAllText(path, text);
        var e = Assert.Throws<MechanistException>(() => GraphState.Save(path, new[] { "x" }, Array.Empty<string[]>()));
        Assert.Contains("g.json", e.Message);
        Assert.Equal(text, File.ReadAllText(path));
    }
}
