using System.IO.MemoryMappedFiles;
using System.Text.Json.Nodes;
using TorchSharp;

namespace Mechanist.IO.Llama2c;

/// <summary>The header of a llama2.c checkpoint.</summary>
/// <param name="Dim">Model width.</param>
/// <param name="HiddenDim">MLP width.</param>
/// <param name="Layers">Number of blocks.</param>
/// <param name="Heads">Query heads.</param>
/// <param name="KvHeads">Key/value heads.</param>
/// <param name="VocabSize">Vocabulary size.</param>
/// <param name="SeqLen">Maximum sequence length.</param>
/// <param name="SharedClassifier">Whether the classifier is tied to the token embedding.</param>
public sealed record Llama2cHeader(int Dim, int HiddenDim, int Layers, int Heads, int KvHeads, int VocabSize, int SeqLen, bool SharedClassifier)
{
    /// <summary>Per-head width.</summary>
    public int HeadDim => Dim / Heads;

    /// <summary>Width of the key/value projections.</summary>
    public int KvDim => HeadDim * KvHeads;
}

/// <summary>
/// A llama2.c checkpoint (fp32, legacy format), presented under Hugging Face Llama tensor names with
/// wq/wk rows permuted from llama2.c's interleaved rotary pairs to HF's rotate-half layout.
/// </summary>
public sealed class Llama2cCheckpoint : ITensorSource
{
    const int HeaderBytes = 7 * 4;
    readonly Dictionary<string, (long Offset, long[] StoredShape, Func<torch.Tensor, torch.Tensor>? Transform)> _entries = new();
    readonly MemoryMappedFile _map;
    readonly MemoryMappedViewAccessor _view;

