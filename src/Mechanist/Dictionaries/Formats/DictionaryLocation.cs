using Mechanist.IO.Hub;

namespace Mechanist.Dictionaries.Formats;

/// <summary>Where to find a dictionary that is not a local folder.</summary>
/// <param name="Offline">Only the hub cache; never download.</param>
/// <param name="Cache">The hub cache (default: HF_HUB_CACHE / HF_HOME, as for models).</param>
/// <param name="Endpoint">The hub (default: HF_ENDPOINT, else huggingface.co).</param>
/// <param name="Progress">Download progress.</param>
public sealed record DictionaryOpenOptions(bool Offline = false, HubCache? Cache = null, string? Endpoint = null, IProgress<DownloadProgress>? Progress = null);

/// <summary>
/// Dictionaries from the hub as models are: <c>org/name[@revision]</c> is looked up in the Hugging Face cache and downloaded when
/// missing. A circuit-tracer repository gives its config.yaml and, by its model_kind, every <c>layer_{i}.safetensors</c> or every
/// <c>W_enc_{i}</c> / <c>W_dec_{i}</c> pair (a repository lists no files, so layers are fetched until the next is absent); an
/// SAELens repository its cfg.json and sae_weights.safetensors.
/// </summary>
public static class DictionaryLocation
{
    /// <summary>The local folder of <paramref name="spec"/>: the folder itself, or the hub repository's cached (or downloaded) snapshot.</summary>
    public static string Resolve(string spec, DictionaryOpenOptions? options = null)
    {
        options ??= new DictionaryOpenOptions();
        if (string.IsNullOrWhiteSpace(spec)) throw new MechanistException("no dictionary given");
        if (Directory.Exists(spec)) return spec;
        string repo = spec, revision = "main";
        if (spec.IndexOf('@') is var at && at > 0) (repo, revision) = (spec[..at], spec[(at + 1)..]);
        if (!HubCache.IsRepoId(repo) || revision.Length == 0)
            throw new MechanistException($"dictionary '{spec}' not found: not a folder here, and not a hub repository id (org/name[@revision])");
        var cache = options.Cache ?? HubCache.FromEnvironment();
        if (cache.SnapshotFolder(repo, revision) is { } cached && Complete(cached)) return cached;
        if (options.Offline)
            throw new MechanistException($"dictionary '{spec}' is not in the hub cache ({cache.Root}) and offline mode forbids downloading it");
        using var hub = new HubDownloader(cache, options.Endpoint);
        return Download(hub, repo, revision, options.Progress).GetAwaiter().GetResult();
    }

    /// <summary>Whether a snapshot holds a whole dictionary (its config and the first layer's weights).</summary>
    static bool Complete(string dir) =>
        CircuitTracerFormat.IsFolder(dir) && (File.Exists(Path.Combine(dir, "layer_0.safetensors")) || File.Exists(Path.Combine(dir, "W_dec_0.safetensors")))
        || SaeLensFormat.IsFolder(dir);

    static async Task<string> Download(HubDownloader hub, string repo, string revision, IProgress<DownloadProgress>? progress)
    {
        if (await hub.DownloadFileAsync(repo, revision, "config.yaml", required: false, progress) is { } config)
        {
            string dir = Path.GetDirectoryName(config)!;
            string kind = File.ReadLines(config).Select(l => l.Split(':', 2)).Where(p => p.Length == 2 && p[0].Trim() == "model_kind")
                .Select(p => p[1].Trim().Trim('"', '\'')).FirstOrDefault() ?? "";
            if (kind == "cross_layer_transcoder")
            {
                for (int i = 0; await hub.DownloadFileAsync(repo, revision, $"W_enc_{i}.safetensors", required: i == 0, progress) is not null; i++)
                    await hub.DownloadFileAsync(repo, revision, $"W_dec_{i}.safetensors", required: true, progress);
            }
            else if (kind == "transcoder_set")
            {
                for (int i = 0; await hub.DownloadFileAsync(repo, revision, $"layer_{i}.safetensors", required: i == 0, progress) is not null; i++) { }
            }
            else throw new MechanistException($"{repo}: config.yaml has model_kind '{kind}' (supported: transcoder_set, cross_layer_transcoder)");
            return dir;
        }
        if (await hub.DownloadFileAsync(repo, revision, "cfg.json", required: false, progress) is { } cfg)
        {
            await hub.DownloadFileAsync(repo, revision, "sae_weights.safetensors", required: true, progress);
            return Path.GetDirectoryName(cfg)!;
        }
        throw new MechanistException($"{repo}: neither a circuit-tracer transcoder repository (config.yaml) nor an SAELens one (cfg.json)");
    }
}
