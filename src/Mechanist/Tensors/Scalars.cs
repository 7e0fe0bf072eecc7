using System.Collections.Concurrent;
using TorchSharp;

#pragma warning disable RS0030 // rooted for the process, so safe to pass to any native call

namespace Mechanist.Tensors;

/// <summary>
/// Scalars rooted for the life of the process. TorchSharp turns a number in a tensor operation (<c>t * 0.5</c>, <c>a + b</c>'s
/// alpha, <c>masked_fill(m, -inf)</c>) into a temporary Scalar whose native handle is passed to libtorch while the managed object
/// is already unreachable, so a GC on another thread can finalize it during the call (an intermittent "Expected false to be
/// true … toFloat"). Hot paths pass these instead: each distinct value is made once and kept.
/// </summary>
public static class Scalars
{
    static readonly ConcurrentDictionary<double, Scalar> Doubles = new();
    static readonly ConcurrentDictionary<long, Scalar> Longs = new();

    /// <summary>1, as alpha for additions.</summary>
    public static readonly Scalar One = Of(1.0);

    /// <summary>The rooted float64 Scalar of <paramref name="value"/> (a value outside the first 65,536 distinct ones is rooted too).</summary>
    public static Scalar Of(double value) => Doubles.GetOrAdd(value, v => ScalarExtensionMethods.ToScalar(v));

    /// <summary>The rooted int64 Scalar of <paramref name="value"/> (keeps integer tensors integer).</summary>
    public static Scalar Int(long value) => Longs.GetOrAdd(value, v => ScalarExtensionMethods.ToScalar(v));
}
