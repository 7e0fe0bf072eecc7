using Mechanist.Web;

namespace Mechanist.Tests.Web;

/// <summary>An analysis observer for tests: runs the given actions when analyses start, progress and end, and records the ends.</summary>
sealed class RecordingObserver : IAnalysisObserver
{
    public Action<string, CancellationToken> OnStarted { get; init; } = (_, _) => { };
    public Action<string> OnProgress { get; init; } = _ => { };
    public System.Collections.Concurrent.ConcurrentQueue<(string Endpoint, AnalysisOutcome Outcome)> Ends { get; } = new();
    public SemaphoreSlim EndedSignal { get; } = new(0);

    public void Started(string endpoint, CancellationToken requestAborted) => OnStarted(endpoint, requestAborted);
    public void Progress(string endpoint) => OnProgress(endpoint);
    public void Ended(string endpoint, AnalysisOutcome outcome) { Ends.Enqueue((endpoint, outcome)); EndedSignal.Release(); }
}
