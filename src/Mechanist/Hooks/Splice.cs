using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Hooks;

/// <summary>Fires a hook point inside a run (user hooks, backward hooks and the cache see it as any other point).</summary>
public delegate Tensor FireHook(string name, Tensor value);

/// <summary>What a spliced module sees where a block's MLP would run.</summary>
/// <param name="Layer">Block index.</param>
/// <param name="Resid">The residual stream the MLP reads (resid_mid, or resid_pre with a parallel residual).</param>
/// <param name="Normalized">ln2's normalised input before its weight (ln2.hook_normalized).</param>
/// <param name="Input">The MLP's input (after ln2's weight and bias).</param>
/// <param name="Past">Positions already run before this one's first (a KV-cache run continues at this absolute position).</param>
public sealed record MlpSite(int Layer, Tensor Resid, Tensor Normalized, Tensor Input, int Past = 0);

/// <summary>
/// Something spliced into a run: a sparse dictionary at a hook point, or transcoders in place of the
/// MLPs. It declares the hook points it adds, and starts a fresh state for each run (so concurrent runs
/// never share one).
/// </summary>
public interface ISplice
{
    /// <summary>The points it adds, each beneath an existing point: (parent, suffix, shape).</summary>
    IEnumerable<(string Parent, string Suffix, HookShape Shape)> AddedPoints(HookRegistry registry);

    /// <summary>State for one run of <paramref name="model"/>.</summary>
    ISpliceRun Start(HookedTransformer model);
}

/// <summary>One run's view of a splice; disposed when the run's forward ends.</summary>
public interface ISpliceRun : IDisposable
{
    /// <summary>Replaces the value at a hook point (after the run's forward hooks there), or returns null to leave it.</summary>
    Tensor? AtHook(string name, Tensor value, FireHook fire);

    /// <summary>
    /// Replaces the MLP of <paramref name="site"/>'s block (and Gemma-2's post-MLP norm: the value becomes
    /// hook_mlp_out), or returns null to leave it. <paramref name="mlp"/> computes the true output.
    /// </summary>
    Tensor? ReplaceMlp(MlpSite site, Func<Tensor> mlp, FireHook fire);
}
