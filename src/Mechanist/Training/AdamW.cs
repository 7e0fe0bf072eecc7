using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Training;

/// <summary>
/// AdamW over plain tensors (the model's weights are not nn.Parameters): decoupled weight decay on
/// matrices, bias-corrected moments, optional global-norm gradient clipping.
/// </summary>
public sealed class AdamW : IDisposable
{
    readonly List<Tensor> _parameters;
    readonly List<Tensor> _m, _v;

    /// <summary>Creates the optimizer; the parameters are marked as requiring grad.</summary>
    public AdamW(IEnumerable<Tensor> parameters, double beta1 = 0.9, double beta2 = 0.95, double eps = 1e-8)
    {
        _parameters = parameters.ToList();
        foreach (var p in _parameters) p.requires_grad_(true);
        _m = _parameters.Select(p => zeros_like(p).DetachFromDisposeScope()).ToList();
        _v = _parameters.Select(p => zeros_like(p).DetachFromDisposeScope()).ToList();
        Beta1 = beta1; Beta2 = beta2; Eps = eps;
    }

    /// <summary>First-moment decay.</summary>
    public double Beta1 { get; }
    /// <summary>Second-moment decay.</summary>
    public double Beta2 { get; }
    /// <summary>Denominator epsilon.</summary>
    public double Eps { get; }
    /// <summary>Steps taken.</summary>
    public int StepCount { get; set; }
    /// <summary>The optimised tensors.</summary>
    public IReadOnlyList<Tensor> Parameters => _parameters;
    /// <summary>First moments.</summary>
    public IReadOnlyList<Tensor> FirstMoments => _m;
    /// <summary>Second moments.</summary>
    public IReadOnlyList<Tensor> SecondMoments => _v;

    /// <summary>Clears the gradients: drops them, so the next backward writes fresh ones (no zero fill, no accumulation pass).</summary>
    public void ZeroGrad()
    {
        foreach (var p in _parameters)
            if (p.grad is { } g) { p.grad = null; g.Dispose(); }
    }

    /// <summary>One update; returns the gradient norm before clipping.</summary>
    public double Step(double lr, double weightDecay = 0, double clip = double.PositiveInfinity)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var grads = _parameters.Select(p => p.grad).ToList();
        // One pass per gradient for the norm (no squared copies), read once.
        var present = grads.Where(g => g is not null).Select(g => g!.norm()).ToArray();
        double norm = present.Length == 0 ? 0 : stack(present.Select(n => n.to(ScalarType.Float64)).ToArray()).norm().item<double>();
        double scale = norm > clip ? clip / (norm + 1e-6) : 1.0;
        StepCount++;
        double bias1 = 1 - Math.Pow(Beta1, StepCount), bias2 = 1 - Math.Pow(Beta2, StepCount);
        for (int i = 0; i < _parameters.Count; i++)
        {
            if (grads[i] is not { } g) continue;
            var p = _parameters[i];
            // The clip's scale folds into the moments' coefficients; m̂ / (√v̂ + ε) = (√b₂ / b₁) · m / (√v + ε√b₂) moves the bias
            // corrections into the step size and ε.
            double decay = p.dim() >= 2 && weightDecay > 0 ? 1 - lr * weightDecay : 1, stepSize = lr * Math.Sqrt(bias2) / bias1, eps = Eps * Math.Sqrt(bias2);
            if (FusedAdamW.Applies(p, g, _m[i], _v[i]))
            {
                FusedAdamW.Update(p, g, _m[i], _v[i], (float)scale, (float)Beta1, (float)Beta2, (float)decay, (float)stepSize, (float)eps);
                continue;
            }
            _m[i].MulInPlace(Beta1).AddScaledInPlace(g, (1 - Beta1) * scale);
            _v[i].MulInPlace(Beta2).AddcmulInPlace(g, g, (1 - Beta2) * scale * scale);
            if (decay != 1) p.MulInPlace(decay);
            var denominator = _v[i].sqrt().AddInPlace(eps);
            p.AddcdivInPlace(_m[i], denominator, -stepSize);
        }
        return norm;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var p in _parameters) { p.requires_grad_(false); p.grad?.Dispose(); }
        foreach (var t in _m.Concat(_v)) t.Dispose();
    }
}
