using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Microscope;

/// <summary>One text of a corpus, tokenized, with each token's class.</summary>
/// <param name="Ids">Token ids (BOS included when the model has one).</param>
/// <param name="Tokens">Token strings.</param>
/// <param name="Classes">Each token's <see cref="WordClasses"/> class (BOS: "bos").</param>
public sealed record CorpusText(long[] Ids, string[] Tokens, string[] Classes);

/// <summary>
/// Hidden states of every token of a corpus at every depth: the residual stream entering each block
/// and the one leaving the last block (L + 1 states, as Hugging Face's hidden_states but before the final norm).
/// </summary>
public sealed class CorpusStates : IDisposable
{
    CorpusStates(List<CorpusText> texts, Tensor[] layers, string[] labels) { Texts = texts; Layers = layers; Labels = labels; }

    /// <summary>The texts.</summary>
    public IReadOnlyList<CorpusText> Texts { get; }

    /// <summary>
    /// Per depth, [all tokens of all texts, d_model] (CPU), BOS rows excluded: float32, as the forward computes them (float64 for a
    /// float64 model); each statistic widens what it reads to float64 itself, a block or a sample at a time.
    /// </summary>
    public Tensor[] Layers { get; }

    /// <summary>"emb", "1", ..., "L" (after block L).</summary>
    public string[] Labels { get; }

    /// <summary>Row ranges of each text in <see cref="Layers"/> (BOS excluded) and the token index they start at.</summary>
    public (int Start, int Count, int TokenOffset)[] Rows { get; private set; } = Array.Empty<(int, int, int)>();

    /// <summary>Total rows.</summary>
    public int RowCount => (int)Layers[0].shape[0];

    /// <summary>Tokenizes and runs every text (truncated to the model's context); BOS rows are dropped unless <paramref name="includeBos"/>.</summary>
    public static CorpusStates Collect(HookedTransformer model, IEnumerable<string> texts, IProgress<(int Done, int Total)>? progress = null, bool includeBos = false)
    {
        RequireCausal(model);
        var tok = model.Tokenizer ?? throw new MechanistException($"{model.Name} has no tokenizer: the microscope needs text");
        var list = texts.Where(t => !string.IsNullOrWhiteSpace(t)).ToList();
        if (list.Count == 0) throw new MechanistException("the microscope needs at least one non-empty text");
        int n = model.Config.NLayers;
        var names = Enumerable.Range(0, n).Select(l => model.HookPoints.Name(HookKind.ResidPre, l)).Append(model.HookPoints.Name(HookKind.ResidPost, n - 1)).ToArray();
        var perLayer = names.Select(_ => new List<Tensor>()).ToArray();
        var stored = model.DType == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var corpus = new List<CorpusText>();
        var rows = new List<(int, int, int)>();
        int row = 0;
        for (int i = 0; i < list.Count; i++)
        {
            var ids = tok.Encode(list[i]).Take(model.Config.NCtx).Select(x => (long)x).ToArray();
            var strs = tok.ToStrTokens(ids.Select(x => (int)x));
            bool bos = tok.BosId is { } b && ids.Length > 0 && ids[0] == b;
            var classes = strs.Select((s, k) => bos && k == 0 ? "bos" : WordClasses.Of(s)).ToArray();
            corpus.Add(new CorpusText(ids, strs, classes));
            int offset = bos && !includeBos ? 1 : 0;
            using var scope = NewDisposeScope();
            var (_, cache) = model.RunWithCache(tensor(ids, new long[] { 1, ids.Length }, device: model.Device), names.Contains);
            using (cache)
                for (int l = 0; l < names.Length; l++)
                    perLayer[l].Add(cache[names[l]][0, offset..].to(stored).cpu().DetachFromDisposeScope());
            rows.Add((row, ids.Length - offset, offset));
            row += ids.Length - offset;
            progress?.Report((i + 1, list.Count));
        }
        var layers = perLayer.Select(parts => { var t = cat(parts, 0); foreach (var p in parts) p.Dispose(); return t; }).ToArray();
        var labels = Enumerable.Range(0, n + 1).Select(l => l == 0 ? "emb" : l.ToString()).ToArray();
        return new CorpusStates(corpus, layers, labels) { Rows = rows.ToArray() };
    }

    /// <inheritdoc/>
    public void Dispose() { foreach (var t in Layers) t.Dispose(); }

    /// <summary>
    /// Refuses an encoder (BERT): LLM-Microscope's measures read a causal model's states against its next tokens (the logit lens's loss,
    /// contextuality, token removal), which a bidirectional masked LM does not predict.
    /// </summary>
    public static void RequireCausal(HookedTransformer model)
    {
        if (!model.Config.Causal)
            throw new MechanistException($"{model.Name} is an encoder ({model.Config.Architecture}, bidirectional): the microscope measures causal language models (next-token logit lens, contextuality, token removal)");
    }
}
