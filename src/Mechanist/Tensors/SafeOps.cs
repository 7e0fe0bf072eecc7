using TorchSharp;
using static TorchSharp.torch;

#pragma warning disable RS0030 // the one file (with Scalars.cs) that makes Scalars: each stays reachable until its native call returns

namespace Mechanist.Tensors;

/// <summary>
/// Tensor–number arithmetic that cannot crash under GC pressure. TorchSharp's operators (<c>t * 0.5</c>, <c>a + b</c>), its
/// <c>add(Tensor)</c>-style overloads and every implicit number → <see cref="Scalar"/> conversion pass libtorch the handle of a
/// temporary Scalar that is already unreachable, so a collection on another thread can finalize it mid-call (a native
/// "Expected false to be true … toFloat"). These methods keep each Scalar alive (and dispose it) across the native call, or
/// pass a Scalar rooted for the process, and keep their tensor operands reachable until the call returns (a temporary tensor
/// outside a dispose scope is otherwise finalizable mid-call too). The unsafe members are banned at compile time
/// (build/BannedSymbols.TorchSharp.txt).
/// Overloads taking <see cref="long"/> keep integer tensors integer, as TorchSharp's int conversions did.
/// </summary>
public static class SafeOps
{
    static readonly Scalar One = Scalars.One;

    /// <summary>An alpha of 1 that integer tensors accept (libtorch refuses a floating-point alpha for them).</summary>
    static Scalar OneFor(Tensor a) => is_floating_point(a) || is_complex(a) ? One : Scalars.Int(1);

    // ---- detached copies (each intermediate held until the call that reads it has returned) ----

    /// <summary>
    /// A copy of <paramref name="t"/> detached from autograd, its detached view held until <c>clone</c> has returned: a chain such as
    /// <c>t.detach().clone()</c> outside a dispose scope leaves the view unreachable during <c>clone</c>, and another thread's collection
    /// can finalize it mid-call (clone then reads freed memory; GcStressTests caught it in the microscope).
    /// </summary>
    public static Tensor DetachedClone(this Tensor t)
    {
        using var detached = t.detach();
        return detached.clone();
    }

    /// <summary>
    /// <paramref name="t"/>'s values detached from autograd as a contiguous CPU tensor (in <paramref name="dtype"/> where given), each
    /// intermediate held until the next call has returned, as <see cref="DetachedClone"/> holds its view.
    /// </summary>
    public static Tensor DetachedCpu(this Tensor t, ScalarType? dtype = null)
    {
        using var detached = t.detach();
        using var cpu = detached.cpu();
        if (dtype is not { } type) return cpu.contiguous();
        using var typed = cpu.to(type);
        return typed.contiguous();
    }

    // ---- tensor ⊕ tensor (TorchSharp's add without alpha makes a temporary alpha of 1; sub and mul are safe as they are) ----

    /// <summary><paramref name="a"/> + <paramref name="b"/>.</summary>
    public static Tensor Add(this Tensor a, Tensor b) { var r = a.add(b, OneFor(a)); GC.KeepAlive(a); GC.KeepAlive(b); return r; }

    /// <summary><paramref name="a"/> − <paramref name="b"/>.</summary>
    public static Tensor Sub(this Tensor a, Tensor b) { var r = a.sub(b); GC.KeepAlive(a); GC.KeepAlive(b); return r; }

    /// <summary><paramref name="a"/> += <paramref name="b"/>, in place.</summary>
    public static Tensor AddInPlace(this Tensor a, Tensor b) { var r = a.add_(b, OneFor(a)); GC.KeepAlive(b); return r; }

    /// <summary><paramref name="a"/> −= <paramref name="b"/>, in place.</summary>
    public static Tensor SubInPlace(this Tensor a, Tensor b) { var r = a.sub_(b); GC.KeepAlive(b); return r; }

