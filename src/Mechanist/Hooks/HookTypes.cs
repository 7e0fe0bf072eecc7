using static TorchSharp.torch;

namespace Mechanist.Hooks;

/// <summary>Where a hook is running.</summary>
/// <param name="Name">Hook point name.</param>
/// <param name="Layer">Block index, or null for model-level hook points.</param>
public readonly record struct HookContext(string Name, int? Layer);

/// <summary>
/// A forward hook: receives the activation at a hook point and returns a replacement of the same
/// shape, or null to leave it unchanged. The activation must not be disposed by the hook.
/// </summary>
public delegate Tensor? ForwardHook(Tensor activation, HookContext context);

/// <summary>
/// A backward hook: receives the gradient flowing back into a hook point's activation and returns a
/// replacement gradient, or null to leave it unchanged.
/// </summary>
public delegate Tensor? BackwardHook(Tensor gradient, HookContext context);

/// <summary>Which hook points a hook attaches to: an exact name or a predicate.</summary>
public sealed class HookFilter
{
    readonly string? _name;
    readonly Func<string, bool>? _predicate;

    HookFilter(string? name, Func<string, bool>? predicate) { _name = name; _predicate = predicate; }

    /// <summary>One hook point by name.</summary>
    public static HookFilter Named(string name) => new(name, null);

    /// <summary>Every hook point whose name satisfies <paramref name="predicate"/>.</summary>
    public static HookFilter Where(Func<string, bool> predicate) => new(null, predicate);

    /// <summary>The exact name, when this filter names one hook point.</summary>
    public string? ExactName => _name;

    /// <summary>Whether the filter selects <paramref name="name"/>.</summary>
    public bool Matches(string name) => _name != null ? _name == name : _predicate!(name);

    /// <summary>A name converts to an exact filter.</summary>
    public static implicit operator HookFilter(string name) => Named(name);
}

/// <summary>A forward hook and where it attaches.</summary>
/// <param name="Filter">Hook points.</param>
/// <param name="Hook">The hook.</param>
public sealed record ForwardHookSpec(HookFilter Filter, ForwardHook Hook);

/// <summary>A backward hook and where it attaches.</summary>
/// <param name="Filter">Hook points.</param>
/// <param name="Hook">The hook.</param>
public sealed record BackwardHookSpec(HookFilter Filter, BackwardHook Hook);
