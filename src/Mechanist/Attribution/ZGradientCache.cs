using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>
/// The gradients of target readouts with respect to every layer's <c>hook_z</c>, kept from an attribution's own backward passes so that
/// head loadings need not run them again. Rows are kept in the order the attribution computes them (logits first, then features by
/// influence: the ones pruning is likeliest to keep) until <see cref="BudgetBytes"/> is spent; later targets are recomputed when asked for.
/// </summary>
public sealed class ZGradientCache : IDisposable
{
    readonly Dictionary<GraphNode, Tensor> _rows = new();
    readonly long _slabBytes = SlabBytes;
    readonly List<Tensor> _slabs = new();
    Tensor? _slab;                                 // the slab rows are being written into, and how many of its floats are used
    long _slabUsed;

    /// <summary>A cache that holds at most <paramref name="budgetBytes"/> of gradients (float32).</summary>
    public ZGradientCache(long budgetBytes = 1L << 30)
    {
        if (budgetBytes < 0) throw new MechanistException("a gradient budget is a number of bytes, not negative");
        BudgetBytes = budgetBytes;
    }

    /// <summary>A cache whose slabs hold <paramref name="slabBytes"/> (tests: rows across many slabs).</summary>
    internal ZGradientCache(long budgetBytes, long slabBytes) : this(budgetBytes)
    {
        if (slabBytes <= 0) throw new MechanistException("a slab holds some bytes");
        _slabBytes = slabBytes;
    }

    /// <summary>The most bytes kept.</summary>
    public long BudgetBytes { get; }

    /// <summary>Bytes kept now.</summary>
    public long Bytes { get; private set; }

    /// <summary>Targets kept.</summary>
    public int Count => _rows.Count;

    /// <summary>Whether a row of <paramref name="bytes"/> still fits.</summary>
    internal bool Fits(long bytes) => Bytes + bytes <= BudgetBytes;

    /// <summary>
    /// Keeps <paramref name="target"/>'s gradients: <see cref="Whole"/> of <paramref name="perLayer"/> up to <paramref name="positions"/>,
    /// written into the cache's slabs rather than a tensor of its own. A row is small (a few KB a position) and a graph keeps
    /// thousands: each in fresh memory of its own costs a page fault per 4 KB (about 65,000 for the built-in model's 4,000-row graph,
    /// 0.4 s on this project's VM), where slabs of <see cref="SlabBytes"/> take the huge pages libtorch gives tensors of 2 MB and more.
    /// </summary>
    internal void Keep(GraphNode target, IReadOnlyList<Tensor> perLayer, int positions) =>
        Write(perLayer, positions, Reserve(target, Shape(perLayer, positions), perLayer[0].device));

    /// <summary>
    /// Makes room for <paramref name="target"/>'s row, [layers, heads, positions, d_head] (float32), in the slabs and keeps it, unwritten:
    /// the caller writes every layer of it (<see cref="WriteLayer"/>) before the row is read.
    /// </summary>
    internal Tensor Reserve(GraphNode target, long[] shape, Device device)
    {
        long count = shape.Aggregate(1L, (a, b) => a * b);
        if (_slab is null || _slabUsed + count > _slab.shape[0] || _slab.device_type != device.type || _slab.device_index != device.index)
        {
            long floats = Math.Max(count, Math.Min(_slabBytes, Math.Max(0, BudgetBytes - Bytes)) / 4);
            _slab = empty(new[] { floats }, ScalarType.Float32, device);
            _slab.DetachFromDisposeScope();                       // the cache owns its slabs and rows, whatever scope adds them
            _slabs.Add(_slab);
            _slabUsed = 0;
        }
        Tensor row;
        using (var span = _slab.narrow(0, _slabUsed, count)) row = span.view(shape);
        row.DetachFromDisposeScope();
        _slabUsed += count;
        if (_rows.Remove(target, out var old)) { Bytes -= old.NumberOfElements * 4; old.Dispose(); }
        _rows[target] = row;
        Bytes += count * 4;
        return row;
    }

    /// <summary>Writes layer <paramref name="layer"/> of a reserved <paramref name="row"/> from one target's gradients there, [P, heads, d_head] (P at least the row's positions).</summary>
    internal static void WriteLayer(Tensor row, int layer, Tensor gradients)
    {
        using var into = row[layer];
        using var rows = gradients.narrow(0, 0, row.shape[2]);
        using var heads = rows.permute(1, 0, 2);
        into.copy_(heads);
    }

    /// <summary>The size of the blocks rows are written into (the last one may be smaller: what is left of the budget).</summary>
    public const long SlabBytes = 32L << 20;

    /// <summary><paramref name="target"/>'s gradients [layers, heads, positions, d_head] (float32; up to its own position), if kept (owned by the cache).</summary>
    public bool TryGet(GraphNode target, out Tensor whole) => _rows.TryGetValue(target, out whole!);

    /// <summary>
    /// One target's gradients as the cache keeps them: per layer [P, heads, d_head] (any float type) cut to the first
    /// <paramref name="positions"/> (the target's own and those before it: no later position reaches it) into one float32
    /// [layers, heads, positions, d_head], heads first so that a head's gradients over the positions are one block.
    /// </summary>
    public static Tensor Whole(IReadOnlyList<Tensor> perLayer, int positions)
    {
        var whole = empty(Shape(perLayer, positions), ScalarType.Float32, perLayer[0].device);
        Write(perLayer, positions, whole);
        return whole;
    }

    /// <summary>[layers, heads, positions, d_head] of per-layer gradients [P, heads, d_head] cut to <paramref name="positions"/>.</summary>
    static long[] Shape(IReadOnlyList<Tensor> perLayer, int positions) => new[] { perLayer.Count, perLayer[0].shape[1], positions, perLayer[0].shape[2] };

    static void Write(IReadOnlyList<Tensor> perLayer, int positions, Tensor whole)
    {
        for (int m = 0; m < perLayer.Count; m++) WriteLayer(whole, m, perLayer[m]);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var row in _rows.Values) row.Dispose();
        foreach (var slab in _slabs) slab.Dispose();
        _rows.Clear(); _slabs.Clear(); _slab = null; _slabUsed = 0; Bytes = 0;
    }
}
