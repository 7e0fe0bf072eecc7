using System.Text.Json;
using Mechanist.Models;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Mechanist.Web;

/// <summary>How an analysis request ended.</summary>
public enum AnalysisOutcome
{
    /// <summary>Answered with its record.</summary>
    Answered,
    /// <summary>Refused or failed with an error answer.</summary>
    Failed,
    /// <summary>Stopped because the client went away.</summary>
    Abandoned,
}

/// <summary>Sees analyses start and end (for monitoring, and for tests that must know when work is under way rather than guess by time).</summary>
public interface IAnalysisObserver
{
    /// <summary>An analysis holding a slot is about to run, on the thread that runs it; <paramref name="requestAborted"/> fires when its client goes away.</summary>
    void Started(string endpoint, CancellationToken requestAborted);

    /// <summary>An analysis ended and its slot is free again.</summary>
    void Ended(string endpoint, AnalysisOutcome outcome);

    /// <summary>A long analysis (a trace) made progress, on the thread that runs it.</summary>
    void Progress(string endpoint) { }
}

/// <summary>
/// Runs analyses under a fixed number of slots: a request waits up to the queue timeout for one (then 503), its work runs
/// off the request thread with the request's cancellation, and library errors become 400 answers with their message.
/// </summary>
public sealed class AnalysisRunner(ModelRegistry models, WorkbenchOptions options) : IDisposable
{
    readonly SemaphoreSlim _slots = new(options.MaxConcurrentAnalyses);

    /// <summary>The server's models.</summary>
    public ModelRegistry Models { get; } = models;

    /// <summary>The server's options.</summary>
    public WorkbenchOptions Options { get; } = options;

    /// <summary>A POST endpoint over a model; <paramref name="encoderDecoder"/> answers it for an encoder-decoder (without one, such a model is refused by kind).</summary>
    public void Post<T>(WebApplication app, string path, Func<T, HookedTransformer, object> handler, Func<T, HookedEncoderDecoder, object>? encoderDecoder = null)
        where T : class, IModelRequest =>
        PostCancellable<T>(app, path, (r, m, _) => handler(r, m), encoderDecoder is null ? null : (r, m, _) => encoderDecoder(r, m));

    /// <summary>A POST endpoint whose handlers see the request's cancellation (the client went away) and may stop early.</summary>
    public void PostCancellable<T>(WebApplication app, string path, Func<T, HookedTransformer, CancellationToken, object> handler,
        Func<T, HookedEncoderDecoder, CancellationToken, object>? encoderDecoder = null) where T : class, IModelRequest
    {
        app.MapPost(path, async (HttpContext ctx) =>
        {
            var (request, failure) = await Answers.ReadJson<T>(ctx, Options.MaxRequestBytes);
            if (request is null) return failure!;
            return await Run(path, ctx, () =>
            {
                var t5 = encoderDecoder is null ? null : Models.EncoderDecoder(request.Model);
                var model = t5 is null ? Models.Get(request.Model) : null;
                var result = t5 is null ? handler(request, model!, ctx.RequestAborted) : encoderDecoder!(request, t5, ctx.RequestAborted);
                // Serialised here, inside the slot and the error handling, while the tensors behind lazy results live.
                return result is RawJson raw ? System.Text.Encoding.UTF8.GetBytes(raw.Json) : JsonSerializer.SerializeToUtf8Bytes(result, Answers.Json);
            });
        });
    }

    /// <summary>Runs <paramref name="work"/> (which returns the answer's JSON bytes) in a slot; an abandoned request frees its slot at once.</summary>
    public async Task<IResult> Run(string endpoint, HttpContext ctx, Func<byte[]> work)
    {
        var aborted = ctx.RequestAborted;
        try
        {
            if (!await _slots.WaitAsync(Options.QueueTimeout, aborted)) return Answers.Fail(503, "the server is busy with other analyses; try again");
        }
        catch (OperationCanceledException) { return Results.Empty; }
        var outcome = AnalysisOutcome.Failed;
        try
        {
            var bytes = await Task.Run(() =>
            {
                Options.Observer?.Started(endpoint, aborted);
                aborted.ThrowIfCancellationRequested();
                return work();
            }, aborted);
            outcome = AnalysisOutcome.Answered;
            return Results.Bytes(bytes, "application/json; charset=utf-8");
        }
        catch (MechanistException e) { return Answers.Fail(400, e.Message); }
        catch (OperationCanceledException) when (aborted.IsCancellationRequested) { outcome = AnalysisOutcome.Abandoned; return Results.Empty; }
        catch (Exception e) when (e is not OperationCanceledException) { return Answers.Fail(500, $"internal error: {e.GetType().Name}"); }
        finally
        {
            _slots.Release();
            // A long-lived server gives an analysis's freed native memory back (Mechanist's heap keeps it for reuse within a job).
            Mechanist.Runtime.ProcessMemory.ReleaseFreedHeap();
            Options.Observer?.Ended(endpoint, outcome);
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _slots.Dispose();
}
