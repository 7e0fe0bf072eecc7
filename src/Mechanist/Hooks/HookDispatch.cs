using static TorchSharp.torch;

namespace Mechanist.Hooks;

/// <summary>
/// The one path by which a hook point fires in every model (decoder-only, encoder, encoder-decoder): the matching forward
/// hooks run in order, each replacement is checked to have the activation's shape and brought to its dtype and device.
/// </summary>
public static class HookDispatch
{
    /// <summary>Runs the <paramref name="hooks"/> that match <paramref name="name"/> on <paramref name="x"/> and returns the value the forward goes on with.</summary>
    public static Tensor Forward(IReadOnlyList<ForwardHookSpec> hooks, string name, int? layer, Tensor x)
    {
        var ctx = new HookContext(name, layer);
        foreach (var spec in hooks)
        {
            if (!spec.Filter.Matches(name)) continue;
            var replaced = spec.Hook(x, ctx);
            if (replaced is null) continue;
            if (!replaced.shape.SequenceEqual(x.shape))
                throw new MechanistException($"hook at '{name}' returned shape [{string.Join(", ", replaced.shape)}] for an activation of shape [{string.Join(", ", x.shape)}]");
            x = replaced.device == x.device && replaced.dtype == x.dtype ? replaced : replaced.to(x.dtype, x.device);
        }
        return x;
    }
}

/// <summary>
/// A model's hooks beyond a run's own: permanent ones (until reset, TransformerLens's permanent hooks) and scoped ones
/// (until their handle is disposed, visible only to runs in the same async flow, so concurrent callers never see each
/// other's). Every exact name is checked against the model's registry when added.
/// </summary>
public sealed class HookScopes(Func<HookRegistry> registry)
{
    readonly List<ForwardHookSpec> _permanent = new();
    readonly AsyncLocal<Scope?> _scoped = new();

    /// <summary>Adds a hook that stays until <see cref="Reset"/>.</summary>
    public void AddPermanent(HookFilter filter, ForwardHook hook)
    {
        if (filter.ExactName is { } n) registry().Check(n);
        lock (_permanent) _permanent.Add(new ForwardHookSpec(filter, hook));
    }

    /// <summary>Removes every permanent hook.</summary>
    public void Reset() { lock (_permanent) _permanent.Clear(); }

    /// <summary>Hooks active until the returned handle is disposed.</summary>
    public IDisposable Add(IReadOnlyList<ForwardHookSpec> hooks)
    {
        foreach (var h in hooks) if (h.Filter.ExactName is { } n) registry().Check(n);
        var scope = new Scope(hooks, _scoped.Value, this);
        _scoped.Value = scope;
        return scope;
    }

    /// <summary>The permanent hooks, then the scoped ones from the outermost scope in.</summary>
    public List<ForwardHookSpec> Active()
    {
        var all = new List<ForwardHookSpec>();
        lock (_permanent) all.AddRange(_permanent);
        var scopes = new Stack<Scope>();
        for (var s = _scoped.Value; s != null; s = s.Parent) scopes.Push(s);
        foreach (var s in scopes) all.AddRange(s.Hooks);
        return all;
    }

    sealed class Scope(IReadOnlyList<ForwardHookSpec> hooks, Scope? parent, HookScopes owner) : IDisposable
    {
        public IReadOnlyList<ForwardHookSpec> Hooks { get; } = hooks;
        public Scope? Parent { get; } = parent;
        public void Dispose() { if (owner._scoped.Value == this) owner._scoped.Value = Parent; }
    }
}
