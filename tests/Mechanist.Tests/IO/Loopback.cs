using System.Net;
using System.Net.Sockets;

namespace Mechanist.Tests.IO;

/// <summary>Loopback HTTP servers for tests that stand in for the hub.</summary>
static class Loopback
{
    /// <summary>Starts <paramref name="listener"/> on a free loopback port and returns its base address.</summary>
    public static string Start(HttpListener listener)
    {
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0)) { probe.Start(); port = ((IPEndPoint)probe.LocalEndpoint).Port; probe.Stop(); }
        string endpoint = $"http://127.0.0.1:{port}";
        listener.Prefixes.Add(endpoint + "/");
        listener.Start();
        return endpoint;
    }
}
