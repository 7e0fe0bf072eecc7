using System.IO.Compression;
using System.Text;
using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries.Formats;

/// <summary>
/// Gemma Scope's <c>params.npz</c> (read only): a NumPy zip with W_enc [d_model, d_sae], W_dec [d_sae, d_model],
/// b_enc, b_dec and threshold: a JumpReLU SAE (or transcoder, when W_dec's width differs from W_enc's).
/// The file does not name its hook point, so the caller does.
/// </summary>
public static partial class GemmaScopeFormat
{
    /// <summary>Loads <paramref name="path"/> (a params.npz, or a folder holding one) as an SAE at <paramref name="hookName"/>.</summary>
    public static SaeBundle Load(string path, string hookName, Device? device = null)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, "params.npz") : path;
        if (!File.Exists(file)) throw new MechanistException($"{path}: no params.npz");
        var arrays = new Dictionary<string, Tensor>();
        try
        {
            using (var zip = OpenZip(file))
                foreach (var entry in zip.Entries.Where(e => e.Name.EndsWith(".npy", StringComparison.Ordinal)))
                {
                    using var stream = entry.Open();
                    arrays[entry.Name[..^4]] = ReadNpy(stream, $"{file}:{entry.Name}");
                }
            Tensor Take(string name) => arrays.Remove(name, out var t) ? Tensors.TensorChecks.RequireFinite(t.to(ScalarType.Float32, device ?? CPU), name, file) : throw new InvalidCheckpointException(file, $"missing array '{name}'");
            using var wEncIn = Take("W_enc");
            var sae = new Transcoder(wEncIn.t().contiguous(), Take("b_enc"), Take("W_dec"), Take("b_dec"), DictionaryActivation.JumpReLU, Take("threshold"));
            return new SaeBundle(sae, hookName, "");
        }
        finally { foreach (var t in arrays.Values) t.Dispose(); }
    }

    static ZipArchive OpenZip(string file)
    {
        try { return ZipFile.OpenRead(file); }
        catch (InvalidDataException e) { throw new InvalidCheckpointException(file, $"not a zip (.npz) file ({e.Message})"); }
    }

    [GeneratedRegex(@"'descr'\s*:\s*'([<>|=]?)([fiu])(\d+)'")] private static partial Regex DescrPattern();
    [GeneratedRegex(@"'fortran_order'\s*:\s*(True|False)")] private static partial Regex FortranPattern();
    [GeneratedRegex(@"'shape'\s*:\s*\(([^)]*)\)")] private static partial Regex ShapePattern();

    /// <summary>Reads one .npy array (little-endian float16/32/64 or int32/64, C or Fortran order).</summary>
    public static Tensor ReadNpy(Stream stream, string what)
    {
        var head = new byte[10];
        ReadExactly(stream, head, what);
        if (head[0] != 0x93 || Encoding.ASCII.GetString(head, 1, 5) != "NUMPY") throw new MechanistException($"{what}: not a .npy array (bad magic)");
        int major = head[6];
        int headerLength;
        if (major == 1) headerLength = BitConverter.ToUInt16(head, 8);
        else
        {
            var extra = new byte[2]; ReadExactly(stream, extra, what);
            headerLength = (int)BitConverter.ToUInt32(new[] { head[8], head[9], extra[0], extra[1] });
        }
        if (headerLength <= 0 || headerLength > 1 << 20) throw new MechanistException($"{what}: implausible .npy header length {headerLength}");
        var headerBytes = new byte[headerLength]; ReadExactly(stream, headerBytes, what);
        string header = Encoding.Latin1.GetString(headerBytes);
        var d = DescrPattern().Match(header); var f = FortranPattern().Match(header); var s = ShapePattern().Match(header);
        if (!d.Success || !f.Success || !s.Success) throw new MechanistException($"{what}: unreadable .npy header {header.Trim()}");
        if (d.Groups[1].Value == ">") throw new MechanistException($"{what}: big-endian arrays are not supported");
        var type = (d.Groups[2].Value, d.Groups[3].Value) switch
        {
            ("f", "2") => ScalarType.Float16, ("f", "4") => ScalarType.Float32, ("f", "8") => ScalarType.Float64,
            ("i", "4") => ScalarType.Int32, ("i", "8") => ScalarType.Int64,
            var (k, n) => throw new MechanistException($"{what}: dtype {k}{n} is not supported"),
        };
        var shape = s.Groups[1].Value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(x => long.TryParse(x, out long v) && v >= 0 ? v : throw new MechanistException($"{what}: bad shape ({s.Groups[1].Value})")).ToArray();
        bool fortran = f.Groups[1].Value == "True";
        long count = shape.Aggregate(1L, (a, b) => a * b);
        int size = type switch { ScalarType.Float16 => 2, ScalarType.Float32 or ScalarType.Int32 => 4, _ => 8 };
        var data = new byte[checked(count * size)];
        ReadExactly(stream, data, what);
        var storageShape = fortran ? shape.Reverse().ToArray() : shape;
        var t = empty(storageShape, type);
        unsafe { fixed (byte* src = data) Buffer.MemoryCopy(src, (void*)Mechanist.Tensors.TensorMemory.DataPointer(t), data.Length, data.Length); }
        if (!fortran) return t;
        var dims = Enumerable.Range(0, shape.Length).Reverse().Select(i => (long)i).ToArray();
        using (t) return t.permute(dims).contiguous();
    }

    static void ReadExactly(Stream stream, byte[] buffer, string what)
    {
        try { stream.ReadExactly(buffer); }
        catch (EndOfStreamException) { throw new MechanistException($"{what}: the .npy data is truncated"); }
    }
}
