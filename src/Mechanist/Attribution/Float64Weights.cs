using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>
/// Float64 copies of model weights, made once per use (the decompositions run in float64 and read the same W_Q, W_K, W_V, W_O
/// and norm weights for every score, edge and source). Owns the copies; dispose it when done.
/// </summary>
internal sealed class Float64Weights : IDisposable
{
    readonly Dictionary<Tensor, Tensor> _copies = new(ReferenceEqualityComparer.Instance);

    /// <summary>The float64 copy of <paramref name="weight"/> (outside every dispose scope).</summary>
    public Tensor Of(Tensor weight)
    {
        if (_copies.TryGetValue(weight, out var copy)) return copy;
        copy = weight.to(ScalarType.Float64).DetachFromDisposeScope();
        _copies[weight] = copy;
        return copy;
    }

    /// <summary>The float64 copy, or null for a missing weight.</summary>
    public Tensor? OfOptional(Tensor? weight) => weight is null ? null : Of(weight);

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in _copies.Values) t.Dispose();
        _copies.Clear();
    }
}
