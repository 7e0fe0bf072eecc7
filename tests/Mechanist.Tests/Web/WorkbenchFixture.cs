using Mechanist.Models;
using Mechanist.Web;

namespace Mechanist.Tests.Web;

/// <summary>A real Kestrel server on a free loopback port, serving stories260K and the golden gpt2 model.</summary>
public sealed class WorkbenchFixture : IAsyncLifetime
{
    public WorkbenchServer Server { get; private set; } = null!;
    public HttpClient Client { get; private set; } = null!;
    public string BaseUrl => Server.Url;

    public async Task InitializeAsync()
    {
        var models = new[]
        {
            HookedTransformer.Load(SharedData.PathOf("models", "stories260K", "stories260K.bin")),
        };
        Server = WorkbenchServer.Create(models, new WorkbenchOptions { Port = 0, MaxConcurrentAnalyses = 2, QueueTimeout = TimeSpan.FromSeconds(60) });
        await Server.StartAsync();
        Client = new HttpClient { BaseAddress = new Uri(BaseUrl), Timeout = TimeSpan.FromSeconds(120) };
    }

    public async Task DisposeAsync()
    {
        Client.Dispose();
        await Server.DisposeAsync();
    }
}
