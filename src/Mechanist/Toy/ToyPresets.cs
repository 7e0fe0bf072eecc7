using Mechanist.Models;
using Mechanist.Tokenization;

namespace Mechanist.Toy;

/// <summary>A toy model recipe: architecture, corpus and training schedule.</summary>
/// <param name="Name">Preset name.</param>
/// <param name="Description">What it is for.</param>
/// <param name="Layers">Blocks.</param>
/// <param name="DModel">Width.</param>
/// <param name="Heads">Heads.</param>
/// <param name="AttnOnly">No MLPs.</param>
/// <param name="Context">Context length.</param>
/// <param name="CorpusLines">Lines of generated corpus.</param>
/// <param name="CorpusSeed">Corpus seed.</param>
/// <param name="Train">Training schedule.</param>
/// <param name="InductionWeight">Weight of repeated random sequences in the corpus mix (the other kinds keep their default weights).</param>
public sealed record ToyPreset(string Name, string Description, int Layers, int DModel, int Heads, bool AttnOnly, int Context,
    int CorpusLines, int CorpusSeed, TrainConfig Train, int InductionWeight = 15)
{
    /// <summary>The corpus mix of this preset.</summary>
    public (ToyLineKind Kind, int Weight)[] Mix =>
        ToyCorpus.DefaultMix.Select(m => m.Kind == ToyLineKind.Induction ? (m.Kind, InductionWeight) : m).ToArray();

    /// <summary>The model configuration for a vocabulary size.</summary>
    /// <remarks>
    /// GPT-NeoX layout (LayerNorm, GELU, biases, sequential residual) with full rotary positions: with
    /// learned absolute positions these small models formed no previous-token heads, hence no induction
    /// heads, within the training budget; rotary positions make relative attention easy to learn.
    /// </remarks>
    public TransformerConfig ModelConfig(int vocab) => new()
    {
        Architecture = "gpt_neox", DModel = DModel, NLayers = Layers, NHeads = Heads, NKvHeads = Heads, DHead = DModel / Heads,
        DMlp = 4 * DModel, VocabSize = vocab, NCtx = Context, Norm = NormKind.LayerNorm, NormEps = 1e-5, Activation = "gelu",
        Positional = PositionKind.Rotary, RotaryDim = DModel / Heads, RopeTheta = 10000, ParallelResidual = false,
        AttnScale = 1.0 / Math.Sqrt(DModel / Heads), TiedEmbeddings = true,
        QkvBias = true, OutBias = true, MlpBias = true, AttnOnly = AttnOnly, BosTokenId = 1, EosTokenIds = new[] { 1 },
    };
}

/// <summary>The shipped toy models.</summary>
public static class ToyPresets
{
    /// <summary>The default model of every command.</summary>
    public const string DefaultName = "toy-4l";

    /// <summary>All presets.</summary>
    public static readonly ToyPreset[] All =
    {
        new("toy-4l", "4 layers with MLPs: indirect objects, one- and two-hop facts, induction, stories",
            Layers: 4, DModel: 128, Heads: 4, AttnOnly: false, Context: 64, CorpusLines: 60000, CorpusSeed: 1234,
            Train: new TrainConfig(Steps: 3000, BatchSize: 32, SeqLen: 64, LearningRate: 3e-3, WarmupSteps: 150, Seed: 1, CheckpointEvery: 500)),
        new("attn-only-2l", "2 attention-only layers (TransformerLens-style toy model): induction heads",
            Layers: 2, DModel: 128, Heads: 2, AttnOnly: true, Context: 64, CorpusLines: 60000, CorpusSeed: 1234,
            Train: new TrainConfig(Steps: 4000, BatchSize: 32, SeqLen: 64, LearningRate: 1e-3, WarmupSteps: 100, Seed: 2, CheckpointEvery: 500),
            InductionWeight: 300),
    };

    /// <summary>A preset by name.</summary>
    public static ToyPreset Get(string name) => All.FirstOrDefault(p => p.Name == name)
        ?? throw new MechanistException($"unknown preset '{name}' (presets: {string.Join(", ", All.Select(p => p.Name))})");

    /// <summary>The corpus lines of a preset (deterministic).</summary>
    public static List<string> Corpus(ToyPreset preset) => new ToyCorpus(preset.CorpusSeed, preset.Mix).Lines(preset.CorpusLines).ToList();

    /// <summary>The token stream: BOS before every line.</summary>
    public static long[] Stream(TextTokenizer tokenizer, IEnumerable<string> lines) =>
        lines.SelectMany(l => tokenizer.Encode(l, prependBos: true)).Select(i => (long)i).ToArray();
}
