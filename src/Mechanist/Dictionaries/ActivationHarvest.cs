using System.Text.Json;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries;

/// <summary>Activations collected for training or evaluating a dictionary: one row per token.</summary>
/// <param name="Inputs">[rows, layers, d_in] what the dictionary reads.</param>
/// <param name="Targets">[rows, layers, d_out] what it should write (the same tensor as the inputs for an SAE).</param>
/// <param name="Texts">Texts read.</param>
public sealed record ActivationSet(Tensor Inputs, Tensor Targets, int Texts) : IDisposable
{
    /// <summary>Rows (tokens).</summary>
    public long Rows => Inputs.shape[0];

    /// <inheritdoc/>
    public void Dispose()
    {
        Inputs.Dispose();
        if (!ReferenceEquals(Inputs, Targets)) Targets.Dispose();
    }
}

/// <summary>Reads corpora: a text file (one text per line), a JSONL file with a "text" field, or a folder of them.</summary>
public static class CorpusReader
{
    /// <summary>The texts of <paramref name="path"/>, in a stable order; blank texts skipped.</summary>
    public static IEnumerable<string> Read(string path)
    {
        if (Directory.Exists(path))
        {
            var files = Directory.GetFiles(path).Where(f => f.EndsWith(".txt", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase))
                .Order(StringComparer.Ordinal).ToList();
            if (files.Count == 0) throw new MechanistException($"{path}: no .txt or .jsonl files in the folder");
            return files.SelectMany(ReadFile);
        }
        if (!File.Exists(path)) throw new MechanistException($"{path}: corpus not found");
        return ReadFile(path);
    }

    /// <summary>The first texts of <paramref name="texts"/> that hold <paramref name="maxTokens"/> tokens (the stream may be endless).</summary>
    public static List<string> TakeTokens(Tokenization.TextTokenizer tokenizer, IEnumerable<string> texts, long maxTokens)
    {
        var list = new List<string>(); long tokens = 0;
        foreach (var t in texts)
        {
            if (tokens >= maxTokens) break;
            list.Add(t);
            tokens += tokenizer.Encode(t).Length;
        }
        return list;
    }

    static IEnumerable<string> ReadFile(string file)
    {
        bool jsonl = file.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase);
        int line = 0;
        foreach (var raw in File.ReadLines(file))
        {
            line++;
            if (string.IsNullOrWhiteSpace(raw)) continue;
            if (!jsonl) { yield return raw; continue; }
            string? text;
            try
            {
                using var doc = JsonDocument.Parse(raw);
                text = doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
            }
            catch (JsonException e) { throw new MechanistException($"{file}:{line}: not a JSON line ({e.Message})"); }
            if (text is null) throw new MechanistException($"{file}:{line}: no string field \"text\"");
            if (!string.IsNullOrWhiteSpace(text)) yield return text;
        }
    }
}

/// <summary>
/// Streams texts through a model and keeps the activations at chosen hook points, one row per real token:
/// BOS rows and padding are dropped. Texts run in right-padded batches.
/// </summary>
public static class ActivationHarvest
{
    /// <summary>
    /// Collects up to <paramref name="maxTokens"/> rows. <paramref name="inputHooks"/>[l] and <paramref name="targetHooks"/>[l]
    /// name layer l's input and target (the same names for an SAE). Rows are float32 on the CPU.
    /// </summary>
    public static ActivationSet Collect(HookedTransformer model, IEnumerable<string> texts, IReadOnlyList<string> inputHooks, IReadOnlyList<string> targetHooks,
        long maxTokens, int batchTexts = 32, IProgress<(long Tokens, long Max)>? progress = null)
    {
        var set = Collect(model, texts, inputHooks, targetHooks, maxTokens, batchTexts, progress, out var ids);
        ids.Dispose();
        return set;
    }

    /// <summary>As <see cref="Collect(HookedTransformer, IEnumerable{string}, IReadOnlyList{string}, IReadOnlyList{string}, long, int, IProgress{ValueTuple{long, long}}?)"/> for one set of hooks, also returning each row's token id.</summary>
    public static ActivationSet CollectWithIds(HookedTransformer model, IEnumerable<string> texts, IReadOnlyList<string> hooks, long maxTokens, out Tensor tokenIds) =>
        Collect(model, texts, hooks, hooks, maxTokens, 32, null, out tokenIds);

