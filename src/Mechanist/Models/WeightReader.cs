using Mechanist.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace Mechanist.Models;

/// <summary>
/// Reads named tensors for an architecture: checks each shape against what config.json implies,
/// converts to the model's dtype and device, and reports tensors that are missing or left unused.
/// </summary>
public sealed class WeightReader
{
    readonly ITensorSource _source;
    readonly HashSet<string> _used = new();
    readonly string _where;

    /// <summary>Creates a reader over <paramref name="source"/>.</summary>
    public WeightReader(ITensorSource source, string where, ScalarType dtype, Device device)
    {
        _source = source; _where = where; DType = dtype; Device = device;
    }

    /// <summary>Target dtype.</summary>
    public ScalarType DType { get; }

    /// <summary>Target device.</summary>
    public Device Device { get; }

    /// <summary>Whether the checkpoint has a tensor.</summary>
    public bool Has(string name) => _source.Contains(name);

    /// <summary>Reads a required tensor of the given shape.</summary>
    public Tensor Take(string name, params long[] shape) =>
        TakeOrNull(name, shape) ?? throw new InvalidCheckpointException(_where, $"missing tensor '{name}' (expected shape [{string.Join(", ", shape)}])");

    /// <summary>Reads an optional tensor of the given shape; null when absent.</summary>
    public Tensor? TakeOrNull(string name, params long[] shape)
    {
        if (!_source.Contains(name)) return null;
        var actual = _source.ShapeOf(name);
        if (!actual.SequenceEqual(shape))
            throw new InvalidCheckpointException(_where,
                $"tensor '{name}' has shape [{string.Join(", ", actual)}] but config.json implies [{string.Join(", ", shape)}]");
        _used.Add(name);
        using var raw = _source.Read(name);
        return raw.to(DType, Device).contiguous().DetachFromDisposeScope();
    }

    /// <summary>Marks tensors as intentionally ignored (buffers such as rotary inv_freq).</summary>
    public void Ignore(Func<string, bool> predicate)
    {
        foreach (var n in _source.Names.Where(predicate)) _used.Add(n);
    }

    /// <summary>Throws if the checkpoint holds tensors no part of the model used.</summary>
    public void EnsureAllUsed()
    {
        var unused = _source.Names.Where(n => !_used.Contains(n)).OrderBy(n => n, StringComparer.Ordinal).ToList();
        if (unused.Count > 0)
            throw new InvalidCheckpointException(_where,
                $"unexpected tensor{(unused.Count > 1 ? "s" : "")} {string.Join(", ", unused.Take(5).Select(u => $"'{u}'"))}{(unused.Count > 5 ? $" and {unused.Count - 5} more" : "")}: the checkpoint does not match its config.json architecture");
    }
}
