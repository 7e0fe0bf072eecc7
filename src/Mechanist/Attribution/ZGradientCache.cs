using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>
/// The gradients of target readouts with respect to every layer's <c>hook_z</c>, kept from an attribution's own backward passes so that
/// head loadings need not run them again. Rows are kept in the order the attribution computes them (logits first, then features by
/// influence: the ones pruning is likeliest to keep) until <see cref="BudgetBytes"/> is spent; later targets are recomputed when asked for.
/// </summary>
public sealed class ZGradientCache : IDisposable
{
    readonly Dictionary<GraphNode, Tensor[]> _rows = new();

    /// <summary>A cache that holds at most <paramref name="budgetBytes"/> of gradients (float32).</summary>
    public ZGradientCache(long budgetBytes = 1L << 30)
    {
        if (budgetBytes < 0) throw new MechanistException("a gradient budget is a number of bytes, not negative");
        BudgetBytes = budgetBytes;
    }

    /// <summary>The most bytes kept.</summary>
    public long BudgetBytes { get; }

    /// <summary>Bytes kept now.</summary>
    public long Bytes { get; private set; }

    /// <summary>Targets kept.</summary>
    public int Count => _rows.Count;

    /// <summary>Whether a row of <paramref name="bytes"/> still fits.</summary>
    internal bool Fits(long bytes) => Bytes + bytes <= BudgetBytes;

    /// <summary>Keeps <paramref name="target"/>'s gradients, one [T, heads, d_head] float32 tensor per layer (taken over: detached from any dispose scope).</summary>
    internal void Add(GraphNode target, Tensor[] perLayer)
    {
        foreach (var t in perLayer) t.DetachFromDisposeScope();
        if (_rows.Remove(target, out var old)) foreach (var t in old) { Bytes -= t.NumberOfElements * 4; t.Dispose(); }
        _rows[target] = perLayer;
        Bytes += perLayer.Sum(t => t.NumberOfElements * 4);
    }

    /// <summary><paramref name="target"/>'s gradients per layer, if kept (owned by the cache).</summary>
    public bool TryGet(GraphNode target, out Tensor[] perLayer) => _rows.TryGetValue(target, out perLayer!);

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var row in _rows.Values) foreach (var t in row) t.Dispose();
        _rows.Clear(); Bytes = 0;
    }
}
