namespace Mechanist.Models;

/// <summary>How a block normalises its input.</summary>
public enum NormKind
{
    /// <summary>LayerNorm with weight and bias.</summary>
    LayerNorm,
    /// <summary>LayerNorm without learned parameters (OLMo).</summary>
    LayerNormNoAffine,
    /// <summary>RMSNorm, output = w · x / rms(x).</summary>
    RmsNorm,
    /// <summary>Gemma's RMSNorm, output = (1 + w) · x / rms(x).</summary>
    RmsNormPlusOne,
}

/// <summary>How positions enter the model.</summary>
public enum PositionKind
{
    /// <summary>A learned position embedding added to the token embedding (GPT-2).</summary>
    Learned,
    /// <summary>Rotary embeddings applied to queries and keys.</summary>
    Rotary,
    /// <summary>ALiBi: a per-head linear bias on the attention scores by key position (BLOOM).</summary>
    Alibi,
}

/// <summary>Rotary frequency scaling (HF rope_scaling).</summary>
/// <param name="Type">"linear" or "llama3".</param>
/// <param name="Factor">Scale factor.</param>
/// <param name="LowFreqFactor">llama3: low_freq_factor.</param>
/// <param name="HighFreqFactor">llama3: high_freq_factor.</param>
/// <param name="OriginalMaxPositions">llama3: original_max_position_embeddings.</param>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor = 1, double HighFreqFactor = 4, int OriginalMaxPositions = 8192);

/// <summary>A mixture-of-experts MLP: a router picks <paramref name="TopK"/> of <paramref name="Experts"/> gated MLPs per token.</summary>
/// <param name="Experts">Experts per layer.</param>
/// <param name="TopK">Experts per token.</param>
/// <param name="NormalizeTopK">Whether the chosen experts' softmax weights are renormalised to sum to 1 (Mixtral) or kept (Qwen2-MoE).</param>
/// <param name="DExpert">Each expert's intermediate width.</param>
/// <param name="SharedExpert">Whether a shared expert (the block's regular gated MLP, width d_mlp) is added, gated by sigmoid(x · w_gate).</param>
public sealed record MoeConfig(int Experts, int TopK, bool NormalizeTopK, int DExpert, bool SharedExpert = false);

