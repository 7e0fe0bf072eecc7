using static TorchSharp.torch;

namespace Mechanist.Models;

/// <summary>Keys (after rotary) and values of past positions, per layer, as [batch, pos, n_kv_heads, d_head].</summary>
public sealed class KvCache : IDisposable
{
    readonly Tensor?[] _keys, _values;

    /// <summary>An empty cache for a model with <paramref name="layers"/> blocks.</summary>
    public KvCache(int layers) { _keys = new Tensor?[layers]; _values = new Tensor?[layers]; }

    /// <summary>Number of cached positions.</summary>
    public int Length { get; private set; }

    /// <summary>Appends the new keys/values of one layer and returns the full ones (caller must not dispose them).</summary>
    internal (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        var oldK = _keys[layer]; var oldV = _values[layer];
        var fullK = (oldK is null ? k.alias() : cat(new[] { oldK, k }, 1)).DetachFromDisposeScope();
        var fullV = (oldV is null ? v.alias() : cat(new[] { oldV, v }, 1)).DetachFromDisposeScope();
        oldK?.Dispose(); oldV?.Dispose();
        _keys[layer] = fullK; _values[layer] = fullV;
        return (fullK, fullV);
    }

    /// <summary>Called once per forward, after every layer appended, with the number of new positions.</summary>
    internal void Advance(int positions) => Length += positions;

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in _keys.Concat(_values)) t?.Dispose();
        Array.Clear(_keys); Array.Clear(_values);
        Length = 0;
    }
}
