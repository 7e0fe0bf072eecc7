using TorchSharp;

namespace Mechanist.Tensors;

/// <summary>
/// Scalars rooted for the life of the process. TorchSharp's <c>a + b</c> and <c>add_(b)</c> pass a temporary Scalar (alpha = 1)
/// to native code after the managed object is already unreachable, so a GC on another thread can finalize it during the call
/// (an intermittent "Expected false to be true … toFloat" from add). Hot paths add with <see cref="One"/> instead.
/// </summary>
public static class Scalars
{
    /// <summary>1, as alpha for additions.</summary>
    public static readonly Scalar One = ScalarExtensionMethods.ToScalar(1.0);
}
