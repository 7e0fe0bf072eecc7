using System.Runtime.Intrinsics;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Training;

/// <summary>
/// AdamW's update of one float32 CPU parameter as one pass over its four tensors (parameter, gradient, two moments): libtorch's
/// per-op form reads and writes each of them several times (the moments' decay and accumulation, the denominator's square root and
/// shift, the division), a memory-bound cost per step comparable to a small GEMM's.
/// </summary>
static class FusedAdamW
{
    /// <summary>Whether the pass applies: every tensor float32, contiguous, on the CPU and of one size.</summary>
    public static bool Applies(Tensor p, Tensor g, Tensor m, Tensor v)
    {
        foreach (var t in new[] { p, g, m, v })
            if (t.device_type != TorchSharp.DeviceType.CPU || t.dtype != ScalarType.Float32 || !t.is_contiguous() || t.numel() != p.numel()) return false;
        return true;
    }

    /// <summary>
    /// g' = scale·g; m ← β₁m + (1 − β₁)g'; v ← β₂v + (1 − β₂)g'²; p ← decay·p − step·m / (√v + ε), element by element, in place.
    /// </summary>
    public static unsafe void Update(Tensor p, Tensor g, Tensor m, Tensor v, float scale, float beta1, float beta2, float decay, float step, float eps)
    {
        long n = p.numel();
        float* pp = (float*)TensorMemory.DataPointer(p), gp = (float*)TensorMemory.DataPointer(g), mp = (float*)TensorMemory.DataPointer(m), vp = (float*)TensorMemory.DataPointer(v);
        float a1 = 1 - beta1, a2 = 1 - beta2;
        const long Chunk = 1 << 16;
        long chunks = (n + Chunk - 1) / Chunk;
        int threads = (int)Math.Clamp(chunks, 1, Math.Max(1, get_num_threads()));
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, c =>
        {
            long start = c * Chunk, end = Math.Min(n, start + Chunk), j = start;
            if (Vector256.IsHardwareAccelerated)
            {
                Vector256<float> vs = Vector256.Create(scale), vb1 = Vector256.Create(beta1), va1 = Vector256.Create(a1), vb2 = Vector256.Create(beta2),
                    va2 = Vector256.Create(a2), vd = Vector256.Create(decay), vstep = Vector256.Create(step), veps = Vector256.Create(eps);
                for (; j + 8 <= end; j += 8)
                {
                    var gg = Vector256.Load(gp + j) * vs;
                    var mm = vb1 * Vector256.Load(mp + j) + va1 * gg;
                    var vv = vb2 * Vector256.Load(vp + j) + va2 * (gg * gg);
                    mm.Store(mp + j); vv.Store(vp + j);
                    (vd * Vector256.Load(pp + j) - vstep * mm / (Vector256.Sqrt(vv) + veps)).Store(pp + j);
                }
            }
            for (; j < end; j++)
            {
                float gg = gp[j] * scale;
                float mm = beta1 * mp[j] + a1 * gg, vv = beta2 * vp[j] + a2 * gg * gg;
                mp[j] = mm; vp[j] = vv;
                pp[j] = decay * pp[j] - step * mm / (MathF.Sqrt(vv) + eps);
            }
        });
        GC.KeepAlive(p); GC.KeepAlive(g); GC.KeepAlive(m); GC.KeepAlive(v);
    }
}
