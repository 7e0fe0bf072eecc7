namespace Mechanist.Features;

/// <summary>
/// What a feature page reads: our SQLite store (<see cref="FeatureStore"/>) or a transcoder repository's published features
/// (<see cref="PublishedFeatures"/>); the workbench and <c>features show</c> take either.
/// </summary>
public interface IFeatureStore
{
    /// <summary>Where the features come from and their shape.</summary>
    FeatureStoreInfo Info { get; }

    /// <summary>Parses "L:F" (L the model layer; a single-layer dictionary may leave it out), checked against the store.</summary>
    (int LayerIndex, int Feature) Resolve(string spec);

    /// <summary>Everything about one feature (model layer, feature index).</summary>
    FeatureDashboard Dashboard(int layer, int feature);

    /// <summary>Features matching a query (what a query can match depends on the store).</summary>
    List<FeatureHit> Search(string? query, int limit = 50, int? layer = null);

    /// <summary>The shown label of each (model layer, feature) that has one, keyed "L:F".</summary>
    Dictionary<string, string> LabelsOf(IReadOnlyList<(int Layer, int Feature)> features);

    /// <summary>Sets (or with null/empty clears) the user's label of a feature.</summary>
    void SetLabel(int layer, int feature, string? label);

    /// <summary>The automated interpretability scores stored for a feature (none for a store that holds none).</summary>
    FeatureScore[] Scores(int layer, int feature);
}

/// <summary>Opens whichever feature store a path holds.</summary>
public static class FeatureStores
{
    /// <summary>"L:F" or "L/F" as (model layer, feature); a single-layer store's feature alone ("F") means its layer. Unchecked.</summary>
    public static (int Layer, int Feature) ParseSpec(string spec, int[] layers)
    {
        var parts = spec.Split(new[] { ':', '/' }, StringSplitOptions.TrimEntries);
        if (parts.Length == 1 && layers.Length == 1 && int.TryParse(parts[0], out int only)) return (layers[0], only);
        if (parts.Length != 2 || !int.TryParse(parts[0], out int layer) || !int.TryParse(parts[1], out int feature))
            throw new MechanistException($"'{spec}' is not a feature; give LAYER:FEATURE, e.g. {layers[0]}:12");
        return (layer, feature);
    }

    /// <summary>
    /// A folder with <c>index.json.gz</c> (circuit-tracer's feature layout, as transcoder repositories publish it and as
    /// <c>features export</c> writes it) opens as <see cref="PublishedFeatures"/>; a build folder as its <c>features.db</c>; a file as a store.
    /// </summary>
    public static IFeatureStore Open(string path)
    {
        if (Directory.Exists(path))
        {
            if (File.Exists(Path.Combine(path, PublishedFeatures.IndexName))) return PublishedFeatures.Open(path);
            if (Directory.Exists(Path.Combine(path, "features")) && File.Exists(Path.Combine(path, "features", PublishedFeatures.IndexName)))
                return PublishedFeatures.Open(Path.Combine(path, "features"));
            return FeatureStore.Open(Path.Combine(path, FeatureBuild.MergedName));
        }
        return FeatureStore.Open(path);
    }
}
