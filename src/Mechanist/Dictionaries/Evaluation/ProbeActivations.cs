using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries.Evaluation;

/// <summary>Reads a model's activations at labelled positions.</summary>
public static class ProbeActivations
{
    /// <summary>
    /// Activations [n, hooks, d] (float32, CPU) at each item's read token, in the items' order. Each distinct context runs once;
    /// an item whose prefix does not tokenize as a prefix of its context, or lies past the model's context, is an error naming it.
    /// </summary>
    public static Tensor Collect(HookedTransformer model, IReadOnlyList<ProbeItem> items, IReadOnlyList<string> hooks, int batchTexts = 32)
    {
        var tok = model.Tokenizer ?? throw new MechanistException($"{model.Name} has no tokenizer: probing reads text");
        if (items.Count == 0) throw new MechanistException("no items to read");
        foreach (var h in hooks) model.HookPoints.Check(h);
        var wanted = hooks.ToHashSet();
        var groups = items.Select((item, i) => (item, i)).GroupBy(p => p.item.Context).ToArray();
        var rows = new Tensor?[items.Count];
        try
        {
            foreach (var batch in groups.Chunk(batchTexts))
            {
                var encoded = batch.Select(g => tok.Encode(g.Key).Select(i => (long)i).ToArray()).ToArray();
                var positions = batch.Select((g, b) => g.Select(p => (p.i, Position(tok, p.item, encoded[b], model.Config.NCtx))).ToArray()).ToArray();
                int width = Math.Min(model.Config.NCtx, encoded.Max(e => e.Length));
                var ids = new long[encoded.Length * width]; var mask = new long[encoded.Length * width];
                for (int b = 0; b < encoded.Length; b++)
                    for (int p = 0; p < Math.Min(width, encoded[b].Length); p++) { ids[b * width + p] = encoded[b][p]; mask[b * width + p] = 1; }
                using var scope = NewDisposeScope();
                var idsT = tensor(ids, new long[] { encoded.Length, width }, device: model.Device);
                var (_, cache) = model.RunWithCache(idsT, wanted.Contains,
                    new RunOptions { AttentionMask = tensor(mask, new long[] { encoded.Length, width }, device: model.Device) });
                using (cache)
                {
                    var stacked = stack(hooks.Select(h => cache[h]).ToArray(), 2).to(ScalarType.Float32).cpu();   // [B, T, hooks, d]
                    for (int b = 0; b < encoded.Length; b++)
                        foreach (var (i, pos) in positions[b]) rows[i] = stacked[b, pos].clone().DetachFromDisposeScope();
                }
            }
            return stack(rows!, 0);
        }
        finally { foreach (var r in rows) r?.Dispose(); }
    }

    static int Position(Tokenization.TextTokenizer tok, ProbeItem item, long[] context, int nCtx)
    {
        var prefix = tok.Encode(item.Context[..item.End]);
        bool isPrefix = prefix.Length <= context.Length && prefix.Select((id, k) => id == context[k]).All(x => x);
        if (!isPrefix) throw new MechanistException($"'{item.Context[..item.End]}' does not tokenize as a prefix of '{item.Context}'");
        if (prefix.Length > nCtx) throw new MechanistException($"'{item.Word}' is read at token {prefix.Length}, past the model's context of {nCtx}");
        return prefix.Length - 1;
    }
}
