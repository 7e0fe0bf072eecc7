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

    /// <summary>Keeps <paramref name="target"/>'s gradients, <see cref="Whole"/>'s [layers, heads, positions, d_head] (taken over: detached from any dispose scope).</summary>
    internal void Add(GraphNode target, Tensor whole)
    {
        whole.DetachFromDisposeScope();
        if (_rows.Remove(target, out var old)) { Bytes -= old.NumberOfElements * 4; old.Dispose(); }
        _rows[target] = whole;
        Bytes += whole.NumberOfElements * 4;
    }

    /// <summary><paramref name="target"/>'s gradients [layers, heads, positions, d_head] (float32; up to its own position), if kept (owned by the cache).</summary>
    public bool TryGet(GraphNode target, out Tensor whole) => _rows.TryGetValue(target, out whole!);

    /// <summary>
    /// One target's gradients as the cache keeps them: per layer [P, heads, d_head] (any float type) cut to the first
    /// <paramref name="positions"/> (the target's own and those before it: no later position reaches it) into one float32
    /// [layers, heads, positions, d_head], heads first so that a head's gradients over the positions are one block.
    /// </summary>
    public static Tensor Whole(IReadOnlyList<Tensor> perLayer, int positions)
    {
        var first = perLayer[0];
        var whole = empty(new long[] { perLayer.Count, first.shape[1], positions, first.shape[2] }, ScalarType.Float32, first.device);
        for (int m = 0; m < perLayer.Count; m++)
            using (var layer = whole[m]) using (var rows = perLayer[m].narrow(0, 0, positions)) using (var heads = rows.permute(1, 0, 2)) layer.copy_(heads);
        return whole;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var row in _rows.Values) row.Dispose();
        _rows.Clear(); Bytes = 0;
    }
}
