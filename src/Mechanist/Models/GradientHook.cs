using Mechanist.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace Mechanist.Models;

/// <summary>
/// An identity autograd function whose backward passes the incoming gradient through a
/// <see cref="BackwardHook"/>: TorchSharp has no tensor backward hooks, so this stands in for them.
/// </summary>
internal sealed class GradientHook : autograd.SingleTensorFunction<GradientHook>
{
    public override string Name => "MechanistGradientHook";

    public static Tensor Apply(Tensor x, BackwardHook hook, HookContext ctx) => apply(x, hook, ctx);

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        ctx.save_data("hook", vars[1]);
        ctx.save_data("ctx", vars[2]);
        return ((Tensor)vars[0]).alias();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var hook = (BackwardHook)ctx.get_data("hook");
        var hookCtx = (HookContext)ctx.get_data("ctx");
        var replaced = hook(gradOutput, hookCtx);
        // One gradient per forward argument; the hook and its context get none.
        return new List<Tensor> { replaced ?? gradOutput, null!, null! };
    }
}