/// <summary>
/// The architecture-independent description of a decoder-only transformer: every architecture file
/// maps its Hugging Face config onto this record, and <see cref="HookedTransformer"/> runs it.
/// </summary>
public sealed record TransformerConfig
{
    /// <summary>HF model_type ("gpt2", "llama", ...).</summary>
    public required string Architecture { get; init; }
    /// <summary>Residual stream width.</summary>
    public required int DModel { get; init; }
    /// <summary>Number of blocks.</summary>
    public required int NLayers { get; init; }
    /// <summary>Query heads.</summary>
    public required int NHeads { get; init; }
    /// <summary>Key/value heads (GQA/MQA when fewer than query heads).</summary>
    public required int NKvHeads { get; init; }
    /// <summary>Per-head width.</summary>
    public required int DHead { get; init; }
    /// <summary>MLP hidden width.</summary>
    public required int DMlp { get; init; }
    /// <summary>Vocabulary size.</summary>
    public required int VocabSize { get; init; }
    /// <summary>Maximum context length.</summary>
    public required int NCtx { get; init; }
    /// <summary>Normalisation kind.</summary>
    public required NormKind Norm { get; init; }
    /// <summary>Normalisation epsilon.</summary>
    public required double NormEps { get; init; }
    /// <summary>MLP activation (gelu_new, gelu, gelu_pytorch_tanh, silu, relu, ...).</summary>
    public required string Activation { get; init; }
    /// <summary>Attention-only blocks: no MLP and no second norm (TransformerLens's attn-only toy models).</summary>
    public bool AttnOnly { get; init; }
    /// <summary>Mixture-of-experts MLPs, or null for dense ones.</summary>
    public MoeConfig? Moe { get; init; }
    /// <summary>Whether the MLP is gated (SwiGLU/GeGLU: act(gate) * up).</summary>
    public bool GatedMlp { get; init; }
    /// <summary>Positional scheme.</summary>
    public PositionKind Positional { get; init; } = PositionKind.Rotary;
    /// <summary>Rotary base.</summary>
    public double RopeTheta { get; init; } = 10000;
    /// <summary>Dimensions of each head that rotate (partial rotary when below <see cref="DHead"/>).</summary>
    public int RotaryDim { get; init; }
    /// <summary>Rotary base of the sliding-window layers when it differs from <see cref="RopeTheta"/> (Gemma-3's rope_local_base_freq; those layers take no scaling), or null.</summary>
    public double? LocalRopeTheta { get; init; }
    /// <summary>Rotary on interleaved pairs (x[2i], x[2i+1]) as GPT-J and Cohere do, instead of the two halves.</summary>
    public bool RotaryInterleaved { get; init; }
    /// <summary>Logits are multiplied by this (Cohere's logit_scale); architectures fold it into W_U when loading.</summary>
    public double LogitScale { get; init; } = 1.0;
    /// <summary>Rotary scaling, if any.</summary>
    public RopeScaling? RopeScaling { get; init; }
    /// <summary>Attention and MLP read the same residual (GPT-NeoX, GPT-J).</summary>
    public bool ParallelResidual { get; init; }
    /// <summary>Extra norms after attention and after the MLP (Gemma-2 "sandwich").</summary>
    public bool PostNorms { get; init; }
    /// <summary>Per-head RMSNorm of queries and keys (Qwen3, Gemma-3).</summary>
    public bool QkNorm { get; init; }
    /// <summary>With <see cref="QkNorm"/>: the norm spans the whole q / k projection (all heads together, OLMo-2) instead of each head.</summary>
    public bool QkNormAcrossHeads { get; init; }
    /// <summary>Causal (decoder) attention; false for encoders (BERT), which attend both ways and mask only padding.</summary>
    public bool Causal { get; init; } = true;
    /// <summary>BERT's post-LN blocks: each sub-layer's output is added to the residual and the sum normalised (ln1 after attention, ln2 after the MLP).</summary>
    public bool PostLayerNorm { get; init; }
    /// <summary>BERT's token-type vocabulary (type 0 is folded into the position embeddings), 0 when the model has none.</summary>
    public int TypeVocabSize { get; init; }
    /// <summary>A masked-LM head before the final norm: dense, activation, then the final norm and the unembedding (BERT's cls.predictions).</summary>
    public bool MlmHead { get; init; }
    /// <summary>Whether blocks normalise their inputs (false for OLMo-2, whose sub-layers read the raw residual and normalise their outputs).</summary>
    public bool PreNorms { get; init; } = true;
    /// <summary>Multiplier applied to q·k (usually 1/sqrt(d_head)).</summary>
    public required double AttnScale { get; init; }
    /// <summary>Attention logit soft-capping (Gemma-2), or null.</summary>
    public double? AttnSoftcap { get; init; }
    /// <summary>Final logit soft-capping (Gemma-2), or null.</summary>
    public double? FinalSoftcap { get; init; }
    /// <summary>Sliding attention window, or null.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary>Which layers use the sliding window (null: all, when a window is set).</summary>
    public Func<int, bool>? SlidingLayer { get; init; }
    /// <summary>Unembedding shares the token embedding matrix.</summary>
    public bool TiedEmbeddings { get; init; }
    /// <summary>A LayerNorm right after the token embedding (BLOOM's word_embeddings_layernorm).</summary>
    public bool EmbeddingNorm { get; init; }
    /// <summary>Token embeddings are multiplied by this (Gemma: sqrt(d_model)).</summary>
    public double EmbeddingScale { get; init; } = 1.0;
    /// <summary>Whether q/k/v projections have biases.</summary>
    public bool QkvBias { get; init; }
    /// <summary>Whether the attention output projection has a bias.</summary>
    public bool OutBias { get; init; }
    /// <summary>Whether MLP projections have biases.</summary>
    public bool MlpBias { get; init; }
    /// <summary>BOS token id from the config, if any.</summary>
    public int? BosTokenId { get; init; }
    /// <summary>EOS token ids from the config.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = Array.Empty<int>();
    /// <summary>PAD token id from the config, if any.</summary>
    public int? PadTokenId { get; init; }

    /// <summary>Whether a layer attends through the sliding window.</summary>
    public bool UsesSlidingWindow(int layer) => SlidingWindow != null && (SlidingLayer?.Invoke(layer) ?? true);

    /// <summary>Query heads per key/value head.</summary>
    public int HeadsPerKvHead => NHeads / NKvHeads;
}
