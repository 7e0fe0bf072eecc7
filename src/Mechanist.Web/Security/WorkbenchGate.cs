using Microsoft.AspNetCore.Http;

namespace Mechanist.Web;

/// <summary>
/// The checks every request passes before any endpoint sees it: the Host header (DNS rebinding), the access token when
/// bound beyond loopback, cross-origin writes, and the security headers of every answer.
/// </summary>
public sealed class WorkbenchGate
{
    readonly ListenAddress _listen;
    readonly WorkbenchOptions _options;

    /// <summary>The gate of a server bound to <paramref name="listen"/>.</summary>
    public WorkbenchGate(ListenAddress listen, WorkbenchOptions options)
    {
        _listen = listen; _options = options;
        AccessToken = listen.Loopback ? null : options.AccessToken ?? Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(24)).ToLowerInvariant();
    }

    /// <summary>The token every request must carry when bound beyond loopback (header "Authorization: Bearer …", query "token", or the cookie the page sets); null on loopback.</summary>
    public string? AccessToken { get; }

    const string TokenCookie = "mechanist_token";

    /// <summary>The middleware: refuses what fails a check with a JSON error, else passes the request on.</summary>
    public async Task Invoke(HttpContext ctx, RequestDelegate next)
    {
        ctx.Response.Headers["X-Content-Type-Options"] = "nosniff";
        if (!HostAllowed(ctx.Request.Host)) { await Answers.Error(ctx, 421, $"this server does not answer for host '{Answers.Trim(ctx.Request.Host.Host)}'"); return; }
        if (!TokenValid(ctx)) { await Answers.Error(ctx, 401, "this workbench needs its access token (printed when it started): open the URL with ?token=…"); return; }
        if (WorkbenchSecurity.CrossOriginWrite(ctx.Request) is { } refused) { await Answers.Error(ctx, 403, refused); return; }
        if (AccessToken is not null && ctx.Request.Query.ContainsKey("token"))
            ctx.Response.Cookies.Append(TokenCookie, AccessToken, new CookieOptions { HttpOnly = true, SameSite = SameSiteMode.Strict, Path = "/" });
        ctx.Response.Headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:";
        try { await next(ctx); }
        catch (BadHttpRequestException e) when (!ctx.Response.HasStarted)
        {
            await Answers.Error(ctx, e.StatusCode, e.StatusCode == 413 ? $"request body too large (limit {_options.MaxRequestBytes} bytes)" : e.Message);
        }
    }

    /// <summary>
    /// Host names the Host header may carry: loopback names on loopback (a page elsewhere that rebinds its DNS name to
    /// 127.0.0.1 still sends its own name, and is refused), plus the bound address and the configured names otherwise.
    /// </summary>
    public bool HostAllowed(HostString host)
    {
        string name = host.Host.Trim('[', ']');
        if (name.Length == 0) return false;
        if (name.Equals("localhost", StringComparison.OrdinalIgnoreCase) || (System.Net.IPAddress.TryParse(name, out var ip) && System.Net.IPAddress.IsLoopback(ip))) return true;
        if (_listen.Loopback) return false;
        if (_listen.Address is { } bound && System.Net.IPAddress.TryParse(name, out var asked) && (asked.IsIPv4MappedToIPv6 ? asked.MapToIPv4() : asked).Equals(bound)) return true;
        if (_options.AllowedHosts.Any(h => h.Equals(name, StringComparison.OrdinalIgnoreCase))) return true;
        // Bound to every interface: the machine's own addresses and name.
        if (_listen.AllInterfaces)
        {
            if (name.Equals(System.Net.Dns.GetHostName(), StringComparison.OrdinalIgnoreCase)) return true;
            if (System.Net.IPAddress.TryParse(name, out var addr))
                return System.Net.NetworkInformation.NetworkInterface.GetAllNetworkInterfaces()
                    .SelectMany(i => i.GetIPProperties().UnicastAddresses).Any(u => u.Address.Equals(addr));
        }
        return false;
    }

    bool TokenValid(HttpContext ctx)
    {
        if (AccessToken is null) return true;
        string? given = ctx.Request.Headers.Authorization.ToString() is { } auth && auth.StartsWith("Bearer ", StringComparison.Ordinal) ? auth[7..]
            : ctx.Request.Query.TryGetValue("token", out var q) ? q.ToString()
            : ctx.Request.Cookies.TryGetValue(TokenCookie, out var c) ? c : null;
        return given is not null && System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(
            System.Text.Encoding.UTF8.GetBytes(given), System.Text.Encoding.UTF8.GetBytes(AccessToken));
    }
}
