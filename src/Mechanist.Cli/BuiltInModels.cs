using Mechanist.Toy;

namespace Mechanist.Cli;

/// <summary>Where the shipped toy models are: models/NAME beside the repository's solution (or beside the CLI when installed).</summary>
public static class BuiltInModels
{
    /// <summary>The folder of a built-in model, or null when it cannot be found.</summary>
    public static string? Find(string name)
    {
        var env = Environment.GetEnvironmentVariable("MECHANIST_MODELS");
        var roots = new List<string>();
        if (!string.IsNullOrEmpty(env)) roots.Add(env);
        roots.Add(Path.Combine(AppContext.BaseDirectory, "models"));
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            roots.Add(Path.Combine(dir.FullName, "models"));
        return roots.Select(r => Path.Combine(r, name)).FirstOrDefault(d => File.Exists(Path.Combine(d, "config.json")));
    }

    /// <summary>The default model's folder; a clear error when it is missing.</summary>
    public static string DefaultPath() => Find(ToyPresets.DefaultName)
        ?? throw new MechanistException($"the built-in model '{ToyPresets.DefaultName}' was not found (looked for models/{ToyPresets.DefaultName}); pass --model");

    /// <summary>
    /// For a --model value that failed to load and is neither a path on disk nor a built-in name: what to say first
    /// (the built-in names, the closest one, and that a hub id needs the hub or its cache). Null for paths.
    /// </summary>
    public static string? Unknown(string spec)
    {
        if (File.Exists(spec) || Directory.Exists(spec) || spec.Contains(Path.DirectorySeparatorChar) && !IsHubId(spec)) return null;
        if (Find(spec) is not null) return null;
        var names = ToyPresets.All.Select(p => p.Name).ToList();
        string? closest = names.OrderBy(n => Mechanist.Hooks.HookRegistry.Levenshtein(n, spec)).FirstOrDefault(n => Mechanist.Hooks.HookRegistry.Levenshtein(n, spec) <= 2);
        return $"--model '{(spec.Length > 80 ? spec[..80] + "…" : spec)}' is not a built-in model ({string.Join(", ", names)}){(closest is null ? "" : $"; did you mean {closest}?")}, "
            + "not a file or folder here, and not found as a hub id";
    }

    static bool IsHubId(string spec) => spec.Count(c => c == '/') == 1 && !spec.StartsWith('/') && !spec.StartsWith('.');

    /// <summary>The dictionary a built-in model ships (its CLT, in models/NAME/clt), or null for any other model.</summary>
    public static string? Transcoders(string? modelSpec) =>
        Find(modelSpec ?? ToyPresets.DefaultName) is { } dir && Directory.Exists(Path.Combine(dir, ShippedDictionary))
            ? Path.Combine(dir, ShippedDictionary) : null;

    /// <summary>The shipped dictionary of a built-in model, or a clear error saying to give one.</summary>
    public static string RequireTranscoders(string? modelSpec) =>
        Transcoders(modelSpec) ?? throw new MechanistException("give --transcoders DIR (only built-in models ship transcoders)");

    const string ShippedDictionary = "clt";

    /// <summary>A --model value: a built-in model's name resolves to its folder.</summary>
    public static string Resolve(string? spec) => spec == null ? DefaultPath() : Find(spec) ?? spec;
}