    static ActivationSet Collect(HookedTransformer model, IEnumerable<string> texts, IReadOnlyList<string> inputHooks, IReadOnlyList<string> targetHooks,
        long maxTokens, int batchTexts, IProgress<(long Tokens, long Max)>? progress, out Tensor tokenIds)
    {
        var tok = model.Tokenizer ?? throw new MechanistException($"{model.Name} has no tokenizer: harvesting needs text");
        if (inputHooks.Count == 0 || inputHooks.Count != targetHooks.Count) throw new MechanistException("give one input and one target hook per layer");
        foreach (var n in inputHooks.Concat(targetHooks)) model.HookPoints.Check(n);
        bool same = inputHooks.SequenceEqual(targetHooks);
        var wanted = inputHooks.Concat(targetHooks).ToHashSet();
        // Rows go into buffers that double when full (a few large blocks, returned to the OS when freed) rather than a list of
        // per-batch tensors concatenated at the end: those small long-lived blocks, between each batch's freed temporaries, kept
        // the heap from shrinking (a harvest held several times its rows).
        var inRows = new RowBuffer(maxTokens); var outRows = new RowBuffer(maxTokens); var idRows = new List<Tensor>();
        long tokens = 0; int textCount = 0;
        long? bos = tok.BosId;
        try
        {
            foreach (var batch in texts.Chunk(batchTexts))
            {
                if (tokens >= maxTokens) break;
                var encoded = batch.Select(t => tok.Encode(t).Take(model.Config.NCtx).Select(i => (long)i).ToArray()).Where(e => e.Length > 0).ToList();
                if (encoded.Count == 0) continue;
                textCount += encoded.Count;
                int width = encoded.Max(e => e.Length);
                var ids = new long[encoded.Count * width]; var mask = new long[encoded.Count * width];
                for (int b = 0; b < encoded.Count; b++)
                    for (int p = 0; p < encoded[b].Length; p++) { ids[b * width + p] = encoded[b][p]; mask[b * width + p] = (bos is { } id && p == 0 && encoded[b][0] == id) ? 0 : 1; }
                using var scope = NewDisposeScope();
                var idsT = tensor(ids, new long[] { encoded.Count, width }, device: model.Device);
                var attention = tensor(encoded.SelectMany(e => Enumerable.Range(0, width).Select(p => p < e.Length ? 1L : 0L)).ToArray(), new long[] { encoded.Count, width }, device: model.Device);
                var (_, cache) = model.RunWithCache(idsT, wanted.Contains, new RunOptions { AttentionMask = attention });
                using (cache)
                {
                    var keep = tensor(mask, device: model.Device).to(ScalarType.Bool);
                    Tensor Rows(IReadOnlyList<string> hooks) => stack(hooks.Select(h => cache[h].reshape(encoded.Count * width, -1)[keep]).ToArray(), 1)
                        .to(ScalarType.Float32).cpu();
                    var x = Rows(inputHooks);
                    long take = Math.Min(x.shape[0], maxTokens - tokens);
                    inRows.Append(x[..(int)take]);
                    idRows.Add(idsT.reshape(-1)[keep].cpu()[..(int)take].DetachFromDisposeScope());
                    if (!same) outRows.Append(Rows(targetHooks)[..(int)take]);
                    tokens += take;
                }
                progress?.Report((tokens, maxTokens));
            }
            if (tokens == 0) throw new MechanistException("the corpus has no usable text (no tokens besides BOS)");
            var inputs = inRows.Take();
            tokenIds = cat(idRows, 0);
            return new ActivationSet(inputs, same ? inputs : outRows.Take(), textCount);
        }
        finally
        {
            inRows.Dispose(); outRows.Dispose();
            foreach (var t in idRows) t.Dispose();
        }
    }

    /// <summary>Rows [n, ...] appended into one buffer that doubles when full (at most <c>limit</c> rows).</summary>
    sealed class RowBuffer(long limit) : IDisposable
    {
        Tensor? _buffer;
        long _rows;

        public void Append(Tensor rows)
        {
            long n = rows.shape[0];
            if (_buffer is null || _rows + n > _buffer.shape[0])
            {
                long needed = _rows + n, doubled = Math.Max(4096, Math.Max(2 * needed, 2 * (_buffer?.shape[0] ?? 0)));
                long capacity = Math.Max(needed, Math.Min(limit, doubled));
                // The whole limit at once where it fits easily: pages are committed only as rows land in them, so this costs no
                // memory beyond the rows, and no growth ever holds an old and a new buffer together (1.5x the rows at the last doubling).
                long rowBytes = rows.numel() / Math.Max(1, n) * rows.element_size();
                if (_buffer is null && limit * (double)rowBytes <= Runtime.ProcessMemory.MachineAvailable() / 2.0) capacity = Math.Max(needed, limit);
                var grown = empty(new[] { capacity }.Concat(rows.shape.Skip(1)).ToArray(), rows.dtype, rows.device).DetachFromDisposeScope();
                if (_buffer is not null) { grown.narrow(0, 0, _rows).copy_(_buffer.narrow(0, 0, _rows)); _buffer.Dispose(); }
                _buffer = grown;
            }
            _buffer.narrow(0, _rows, n).copy_(rows);
            _rows += n;
        }

        /// <summary>The rows appended, as a tensor the caller owns (the buffer itself, or a view of its filled part).</summary>
        public Tensor Take()
        {
            if (_buffer is null) throw new MechanistException("no rows were collected");
            // A view keeps the whole buffer's storage, but the part no row reached was never written: it holds no memory.
            Tensor result = _rows == _buffer.shape[0] ? _buffer : _buffer.narrow(0, 0, _rows);
            if (!ReferenceEquals(result, _buffer)) _buffer.Dispose();   // a view keeps the storage it needs
            _buffer = null;
            return result.DetachFromDisposeScope();
        }

        public void Dispose() => _buffer?.Dispose();
    }
}
