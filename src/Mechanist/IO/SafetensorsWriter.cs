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
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        var items = tensors
            .Select(kv => (Name: kv.Key, Tensor: kv.Value, DType: TensorDTypes.FromTorch(kv.Value.dtype)))
            .OrderByDescending(t => t.DType.Size()).ThenBy(t => t.Name, StringComparer.Ordinal).ToList();
        var duplicate = items.GroupBy(i => i.Name).FirstOrDefault(g => g.Count() > 1);
        if (duplicate != null) throw new MechanistException($"{path}: tensor '{duplicate.Key}' given twice");

        var header = new Dictionary<string, object>();
        if (metadata is { Count: > 0 }) header["__metadata__"] = metadata;
        long offset = 0;
        foreach (var (name, tensor, dtype) in items)
        {
            long bytes = tensor.numel() * dtype.Size();
            header[name] = new { dtype = dtype.ToString(), shape = tensor.shape, data_offsets = new[] { offset, offset + bytes } };
            offset += bytes;
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
            foreach (var (_, tensor, _) in items)
            {
                using var cpu = tensor.detach().cpu().contiguous();
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
