namespace Mechanist.Web;

/// <summary>A request that names the model it is for (the first model when empty).</summary>
public interface IModelRequest
{
    /// <summary>Model name (as listed by /api/models).</summary>
    string? Model { get; }
}

/// <summary>A request about one prompt.</summary>
/// <param name="Model">Model name (as listed by /api/models).</param>
/// <param name="Prompt">The prompt text.</param>
/// <param name="Target">A target token (lens).</param>
/// <param name="TopK">How many tokens to list.</param>
public sealed record PromptRequest(string? Model, string? Prompt, string? Target = null, int? TopK = null) : IModelRequest;

/// <summary>Attention patterns of a prompt, optionally for some layers and heads only.</summary>
/// <param name="Model">Model name.</param>
/// <param name="Prompt">The prompt text.</param>
/// <param name="Layers">Layers to return (all when empty).</param>
/// <param name="Heads">Heads to return (all when empty).</param>
public sealed record AttentionRequest(string? Model, string? Prompt, int[]? Layers = null, int[]? Heads = null) : IModelRequest;

/// <summary>A patching request.</summary>
/// <param name="Model">Model name.</param>
/// <param name="Clean">Clean prompt.</param>
/// <param name="Corrupt">Corrupted prompt.</param>
/// <param name="Answer">Answer token.</param>
/// <param name="Wrong">Wrong answer token (logit difference).</param>
/// <param name="What">One of the patching targets (GET /api/patch-targets).</param>
/// <param name="Metric">logit-diff, prob, loss or kl (default: logit-diff with a wrong answer, else prob).</param>
/// <param name="Method">exact, attribution or both.</param>
public sealed record PatchRequest(string? Model, string? Clean, string? Corrupt, string? Answer, string? Wrong, string? What,
    string? Metric = null, string? Method = null) : IModelRequest;

/// <summary>A request about a model as a whole.</summary>
/// <param name="Model">Model name.</param>
public sealed record ModelRequest(string? Model) : IModelRequest;

/// <summary>The body of every error answer.</summary>
/// <param name="Error">What went wrong.</param>
public sealed record ErrorResponse(string Error);

/// <summary>A user's label for a feature (empty clears it).</summary>
/// <param name="Label">The label.</param>
public sealed record LabelRequest(string? Label);

/// <summary>A feature store the workbench serves.</summary>
/// <param name="Id">Index in the server's list.</param>
/// <param name="Name">Its dictionary folder's name.</param>
/// <param name="Info">What it holds.</param>
public sealed record FeatureStoreSummary(int Id, string Name, Mechanist.Features.FeatureStoreInfo Info);
