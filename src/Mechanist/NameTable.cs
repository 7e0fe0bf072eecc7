namespace Mechanist;

/// <summary>
/// The one spelling of each value of a vocabulary (a dictionary kind, an activation function, an input site), shared
/// by file formats, the CLI, the web API and records, so that they cannot disagree. Older or foreign spellings are
/// accepted as aliases when reading.
/// </summary>
/// <typeparam name="T">The values.</typeparam>
public sealed class NameTable<T> where T : struct, Enum
{
    readonly (T Value, string Name)[] _names;
    readonly Dictionary<string, T> _parse = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>A table of what each value is called, with what it describes (for errors).</summary>
    /// <param name="what">What a value is ("dictionary kind").</param>
    /// <param name="names">Each value's name.</param>
    /// <param name="aliases">Other spellings accepted when parsing.</param>
    public NameTable(string what, IEnumerable<(T Value, string Name)> names, IEnumerable<(string Alias, T Value)>? aliases = null)
    {
        What = what;
        _names = names.ToArray();
        foreach (var (v, n) in _names) _parse[n] = v;
        foreach (var (a, v) in aliases ?? Array.Empty<(string, T)>()) _parse.TryAdd(a, v);
    }

    /// <summary>What a value is, for messages.</summary>
    public string What { get; }

    /// <summary>Every name, in the table's order.</summary>
    public string[] Names => _names.Select(n => n.Name).ToArray();

    /// <summary>The name of <paramref name="value"/>.</summary>
    public string Name(T value) => _names.FirstOrDefault(n => EqualityComparer<T>.Default.Equals(n.Value, value)).Name
        ?? throw new ArgumentOutOfRangeException(nameof(value), $"{value} has no {What} name");

    /// <summary>The value named <paramref name="name"/> (or an alias); a clear error listing the names otherwise.</summary>
    public T Parse(string name) => TryParse(name, out var v) ? v
        : throw new MechanistException($"unknown {What} '{name}' (use {string.Join(", ", Names)})");

    /// <summary>Whether <paramref name="name"/> (or an alias) names a value.</summary>
    public bool TryParse(string? name, out T value) => _parse.TryGetValue(name ?? "", out value);
}
