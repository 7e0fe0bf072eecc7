using System.IO.MemoryMappedFiles;
using System.Text.Json;
using TorchSharp;

namespace Mechanist.IO;

/// <summary>
/// A memory-mapped safetensors file. Opening reads and validates only the header; tensor bytes are
/// paged in when a tensor is read. Every structural problem is reported as an
/// <see cref="InvalidCheckpointException"/> naming the file and, where relevant, the tensor.
/// </summary>
public sealed unsafe class SafetensorsFile : ITensorSource
{
    /// <summary>Largest header accepted (the reference implementation's limit is 100 MB too).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    readonly MemoryMappedFile _map;
    readonly MemoryMappedViewAccessor _view;
    readonly byte* _base;
    readonly long _dataStart;
    readonly Dictionary<string, TensorInfo> _tensors;

    SafetensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePtr,
        long dataStart, Dictionary<string, TensorInfo> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path; _map = map; _view = view; _base = basePtr; _dataStart = dataStart;
        _tensors = tensors; Metadata = metadata;
    }

    /// <summary>The file's path.</summary>
    public string Path { get; }

    /// <summary>The header's <c>__metadata__</c> (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>All tensor entries, in header order of their offsets.</summary>
    public IReadOnlyCollection<TensorInfo> Tensors => _tensors.Values;

    /// <inheritdoc/>
    public IReadOnlyCollection<string> Names => _tensors.Keys;

    /// <inheritdoc/>
    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>The entry for one tensor.</summary>
    public TensorInfo Info(string name) =>
        _tensors.TryGetValue(name, out var info) ? info
            : throw new InvalidCheckpointException(Path, $"no tensor named '{name}'");

    /// <inheritdoc/>
    public long[] ShapeOf(string name) => Info(name).Shape;

    /// <summary>Opens and validates a safetensors file.</summary>
    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new MechanistException($"{path}: file not found");
        long length = AtomicFile.LengthOf(path);
        if (length < 8)
            throw new InvalidCheckpointException(path, $"truncated: {length} bytes, a safetensors file starts with an 8-byte header length");

        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* ptr = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref ptr);
            ptr += view.PointerOffset;
            ulong headerLength = *(ulong*)ptr;
            if (headerLength > MaxHeaderBytes)
                throw new InvalidCheckpointException(path, $"header length {headerLength} is absurdly large (limit {MaxHeaderBytes} bytes)");
            if (8 + (long)headerLength > length)
                throw new InvalidCheckpointException(path, $"header length {headerLength} runs past the end of the file ({length} bytes): truncated or not a safetensors file");
            var header = new ReadOnlySpan<byte>(ptr + 8, (int)headerLength);
            long dataStart = 8 + (long)headerLength;
            var (tensors, metadata) = ParseHeader(path, header, length - dataStart);
            return new SafetensorsFile(path, map, view, ptr, dataStart, tensors, metadata);
        }
        catch
        {
            if (view != null) { view.SafeMemoryMappedViewHandle.ReleasePointer(); view.Dispose(); }
            map.Dispose();
            throw;
        }
    }

    static (Dictionary<string, TensorInfo>, IReadOnlyDictionary<string, string>) ParseHeader(
        string path, ReadOnlySpan<byte> header, long dataLength)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header.ToArray()); }
        catch (JsonException e) { throw new InvalidCheckpointException(path, $"invalid header JSON: {e.Message}"); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new InvalidCheckpointException(path, "invalid header JSON: the header must be a JSON object");

        var tensors = new Dictionary<string, TensorInfo>();
        var metadata = new Dictionary<string, string>();
        foreach (var entry in doc.RootElement.EnumerateObject())
        {
            if (entry.Name == "__metadata__")
            {
                if (entry.Value.ValueKind != JsonValueKind.Object)
                    throw new InvalidCheckpointException(path, "__metadata__ must be an object of strings");
                foreach (var m in entry.Value.EnumerateObject())
                    metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()!
                        : throw new InvalidCheckpointException(path, $"__metadata__ value '{m.Name}' is not a string");
                continue;
            }
            tensors[entry.Name] = ParseEntry(path, entry.Name, entry.Value, dataLength);
        }

        TensorInfo? previous = null;
        foreach (var t in tensors.Values.OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (previous != null && t.Begin < previous.End)
                throw new InvalidCheckpointException(path,
                    $"tensors '{previous.Name}' [{previous.Begin}, {previous.End}) and '{t.Name}' [{t.Begin}, {t.End}) overlap");
            previous = t;
        }
        return (tensors, metadata);
    }

    static TensorInfo ParseEntry(string path, string name, JsonElement e, long dataLength)
    {
        InvalidCheckpointException Bad(string what) => new(path, $"tensor '{name}': {what}");
        if (e.ValueKind != JsonValueKind.Object) throw Bad("entry is not an object");
        if (!e.TryGetProperty("dtype", out var dtypeEl) || dtypeEl.ValueKind != JsonValueKind.String)
            throw Bad("missing dtype");
        var dtype = TensorDTypes.Parse(dtypeEl.GetString()!) ?? throw Bad($"unknown dtype '{dtypeEl.GetString()}'");
        if (!e.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
            throw Bad("missing shape");
        var shape = new List<long>();
        foreach (var d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0)
                throw Bad($"shape {shapeEl.GetRawText()} is not a list of non-negative integers");
            shape.Add(v);
        }
        if (!e.TryGetProperty("data_offsets", out var offEl) || offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2
            || !offEl[0].TryGetInt64(out long begin) || !offEl[1].TryGetInt64(out long end))
            throw Bad("data_offsets must be two integers");
        if (begin < 0 || end < begin || end > dataLength)
            throw Bad($"data_offsets [{begin}, {end}] are out of range (the data section holds {dataLength} bytes)");
        // Offsets need not be multiples of the element size: Python's safetensors writes such files (after U8 tensors),
        // and reading copies the bytes, so any offset works.
        var info = new TensorInfo(name, dtype, shape.ToArray(), begin, end);
        long expected;
        try { expected = checked(info.ElementCount * dtype.Size()); }
        catch (OverflowException) { throw Bad($"shape {info.ShapeText} is too large"); }
        if (end - begin != expected)
            throw Bad($"byte count {end - begin} does not match {dtype} x {info.ShapeText} = {expected} bytes");
        return info;
    }

    /// <inheritdoc/>
    public torch.Tensor Read(string name)
    {
        var info = Info(name);
        var tensor = torch.empty(info.Shape, info.DType.ToTorch());
        long bytes = info.End - info.Begin;
        if (bytes > 0)
            Buffer.MemoryCopy(_base + _dataStart + info.Begin, (void*)Mechanist.Tensors.TensorMemory.DataPointer(tensor), bytes, bytes);
        return tensor;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}
