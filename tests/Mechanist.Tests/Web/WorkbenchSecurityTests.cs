using System.Net;
using Mechanist.Models;
using Mechanist.Web;

namespace Mechanist.Tests.Web;

/// <summary>Host-header checks (DNS rebinding) and the access token when bound beyond loopback.</summary>
public class WorkbenchSecurityTests
{
    static HookedTransformer Stories() => HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin"));

    static HttpRequestMessage Get(string url, string? host = null, string? bearer = null, string? cookie = null)
    {
        var r = new HttpRequestMessage(HttpMethod.Get, url);
        if (host != null) r.Headers.Host = host;
        if (bearer != null) r.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", bearer);
        if (cookie != null) r.Headers.Add("Cookie", cookie);
        return r;
    }

    [Fact]
    public async Task ALoopbackServerRefusesForeignHostNames()
    {
        await using var server = WorkbenchServer.Create(new[] { Stories() }, new WorkbenchOptions { Port = 0 });
        await server.StartAsync();
        using var client = new HttpClient { BaseAddress = new Uri(server.Url) };
        Assert.Null(server.AccessToken);
        Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(Get("/api/models"))).StatusCode);
        var port = new Uri(server.Url).Port;
        Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(Get("/api/models", $"localhost:{port}"))).StatusCode);
        // A page on another site whose name was rebound to 127.0.0.1 still sends its own name.
        var rebound = await client.SendAsync(Get("/api/models", $"evil.example.com:{port}"));
        Assert.Equal(HttpStatusCode.MisdirectedRequest, rebound.StatusCode);
        Assert.Contains("does not answer for host", await rebound.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.MisdirectedRequest, (await client.SendAsync(Get("/", "evil.example.com"))).StatusCode);
    }

    [Fact]
    public async Task BeyondLoopbackEveryRequestNeedsTheTokenAndThePageWorksWithIt()
    {
        await using var server = WorkbenchServer.Create(new[] { Stories() }, new WorkbenchOptions { Host = "0.0.0.0", Port = 0, AccessToken = "s3cret-token" });
        await server.StartAsync();
        Assert.Equal("s3cret-token", server.AccessToken);
        using var handler = new HttpClientHandler { UseCookies = false };
        using var client = new HttpClient(handler) { BaseAddress = new Uri($"http://127.0.0.1:{new Uri(server.Url).Port}") };
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.SendAsync(Get("/api/models"))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.SendAsync(Get("/"))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await client.SendAsync(Get("/api/models", bearer: "wrong"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(Get("/api/models", bearer: "s3cret-token"))).StatusCode);
        // Opening the page with ?token= sets a cookie; the page's own API calls then carry it.
        var page = await client.SendAsync(Get("/?token=s3cret-token"));
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        var cookie = page.Headers.GetValues("Set-Cookie").Single(c => c.StartsWith("mechanist_token="));
        Assert.Contains("httponly", cookie.ToLowerInvariant());
        Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(Get("/api/models", cookie: cookie.Split(';')[0]))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(Get("/static/app.js", cookie: cookie.Split(';')[0]))).StatusCode);
        // A random token is made when none is given.
        await using var other = WorkbenchServer.Create(new[] { Stories() }, new WorkbenchOptions { Host = "0.0.0.0", Port = 0 });
        await other.StartAsync();
        Assert.Equal(48, other.AccessToken!.Length);
        Assert.Contains("?token=", other.BrowserUrl);
    }
}
