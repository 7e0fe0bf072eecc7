namespace Mechanist.Web;

/// <summary>A prompt-based request.</summary>
/// <param name="Model">Model name (one of /api/models).</param>
/// <param name="Prompt">Prompt text.</param>
/// <param name="Target">Optional target token (lens).</param>
/// <param name="TopK">Optional number of predictions.</param>
public sealed record PromptRequest(string? Model, string? Prompt, string? Target = null, int? TopK = null);

/// <summary>A patching request.</summary>
/// <param name="Model">Model name.</param>
/// <param name="Clean">Clean prompt.</param>
/// <param name="Corrupt">Corrupted prompt.</param>
/// <param name="Answer">Answer token.</param>
/// <param name="Wrong">Wrong token.</param>
/// <param name="What">resid, attn, mlp, heads or head-qkv.</param>
public sealed record PatchRequest(string? Model, string? Clean, string? Corrupt, string? Answer, string? Wrong, string? What);

/// <summary>A model-only request.</summary>
/// <param name="Model">Model name.</param>
public sealed record ModelRequest(string? Model);

/// <summary>An error answer.</summary>
/// <param name="Error">What went wrong, for a person.</param>
public sealed record ErrorResponse(string Error);
