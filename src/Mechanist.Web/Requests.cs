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
/// <param name="Decoder">An encoder-decoder's decoder text after its start token (the prompt is then the encoder input).</param>
public sealed record PromptRequest(string? Model, string? Prompt, string? Target = null, int? TopK = null, string? Decoder = null) : IModelRequest;

/// <summary>Attention patterns of a prompt, optionally for some layers and heads only.</summary>
/// <param name="Model">Model name.</param>
/// <param name="Prompt">The prompt text.</param>
/// <param name="Layers">Layers to return (all when empty).</param>
/// <param name="Heads">Heads to return (all when empty).</param>
/// <param name="Decoder">An encoder-decoder's decoder text after its start token.</param>
/// <param name="Thumbnail">Block-average each pattern to at most this many rows and columns (for a grid of every head); full patterns when absent.</param>
public sealed record AttentionRequest(string? Model, string? Prompt, int[]? Layers = null, int[]? Heads = null, string? Decoder = null, int? Thumbnail = null) : IModelRequest;

/// <summary>A patching request.</summary>
/// <param name="Model">Model name.</param>
/// <param name="Clean">Clean prompt.</param>
/// <param name="Corrupt">Corrupted prompt.</param>
/// <param name="Answer">Answer token.</param>
/// <param name="Wrong">Wrong answer token (logit difference).</param>
/// <param name="What">One of the patching targets (GET /api/patch-targets).</param>
/// <param name="Metric">logit-diff, prob, loss or kl (default: logit-diff with a wrong answer, else prob).</param>
/// <param name="Method">exact, attribution or both.</param>
/// <param name="Decoder">An encoder-decoder's decoder text after its start token (the clean and corrupted prompts are encoder inputs; the answer is the next decoder token).</param>
/// <param name="Position">The position whose logits the metric reads (negative: from the end; default the last, or an encoder's first mask token).</param>
public sealed record PatchRequest(string? Model, string? Clean, string? Corrupt, string? Answer, string? Wrong, string? What,
    string? Metric = null, string? Method = null, string? Decoder = null, int? Position = null) : IModelRequest;

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
/// <param name="Model">The served model whose transcoders built the store (its features can be steered there), or null.</param>
public sealed record FeatureStoreSummary(int Id, string Name, Mechanist.Features.FeatureStoreInfo Info, string? Model = null);

/// <summary>Trace a prompt into an attribution graph with the model's transcoders.</summary>
/// <param name="Model">Model name.</param>
/// <param name="Prompt">The prompt.</param>
/// <param name="MaxFeatureNodes">Most feature nodes attributed (default 400).</param>
/// <param name="NodeThreshold">Pruning's node threshold (default 0.8).</param>
/// <param name="EdgeThreshold">Pruning's edge threshold (default 0.98).</param>
public sealed record GraphRequest(string? Model, string? Prompt, int? MaxFeatureNodes = null, double? NodeThreshold = null, double? EdgeThreshold = null) : IModelRequest;

/// <summary>Pinned nodes and supernodes of a saved graph (circuit-tracer's qParams).</summary>
/// <param name="PinnedIds">Node ids pinned into the subgraph.</param>
/// <param name="Supernodes">Groups: [name, node id, node id, ...].</param>
public sealed record GraphStateRequest(string[]? PinnedIds, string[][]? Supernodes);

/// <summary>Interventions on a prompt's features ("LAYER:POS:FEATURES=VALUE", as <c>mechanist intervene --set</c>).</summary>
/// <param name="Model">Model name.</param>
/// <param name="Prompt">The prompt.</param>
/// <param name="Set">The interventions.</param>
/// <param name="Mode">free, constrained or replacement.</param>
/// <param name="TopK">Tokens listed.</param>
/// <param name="Generate">Tokens generated greedily without and with the interventions.</param>
/// <param name="SwapPrompt">Instead of <paramref name="Set"/>: a donor prompt whose features at its last position replace those at <paramref name="SwapPosition"/>.</param>
/// <param name="SwapPosition">Where the swap lands in the prompt (negative: from the end; default the last token).</param>
/// <param name="SwapLayers">Layers swapped (default: all).</param>
/// <param name="Tokens">The prompt as token ids (a graph file's prompt_token_ids), used instead of <paramref name="Prompt"/> when given.</param>
public sealed record InterveneRequest(string? Model, string? Prompt, string[]? Set, string? Mode = null, int? TopK = null, int? Generate = null,
    string? SwapPrompt = null, int? SwapPosition = null, int[]? SwapLayers = null, long[]? Tokens = null) : IModelRequest;

/// <summary>Activation addition: the vector mean(positive) − mean(negative) at a layer, added with a coefficient while generating.</summary>
/// <param name="Model">Model name.</param>
/// <param name="Prompt">The prompt to continue.</param>
/// <param name="Positive">Texts of the direction's positive side.</param>
/// <param name="Negative">Texts of its negative side.</param>
/// <param name="Layer">Layer whose resid_pre gets the vector.</param>
/// <param name="Coefficient">Scale.</param>
/// <param name="Generate">Tokens generated.</param>
public sealed record SteerRequest(string? Model, string? Prompt, string[]? Positive, string[]? Negative, int? Layer = null, double? Coefficient = null, int? Generate = null) : IModelRequest;

/// <summary>An answer that is already JSON (a graph file), sent as is.</summary>
/// <param name="Json">The JSON text.</param>
public sealed record RawJson(string Json);
