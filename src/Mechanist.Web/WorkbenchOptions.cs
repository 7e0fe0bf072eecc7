namespace Mechanist.Web;

/// <summary>How the workbench is served.</summary>
public sealed record WorkbenchOptions
{
    /// <summary>Address to bind (loopback unless the user says otherwise).</summary>
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>Port (0: any free port).</summary>
    public int Port { get; init; } = 5005;
    /// <summary>Largest request body accepted, in bytes.</summary>
    public long MaxRequestBytes { get; init; } = 64 * 1024;
    /// <summary>Longest prompt accepted, in characters.</summary>
    public int MaxPromptChars { get; init; } = 4000;
    /// <summary>Analyses running at once; further ones wait up to <see cref="QueueTimeout"/>.</summary>
    public int MaxConcurrentAnalyses { get; init; } = 2;
    /// <summary>How long a heavy request waits for a slot before a 503.</summary>
    public TimeSpan QueueTimeout { get; init; } = TimeSpan.FromSeconds(20);
    /// <summary>
    /// The access token required when bound beyond loopback (as Jupyter does); null: a random one is made then.
    /// On loopback no token is needed.
    /// </summary>
    public string? AccessToken { get; init; }
    /// <summary>Feature stores (features.db files from <c>mechanist features build</c>) the feature pages read and label.</summary>
    public IReadOnlyList<string> FeatureStores { get; init; } = Array.Empty<string>();
    /// <summary>Transcoders (circuit-tracer folders) for tracing and interventions, by model name as the server lists it.</summary>
    public IReadOnlyDictionary<string, string> Transcoders { get; init; } = new Dictionary<string, string>();
    /// <summary>Where traced graphs and their saved states (pinned nodes, supernodes) are kept; null: a folder under the system's temp.</summary>
    public string? GraphDir { get; init; }
    /// <summary>Extra names the Host header may carry (e.g. the machine's DNS name when bound beyond loopback).</summary>
    public IReadOnlyList<string> AllowedHosts { get; init; } = Array.Empty<string>();
    /// <summary>Sees analyses start and end, and traces make progress (null: nobody watches).</summary>
    public IAnalysisObserver? Observer { get; init; }
}
