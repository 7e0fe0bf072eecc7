using Mechanist.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace Mechanist.Models;

/// <summary>
/// One forward pass whose graph is kept, so that many backward passes can inject gradients at its
/// output (or at any retained activation) and read the gradients reaching the retained activations.
/// This is what batched attribution needs: run the prompt once as a batch of copies, then inject a
/// different gradient into each copy per pass (TorchSharp has no tensor hooks; this uses
/// <c>torch.autograd.grad</c> with the graph retained). Dispose it to free the graph.
/// </summary>
public sealed class RetainedForward : IDisposable
{
    readonly Dictionary<string, Tensor> _retained;

    RetainedForward(Tensor output, Dictionary<string, Tensor> retained)
    {
        Output = output; _retained = retained;
    }

    /// <summary>The output of the forward (logits, or the residual stream when stopping early), with its graph.</summary>
    public Tensor Output { get; }

    /// <summary>Names of the retained activations.</summary>
    public IReadOnlyCollection<string> Names => _retained.Keys;

    /// <summary>A retained activation (part of the graph: do not modify it in place).</summary>
    public Tensor this[string name] => _retained.TryGetValue(name, out var t) ? t
        : throw new MechanistException($"'{name}' was not retained in this forward");

    /// <summary>
    /// Runs <paramref name="tokens"/> (repeated <paramref name="copies"/> times along the batch) with gradients,
    /// keeping the activations at <paramref name="retain"/> (hook names, checked) and the graph.
    /// </summary>
    public static RetainedForward Run(HookedTransformer model, Tensor tokens, IEnumerable<string> retain, int copies = 1, RunOptions? options = null)
    {
        options ??= new RunOptions();
        if (copies < 1) throw new MechanistException("copies must be at least 1");
        var names = retain.ToHashSet(StringComparer.Ordinal);
        var points = model.HookPointsFor(options);
        foreach (var n in names) points.Check(n);
        var retained = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        // The autograd graph holds its own references to what backward needs, so the intermediates' handles
        // can go with this scope; the output and the retained activations keep the graph alive.
        using var scope = NewDisposeScope();
        var input = copies == 1 ? tokens : tokens.repeat(copies, 1);
        var keep = new ForwardHookSpec(HookFilter.Where(names.Contains), (x, ctx) =>
        {
            // Kept past the blocks' dispose scopes; the same tensor can sit at two points (resid_post = next resid_pre).
            if (!retained.ContainsValue(x)) x.DetachFromDisposeScope();
            retained[ctx.Name] = x;
            return null;
        });
        Tensor output;
        using (enable_grad())
            output = model.Run(input, options with { EnableGrad = true, Hooks = options.Hooks.Append(keep).ToList() });
        foreach (var n in names)
            if (!retained.ContainsKey(n)) throw new MechanistException($"'{n}' did not fire in this run (is it past a stop layer?)");
        output.DetachFromDisposeScope();
        return new RetainedForward(output, retained);
    }

    /// <summary>
    /// One backward pass: injects <paramref name="gradient"/> at <paramref name="at"/> (the output, or a retained
    /// activation, of the same shape) and returns the gradients reaching <paramref name="wrt"/> (zeros where none
    /// flows). The graph stays for further passes. The caller owns the returned tensors.
    /// </summary>
    public Tensor[] Gradients(Tensor at, Tensor gradient, IReadOnlyList<string> wrt) => Gradients(new[] { (at, gradient) }, wrt);

    /// <summary>One backward pass injecting several gradients at once (their effects add, the system being linear in them).</summary>
    public Tensor[] Gradients(IReadOnlyList<(Tensor At, Tensor Gradient)> injections, IReadOnlyList<string> wrt)
    {
        foreach (var (at, gradient) in injections)
            if (!at.shape.SequenceEqual(gradient.shape))
                throw new MechanistException($"the injected gradient is [{string.Join(", ", gradient.shape)}]; the tensor is [{string.Join(", ", at.shape)}]");
        var inputs = wrt.Select(n => this[n]).ToList();
        // libtorch aborts the process (not an exception) on tensors outside the graph: keep those out and answer zeros.
        var live = inputs.Where(t => t.requires_grad).ToList();
        var outputs = injections.Where(i => i.At.requires_grad).ToList();
        var result = inputs.Select(t => zeros_like(t).DetachFromDisposeScope()).ToArray();
        if (live.Count == 0 || outputs.Count == 0) return result;
        using var grad = enable_grad();
        var grads = torch.autograd.grad(outputs.Select(i => i.At).ToList(), live, outputs.Select(i => i.Gradient.to(i.At.dtype, i.At.device)).ToList(),
            retain_graph: true, allow_unused: true);
        for (int i = 0, j = 0; i < inputs.Count; i++)
        {
            if (!inputs[i].requires_grad) continue;
            var g = grads[j++];
            if (g is not null && !g.IsInvalid) { result[i].Dispose(); result[i] = g.DetachFromDisposeScope(); }
        }
        return result;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in _retained.Values.Append(Output).Distinct(ReferenceEqualityComparer.Instance).Cast<Tensor>()) t.Dispose();
        _retained.Clear();
    }
}