    /// <summary><paramref name="a"/> + <paramref name="alpha"/> · <paramref name="b"/>.</summary>
    public static Tensor AddScaled(this Tensor a, Tensor b, double alpha) { using var s = alpha.ToScalar(); var r = a.add(b, s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> += <paramref name="alpha"/> · <paramref name="b"/>, in place.</summary>
    public static Tensor AddScaledInPlace(this Tensor a, Tensor b, double alpha) { using var s = alpha.ToScalar(); var r = a.add_(b, s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> += <paramref name="value"/> · <paramref name="t1"/> · <paramref name="t2"/>, in place.</summary>
    public static Tensor AddcmulInPlace(this Tensor a, Tensor t1, Tensor t2, double value) { using var s = value.ToScalar(); var r = a.addcmul_(t1, t2, s); GC.KeepAlive(a); return r; }
    /// <summary>a += value · t1 / t2, in place.</summary>
    public static Tensor AddcdivInPlace(this Tensor a, Tensor t1, Tensor t2, double value) { using var s = value.ToScalar(); var r = a.addcdiv_(t1, t2, s); GC.KeepAlive(a); GC.KeepAlive(t1); GC.KeepAlive(t2); return r; }

    /// <summary>
    /// <paramref name="a"/>[index along <paramref name="dim"/>] += <paramref name="source"/>, in place (duplicates accumulate).
    /// </summary>
    public static Tensor IndexAddInPlace(this Tensor a, long dim, Tensor index, Tensor source) { var r = a.index_add_(dim, index, source, OneFor(a)); GC.KeepAlive(index); GC.KeepAlive(source); return r; }

    /// <summary><paramref name="a"/> · <paramref name="a"/> (TorchSharp's <c>square()</c> is <c>pow</c> with a temporary 2).</summary>
    public static Tensor Square(this Tensor a) { var r = a.mul(a); GC.KeepAlive(a); return r; }

    // ---- tensor ⊕ number ----

    /// <summary><paramref name="a"/> + <paramref name="value"/>.</summary>
    public static Tensor Add(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.add(s, OneFor(a)); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> + <paramref name="value"/> (integer tensors stay integer).</summary>
    public static Tensor Add(this Tensor a, long value) { using var s = value.ToScalar(); var r = a.add(s, OneFor(a)); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> += <paramref name="value"/>, in place.</summary>
    public static Tensor AddInPlace(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.add_(s, OneFor(a)); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> += <paramref name="value"/>, in place (integer tensors stay integer).</summary>
    public static Tensor AddInPlace(this Tensor a, long value) { using var s = value.ToScalar(); var r = a.add_(s, OneFor(a)); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> − <paramref name="value"/>.</summary>
    public static Tensor Sub(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.sub(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> − <paramref name="value"/> (integer tensors stay integer).</summary>
    public static Tensor Sub(this Tensor a, long value) { using var s = value.ToScalar(); var r = a.sub(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="value"/> − <paramref name="a"/>.</summary>
    public static Tensor RSub(this Tensor a, double value) { using var s = value.ToScalar(); using var negated = a.neg(); return negated.add(s, OneFor(a)); }

    /// <summary><paramref name="value"/> − <paramref name="a"/> (integer tensors stay integer).</summary>
    public static Tensor RSub(this Tensor a, long value) { using var s = value.ToScalar(); using var negated = a.neg(); return negated.add(s, OneFor(a)); }

    /// <summary><paramref name="a"/> · <paramref name="value"/>.</summary>
    public static Tensor Mul(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.mul(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> · <paramref name="value"/> (integer tensors stay integer).</summary>
    public static Tensor Mul(this Tensor a, long value) { using var s = value.ToScalar(); var r = a.mul(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> ·= <paramref name="value"/>, in place.</summary>
    public static Tensor MulInPlace(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.mul_(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> / <paramref name="value"/> (true division).</summary>
    public static Tensor Div(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.div(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> /= <paramref name="value"/>, in place.</summary>
    public static Tensor DivInPlace(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.div_(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="value"/> / <paramref name="a"/>, elementwise.</summary>
    public static Tensor RDiv(this Tensor a, double value)
    {
        using var s = value.ToScalar();
        using var numerator = full_like(a, s, dtype: is_floating_point(a) ? a.dtype : ScalarType.Float32);
        return numerator.div(a);
    }

    /// <summary><paramref name="a"/> raised to <paramref name="exponent"/>.</summary>
    public static Tensor Pow(this Tensor a, double exponent) { using var s = exponent.ToScalar(); var r = a.pow(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="value"/> raised to <paramref name="exponent"/>, elementwise.</summary>
    public static Tensor PowOf(double value, Tensor exponent)
    {
        // A 0-d float64 base: type promotion leaves the result in the exponent's dtype, as torch.pow(float, tensor) does.
        using var b = torch.tensor(value, device: exponent.device);
        return torch.pow(b, exponent);
    }

    // ---- comparisons with a number ----

    /// <summary><paramref name="a"/> &gt; <paramref name="value"/>.</summary>
    public static Tensor Gt(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.gt(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> ≥ <paramref name="value"/>.</summary>
    public static Tensor Ge(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.ge(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> &lt; <paramref name="value"/>.</summary>
    public static Tensor Lt(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.lt(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> ≤ <paramref name="value"/>.</summary>
    public static Tensor Le(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.le(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> = <paramref name="value"/>.</summary>
    public static Tensor Eq(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.eq(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> ≠ <paramref name="value"/>.</summary>
    public static Tensor Ne(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.ne(s); GC.KeepAlive(a); return r; }

    // ---- clamps and fills ----

    /// <summary><paramref name="a"/> clamped below at <paramref name="min"/>.</summary>
    public static Tensor ClampMin(this Tensor a, double min) { using var s = min.ToScalar(); var r = a.clamp_min(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> clamped below at <paramref name="min"/> (integer tensors stay integer).</summary>
    public static Tensor ClampMin(this Tensor a, long min) { using var s = min.ToScalar(); var r = a.clamp_min(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> clamped above at <paramref name="max"/>.</summary>
    public static Tensor ClampMax(this Tensor a, double max) { using var s = max.ToScalar(); var r = a.clamp_max(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> clamped above at <paramref name="max"/> (integer tensors stay integer).</summary>
    public static Tensor ClampMax(this Tensor a, long max) { using var s = max.ToScalar(); var r = a.clamp_max(s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> clamped to [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public static Tensor Clamp(this Tensor a, double min, double max)
    {
        using var lo = min.ToScalar(); using var hi = max.ToScalar();
        return a.clamp(lo, hi);
    }

    /// <summary><paramref name="a"/> with <paramref name="value"/> where <paramref name="mask"/> is true.</summary>
    public static Tensor MaskedFill(this Tensor a, Tensor mask, double value) { using var s = value.ToScalar(); var r = a.masked_fill(mask, s); GC.KeepAlive(a); return r; }

    /// <summary><paramref name="a"/> with <paramref name="value"/> where <paramref name="mask"/> is true (integer tensors stay integer).</summary>
    public static Tensor MaskedFill(this Tensor a, Tensor mask, long value) { using var s = value.ToScalar(); var r = a.masked_fill(mask, s); GC.KeepAlive(a); return r; }

    /// <summary>Sets <paramref name="a"/> to <paramref name="value"/> where <paramref name="mask"/> is true, in place.</summary>
    public static Tensor MaskedFillInPlace(this Tensor a, Tensor mask, double value) { using var s = value.ToScalar(); var r = a.masked_fill_(mask, s); GC.KeepAlive(a); return r; }

    /// <summary>Sets <paramref name="a"/> to <paramref name="value"/> where <paramref name="mask"/> is true, in place (integer tensors stay integer).</summary>
    public static Tensor MaskedFillInPlace(this Tensor a, Tensor mask, long value) { using var s = value.ToScalar(); var r = a.masked_fill_(mask, s); GC.KeepAlive(a); return r; }

    /// <summary>Sets every element of <paramref name="a"/> to <paramref name="value"/>, in place.</summary>
    public static Tensor FillInPlace(this Tensor a, double value) { using var s = value.ToScalar(); var r = a.fill_(s); GC.KeepAlive(a); return r; }

    /// <summary>Sets every element of <paramref name="a"/> to <paramref name="value"/>, in place (integer tensors stay integer).</summary>
    public static Tensor FillInPlace(this Tensor a, long value) { using var s = value.ToScalar(); var r = a.fill_(s); GC.KeepAlive(a); return r; }

    /// <summary>A tensor shaped like <paramref name="like"/> filled with <paramref name="value"/>.</summary>
    public static Tensor FullLike(Tensor like, double value, ScalarType? dtype = null)
    {
        using var s = value.ToScalar();
        return full_like(like, s, dtype: dtype);
    }

    // ---- factories ----

    /// <summary>A tensor of <paramref name="shape"/> filled with <paramref name="value"/> (float32 unless <paramref name="dtype"/>).</summary>
    public static Tensor Full(long[] shape, double value, ScalarType? dtype = null, Device? device = null)
    {
        using var s = value.ToScalar();
        return full(shape, s, dtype ?? ScalarType.Float32, device);
    }

    /// <summary>A tensor of <paramref name="shape"/> filled with the integer <paramref name="value"/> (int64 unless <paramref name="dtype"/>).</summary>
    public static Tensor FullInt(long[] shape, long value, ScalarType? dtype = null, Device? device = null)
    {
        using var s = value.ToScalar();
        return full(shape, s, dtype ?? ScalarType.Int64, device);
    }

    /// <summary>0, 1, …, <paramref name="stop"/> − 1 (int64 unless <paramref name="dtype"/>).</summary>
    public static Tensor Arange(long stop, ScalarType? dtype = null, Device? device = null) => Arange(0, stop, 1, dtype, device);

    /// <summary><paramref name="start"/>, <paramref name="start"/> + <paramref name="step"/>, … below <paramref name="stop"/> (int64 unless <paramref name="dtype"/>).</summary>
    public static Tensor Arange(long start, long stop, long step = 1, ScalarType? dtype = null, Device? device = null)
    {
        using var a = start.ToScalar(); using var b = stop.ToScalar(); using var c = step.ToScalar();
        return arange(a, b, c, dtype ?? ScalarType.Int64, device);
    }
}
