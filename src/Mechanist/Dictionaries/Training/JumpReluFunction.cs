using Mechanist.Tensors;
using TorchSharp;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries.Training;

/// <summary>
/// JumpReLU with a straight-through estimator for its threshold (Rajamanoharan et al., 2024): the forward is
/// x·1[x &gt; θ]; the gradient to x is 1[x &gt; θ], and the threshold, whose true gradient is zero almost
/// everywhere, gets −(θ/ε)·K((x − θ)/ε) with the rectangle kernel K(u) = 1[|u| &lt; ½] and bandwidth ε.
/// </summary>
public sealed class JumpReluFunction : autograd.SingleTensorFunction<JumpReluFunction>
{
    /// <inheritdoc/>
    public override string Name => "MechanistJumpReLU";

    /// <summary>x·1[x &gt; θ] for pre-activations [..., *θ.shape] and thresholds θ (θ &gt; 0), broadcast over the leading dimensions.</summary>
    public static Tensor Apply(Tensor x, Tensor threshold, double bandwidth) => apply(x, threshold, bandwidth);

    /// <inheritdoc/>
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0]; var theta = (Tensor)vars[1];
        ctx.save_for_backward(new List<Tensor> { x, theta });
        ctx.save_data("bandwidth", vars[2]);
        return x * (x > theta).to(x.dtype);
    }

    /// <inheritdoc/>
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        var x = saved[0]; var theta = saved[1];
        double eps = (double)ctx.get_data("bandwidth");
        var gx = grad * (x > theta).to(grad.dtype);
        var window = (x - theta).abs().Lt(eps / 2).to(grad.dtype);
        var gTheta = (grad * window * (-theta).Div(eps)).reshape(-1, theta.numel()).sum(new long[] { 0 }).reshape(theta.shape);
        return new List<Tensor> { gx, gTheta, null! };
    }
}

/// <summary>The Heaviside step 1[x &gt; θ] with the same straight-through gradient to θ: −(1/ε)·K((x − θ)/ε) (an L0 count that trains θ).</summary>
public sealed class StepFunction : autograd.SingleTensorFunction<StepFunction>
{
    /// <inheritdoc/>
    public override string Name => "MechanistStep";

    /// <summary>1[x &gt; θ] for [..., f] and thresholds [f].</summary>
    public static Tensor Apply(Tensor x, Tensor threshold, double bandwidth) => apply(x, threshold, bandwidth);

    /// <inheritdoc/>
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0]; var theta = (Tensor)vars[1];
        ctx.save_for_backward(new List<Tensor> { x, theta });
        ctx.save_data("bandwidth", vars[2]);
        return (x > theta).to(x.dtype);
    }

    /// <inheritdoc/>
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad)
    {
        var saved = ctx.get_saved_variables();
        var x = saved[0]; var theta = saved[1];
        double eps = (double)ctx.get_data("bandwidth");
        var window = (x - theta).abs().Lt(eps / 2).to(grad.dtype);
        var gTheta = (grad * window).Mul(-1.0 / eps).reshape(-1, theta.numel()).sum(new long[] { 0 }).reshape(theta.shape);
        return new List<Tensor> { zeros_like(x), gTheta, null! };
    }
}
