using Microsoft.AspNetCore.Http;

namespace Mechanist.Web;

/// <summary>Request checks that hold for every endpoint, beside the Host header and the token.</summary>
public static class WorkbenchSecurity
{
    /// <summary>
    /// Why a state-changing request (any method but GET, HEAD and OPTIONS) is refused as cross-origin, or null. A browser
    /// names the page that sent a request in <c>Origin</c> (and <c>Sec-Fetch-Site</c>); only this server's own origin may
    /// write. A request without either header (curl, scripts) is not a browser's cross-site request and passes.
    /// </summary>
    public static string? CrossOriginWrite(HttpRequest request)
    {
        if (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method) || HttpMethods.IsOptions(request.Method)) return null;
        string site = request.Headers["Sec-Fetch-Site"].ToString();
        if (site.Length > 0 && site is not ("same-origin" or "none")) return $"cross-origin write refused (Sec-Fetch-Site: {Trim(site)})";
        var origins = request.Headers.Origin;
        if (origins.Count == 0) return null;
        string origin = origins.ToString();
        string own = $"{request.Scheme}://{request.Host.Value}";
        return origins.Count == 1 && string.Equals(origin, own, StringComparison.OrdinalIgnoreCase) ? null
            : $"cross-origin write refused: this server accepts writes only from its own pages ({own}), not from '{Trim(origin)}'";
    }

    static string Trim(string s) => s.Length > 80 ? s[..80] + "…" : s;
}
