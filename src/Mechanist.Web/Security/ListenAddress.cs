using System.Net;

namespace Mechanist.Web;

/// <summary>
/// The address the workbench listens on, parsed from <c>--host</c>: exactly the IP address given (brackets and an
/// IPv4-mapped IPv6 spelling such as <c>::ffff:127.0.0.1</c> accepted), or <c>localhost</c>. Whether a token is needed
/// follows from the parsed address, never from its spelling, so what is bound and what is protected cannot disagree.
/// </summary>
public sealed record ListenAddress
{
    ListenAddress(IPAddress? address, string display)
    {
        Address = address; Display = display;
        Loopback = address is null || IPAddress.IsLoopback(address);
        AllInterfaces = address is not null && (address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any));
    }

    /// <summary>The address to bind; null for <c>localhost</c> (the loopback addresses).</summary>
    public IPAddress? Address { get; }

    /// <summary>Whether only this machine can connect (no token is needed then).</summary>
    public bool Loopback { get; }

    /// <summary>Whether every interface is bound (0.0.0.0 or ::).</summary>
    public bool AllInterfaces { get; }

    /// <summary>The address as a URL host (IPv6 in brackets).</summary>
    public string Display { get; }

    /// <summary>Parses <c>--host</c>; anything but an IP address or <c>localhost</c> is refused with the reason.</summary>
    public static ListenAddress Parse(string host)
    {
        string text = (host ?? "").Trim();
        if (text.Length >= 2 && text[0] == '[' && text[^1] == ']') text = text[1..^1];
        if (text.Equals("localhost", StringComparison.OrdinalIgnoreCase)) return new ListenAddress(null, "localhost");
        // Only plain dotted or colon-separated forms: .NET would also read "127.1" or "2130706433" as addresses.
        bool plain = text.Length > 0 && (text.Contains(':') || text.Count(c => c == '.') == 3) && text.All(c => char.IsAsciiHexDigit(c) || c is '.' or ':' or '%');
        if (!plain || !IPAddress.TryParse(text, out var ip))
            throw new MechanistException($"--host must be an IP address (127.0.0.1, ::1, 0.0.0.0, ::, or one of this machine's addresses) or localhost (got '{Shorten(host)}')");
        if (ip.IsIPv4MappedToIPv6) ip = ip.MapToIPv4();
        return new ListenAddress(ip, ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{ip}]" : ip.ToString());
    }

    static string Shorten(string? s) => s is null ? "" : s.Length > 80 ? s[..80] + "…" : s;
}
