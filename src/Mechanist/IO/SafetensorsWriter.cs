using Mechanist.Tensors;
using System.Text;
using System.Text.Json;
using TorchSharp;

namespace Mechanist.IO;

/// <summary>Writes safetensors files atomically, laid out as the reference library does.</summary>
public static class SafetensorsWriter
{
    /// <summary>
    /// Writes <paramref name="tensors"/> to <paramref name="path"/> (temp file + rename). Tensors are
    /// stored contiguous, largest element size first then by name, header padded to 8 bytes.
    /// </summary>
    public static void Write(string path, IEnumerable<KeyValuePair<string, torch.Tensor>> tensors,
        IReadOnlyDictionary<string, string>? metadata = null) =>
        WriteLazy(path, tensors.Select(kv => new LazyTensor(kv.Key, TensorDTypes.FromTorch(kv.Value.dtype), kv.Value.shape, () => kv.Value.alias())).ToList(), metadata);

    /// <summary>A tensor to write, made only when its bytes are due (so a file larger than memory can be written).</summary>
    public sealed record LazyTensor(string Name, TensorDType DType, long[] Shape, Func<torch.Tensor> Make)
    {
        /// <summary>Bytes the tensor occupies in the file.</summary>
        public long Bytes => Shape.Aggregate(1L, (a, b) => a * b) * DType.Size();
    }

    /// <summary>
    /// Writes tensors that are produced one at a time: each <see cref="LazyTensor.Make"/> is called when its
    /// bytes are written, checked against the declared dtype and shape, and disposed right after.
    /// </summary>
    public static void WriteLazy(string path, IReadOnlyList<LazyTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var items = tensors.OrderByDescending(t => t.DType.Size()).ThenBy(t => t.Name, StringComparer.Ordinal).ToList();
        var duplicate = items.GroupBy(i => i.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate != null) throw new MechanistException($"{path}: tensor '{duplicate.Key}' given twice");

        var header = new Dictionary<string, object>();
        if (metadata is { Count: > 0 }) header["__metadata__"] = metadata;
        long offset = 0;
        foreach (var t in items)
        {
            header[t.Name] = new { dtype = t.DType.ToString(), shape = t.Shape, data_offsets = new[] { offset, offset + t.Bytes } };
            offset += t.Bytes;
        }
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(header);
        int padded = (json.Length + 7) / 8 * 8;
        var headerBytes = new byte[padded];
        Array.Fill(headerBytes, (byte)' ');
        json.CopyTo(headerBytes, 0);

        AtomicFile.Write(path, stream =>
        {
            stream.Write(BitConverter.GetBytes((ulong)padded));
            stream.Write(headerBytes);
            foreach (var t in items)
            {
                using var made = t.Make();
                if (TensorDTypes.FromTorch(made.dtype) != t.DType || !made.shape.SequenceEqual(t.Shape))
                    throw new MechanistException($"{path}: tensor '{t.Name}' was declared {t.DType} [{string.Join(", ", t.Shape)}] but is {made.dtype} [{string.Join(", ", made.shape)}]");
                using var cpu = made.DetachedCpu();
                WriteTensorBytes(stream, cpu);
            }
        });
    }

    static unsafe void WriteTensorBytes(Stream stream, torch.Tensor contiguousCpu)
    {
        long total = contiguousCpu.numel() * contiguousCpu.element_size();
        byte* src = (byte*)Tensors.TensorMemory.DataPointer(contiguousCpu);
        const int chunk = 1 << 24;
        for (long done = 0; done < total; done += chunk)
            stream.Write(new ReadOnlySpan<byte>(src + done, (int)Math.Min(chunk, total - done)));
    }

    /// <summary>Convenience overload for a dictionary.</summary>
    public static void Write(string path, IReadOnlyDictionary<string, torch.Tensor> tensors,
        IReadOnlyDictionary<string, string>? metadata = null) =>
        Write(path, tensors.AsEnumerable(), metadata);
}