    Llama2cCheckpoint(string path, Llama2cHeader header, MemoryMappedFile map, MemoryMappedViewAccessor view)
    {
        Path = path; Header = header; _map = map; _view = view;
        Layout();
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>The configuration stored in the header.</summary>
    public Llama2cHeader Header { get; }

    /// <summary>Opens and validates a llama2.c checkpoint.</summary>
    public static Llama2cCheckpoint Open(string path)
    {
        if (!File.Exists(path)) throw new MechanistException($"{path}: file not found");
        long length = AtomicFile.LengthOf(path);
        if (length < HeaderBytes) throw new InvalidCheckpointException(path, $"truncated: {length} bytes, a llama2.c checkpoint starts with a {HeaderBytes}-byte header");
        var h = new int[7];
        using (var fs = File.OpenRead(path))
        {
            var buf = new byte[HeaderBytes];
            fs.ReadExactly(buf);
            for (int i = 0; i < 7; i++) h[i] = BitConverter.ToInt32(buf, i * 4);
        }
        var header = new Llama2cHeader(h[0], h[1], h[2], h[3], h[4], Math.Abs(h[5]), h[6], h[5] > 0);
        Validate(path, header, h, length);
        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        var view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        return new Llama2cCheckpoint(path, header, map, view);
    }

    static void Validate(string path, Llama2cHeader c, int[] raw, long length)
    {
        if (raw.Take(5).Any(v => v <= 0) || raw[5] == 0 || raw[6] <= 0 || c.Dim > 1 << 16 || c.Layers > 1024 || c.VocabSize > 1 << 22 || c.HiddenDim > 1 << 18)
            throw new InvalidCheckpointException(path, $"header ({string.Join(", ", raw)}) is not a plausible llama2.c configuration");
        if (c.Dim % c.Heads != 0 || c.Heads % c.KvHeads != 0 || c.HeadDim % 2 != 0)
            throw new InvalidCheckpointException(path, $"dim {c.Dim}, {c.Heads} heads and {c.KvHeads} kv heads do not divide evenly");
        long expected = ExpectedBytes(c);
        if (length != expected)
            throw new InvalidCheckpointException(path, length < expected
                ? $"truncated: the header describes {expected} bytes of fp32 weights but the file has {length}"
                : $"{length - expected} unexpected bytes after the weights (expected {expected} bytes); not a legacy fp32 llama2.c checkpoint?");
    }

    static long ExpectedBytes(Llama2cHeader c)
    {
        long d = c.Dim, hd = c.HiddenDim, l = c.Layers, v = c.VocabSize;
        long floats = v * d + l * d + l * d * d + 2 * l * d * c.KvDim + l * d * d + l * d + 3 * l * d * hd + d
                      + (long)c.SeqLen * c.HeadDim + (c.SharedClassifier ? 0 : v * d);
        return HeaderBytes + floats * 4;
    }

    void Layout()
    {
        var c = Header;
        long offset = HeaderBytes;
        void Stacked(string nameFormat, long[] shape, Func<torch.Tensor, torch.Tensor>? transform = null)
        {
            long per = shape.Aggregate(1L, (a, b) => a * b) * 4;
            for (int i = 0; i < c.Layers; i++) { _entries[string.Format(nameFormat, i)] = (offset, shape, transform); offset += per; }
        }
        void Single(string? name, long[] shape)
        {
            if (name != null) _entries[name] = (offset, shape, null);
            offset += shape.Aggregate(1L, (a, b) => a * b) * 4;
        }
        Single("model.embed_tokens.weight", new long[] { c.VocabSize, c.Dim });
        Stacked("model.layers.{0}.input_layernorm.weight", new long[] { c.Dim });
        Stacked("model.layers.{0}.self_attn.q_proj.weight", new long[] { c.Dim, c.Dim }, w => PermuteRotary(w, c.Heads));
        Stacked("model.layers.{0}.self_attn.k_proj.weight", new long[] { c.KvDim, c.Dim }, w => PermuteRotary(w, c.KvHeads));
        Stacked("model.layers.{0}.self_attn.v_proj.weight", new long[] { c.KvDim, c.Dim });
        Stacked("model.layers.{0}.self_attn.o_proj.weight", new long[] { c.Dim, c.Dim });
        Stacked("model.layers.{0}.post_attention_layernorm.weight", new long[] { c.Dim });
        Stacked("model.layers.{0}.mlp.gate_proj.weight", new long[] { c.HiddenDim, c.Dim });
        Stacked("model.layers.{0}.mlp.down_proj.weight", new long[] { c.Dim, c.HiddenDim });
        Stacked("model.layers.{0}.mlp.up_proj.weight", new long[] { c.HiddenDim, c.Dim });
        Single("model.norm.weight", new long[] { c.Dim });
        Single(null, new long[] { c.SeqLen, c.HeadDim / 2 }); // freq_cis_real (unused)
        Single(null, new long[] { c.SeqLen, c.HeadDim / 2 }); // freq_cis_imag (unused)
        if (!c.SharedClassifier) Single("lm_head.weight", new long[] { c.VocabSize, c.Dim });
    }

    /// <summary>
    /// llama2.c rotates interleaved pairs (2i, 2i+1) of each head; HF rotates (i, i + d/2). Reorders the
    /// output rows of wq/wk so the same rotation applies under HF's convention.
    /// </summary>
    public static torch.Tensor PermuteRotary(torch.Tensor w, int heads)
    {
        long rows = w.shape[0], cols = w.shape[1];
        return w.view(heads, rows / heads / 2, 2, cols).transpose(1, 2).reshape(rows, cols);
    }

    /// <summary>The equivalent Hugging Face LlamaConfig (config.json content).</summary>
    public JsonObject ToHfConfig() => new()
    {
        ["architectures"] = new JsonArray("LlamaForCausalLM"),
        ["model_type"] = "llama",
        ["hidden_size"] = Header.Dim,
        ["intermediate_size"] = Header.HiddenDim,
        ["num_hidden_layers"] = Header.Layers,
        ["num_attention_heads"] = Header.Heads,
        ["num_key_value_heads"] = Header.KvHeads,
        ["vocab_size"] = Header.VocabSize,
        ["max_position_embeddings"] = Header.SeqLen,
        ["rms_norm_eps"] = 1e-5,
        ["rope_theta"] = 10000.0,
        ["hidden_act"] = "silu",
        ["tie_word_embeddings"] = Header.SharedClassifier,
        ["attention_bias"] = false,
        ["mlp_bias"] = false,
        ["bos_token_id"] = 1,
        ["eos_token_id"] = 2,
        ["torch_dtype"] = "float32",
    };

    /// <inheritdoc/>
    public IReadOnlyCollection<string> Names => _entries.Keys;

    /// <inheritdoc/>
    public bool Contains(string name) => _entries.ContainsKey(name);

    /// <inheritdoc/>
    public long[] ShapeOf(string name) => Entry(name).StoredShape;

    (long Offset, long[] StoredShape, Func<torch.Tensor, torch.Tensor>? Transform) Entry(string name) =>
        _entries.TryGetValue(name, out var e) ? e : throw new InvalidCheckpointException(Path, $"no tensor named '{name}'");

    /// <inheritdoc/>
    public unsafe torch.Tensor Read(string name)
    {
        var (offset, shape, transform) = Entry(name);
        using var scope = torch.NewDisposeScope();
        var tensor = torch.empty(shape, torch.ScalarType.Float32);
        long bytes = tensor.numel() * 4;
        byte* basePtr = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
        try { Buffer.MemoryCopy(basePtr + _view.PointerOffset + offset, (void*)Mechanist.Tensors.TensorMemory.DataPointer(tensor), bytes, bytes); }
        finally { _view.SafeMemoryMappedViewHandle.ReleasePointer(); }
        return (transform == null ? tensor : transform(tensor).contiguous()).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public void Dispose() { _view.Dispose(); _map.Dispose(); }
}
