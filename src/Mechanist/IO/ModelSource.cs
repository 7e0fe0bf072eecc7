using Mechanist.IO.Hub;
using Mechanist.IO.Llama2c;
using Mechanist.Tokenization;

namespace Mechanist.IO;

/// <summary>How <see cref="ModelSource.Open"/> finds a model.</summary>
public sealed record ModelOpenOptions
{
    /// <summary>Never use the network; only local folders and the hub cache.</summary>
    public bool Offline { get; init; } = Environment.GetEnvironmentVariable("HF_HUB_OFFLINE") is "1" or "true" or "TRUE";

    /// <summary>Hub revision (branch, tag or commit).</summary>
    public string Revision { get; init; } = "main";

    /// <summary>A tokenizer file to use instead of the model's own.</summary>
    public string? TokenizerPath { get; init; }

    /// <summary>Hub cache; null means the environment's.</summary>
    public HubCache? Cache { get; init; }

    /// <summary>Reports download progress when a model is fetched.</summary>
    public IProgress<DownloadProgress>? Progress { get; init; }
}

/// <summary>
/// A model on disk, resolved and opened: its config, its weights (memory-mapped) and its tokenizer.
/// <c>--model</c> may name a Hugging Face model folder, a llama2.c checkpoint file, or a hub
/// repository id found in (or downloaded into) the hub cache.
/// </summary>
public sealed class ModelSource : IDisposable
{
    ModelSource(string name, string location, ModelConfig config, ITensorSource weights, TextTokenizer? tokenizer)
    {
        Name = name; Location = location; Config = config; Weights = weights; Tokenizer = tokenizer;
    }

    /// <summary>The name the user gave.</summary>
    public string Name { get; }

    /// <summary>The resolved folder or file.</summary>
    public string Location { get; }

    /// <summary>The model's configuration (for llama2.c files, the equivalent HF config).</summary>
    public ModelConfig Config { get; }

    /// <summary>The weights under Hugging Face names.</summary>
    public ITensorSource Weights { get; }

    /// <summary>The tokenizer, or null when the model ships none.</summary>
    public TextTokenizer? Tokenizer { get; }

    /// <summary>Resolves and opens a model.</summary>
    public static ModelSource Open(string spec, ModelOpenOptions? options = null)
    {
        options ??= new ModelOpenOptions();
        if (string.IsNullOrWhiteSpace(spec)) throw new MechanistException("no model given");
        if (Directory.Exists(spec)) return OpenFolder(spec, spec, options);
        if (File.Exists(spec))
        {
            if (spec.EndsWith(".bin", StringComparison.OrdinalIgnoreCase)) return OpenLlama2c(spec, options);
            if (Path.GetFileName(spec) == "config.json") return OpenFolder(spec, Path.GetDirectoryName(Path.GetFullPath(spec))!, options);
            throw new MechanistException($"{spec}: not a model folder or a llama2.c .bin checkpoint");
        }
        if (!HubCache.IsRepoId(spec))
            throw new MechanistException($"model '{spec}' not found: it is not a folder, a file or a hub repository id");
        var cache = options.Cache ?? HubCache.FromEnvironment();
        string? snapshot = cache.SnapshotFolder(spec, options.Revision);
        if (snapshot == null || !File.Exists(Path.Combine(snapshot, "config.json")))
        {
            if (options.Offline)
                throw new MechanistException($"model '{spec}' is not in the hub cache ({cache.Root}) and --offline forbids downloading it");
            using var downloader = new HubDownloader(cache);
            snapshot = downloader.DownloadModelAsync(spec, options.Revision, options.Progress).GetAwaiter().GetResult();
        }
        return OpenFolder(spec, snapshot, options);
    }

    static ModelSource OpenFolder(string name, string dir, ModelOpenOptions options)
    {
        string configPath = Path.Combine(dir, "config.json");
        if (!File.Exists(configPath)) throw new MechanistException($"{dir}: no config.json: not a Hugging Face model folder");
        var config = ModelConfig.Load(configPath);
        ITensorSource weights;
        string index = Path.Combine(dir, "model.safetensors.index.json");
        string single = Path.Combine(dir, "model.safetensors");
        if (File.Exists(index)) weights = ShardedSafetensors.Open(index);
        else if (File.Exists(single)) weights = SafetensorsFile.Open(single);
        else if (File.Exists(Path.Combine(dir, "pytorch_model.bin")))
            throw new MechanistException($"{dir}: only pytorch_model.bin (pickle) is present; Mechanist reads safetensors (convert it with safetensors' convert script)");
        else throw new MechanistException($"{dir}: no model.safetensors or model.safetensors.index.json");
        try
        {
            var tokenizer = options.TokenizerPath != null ? TokenizerLoader.FromFile(options.TokenizerPath) : TokenizerLoader.FromModelFolder(dir);
            return new ModelSource(name, dir, config, weights, tokenizer);
        }
        catch { weights.Dispose(); throw; }
    }

    static ModelSource OpenLlama2c(string path, ModelOpenOptions options)
    {
        var checkpoint = Llama2cCheckpoint.Open(path);
        try
        {
            string? tokPath = options.TokenizerPath ?? FindLlama2cTokenizer(path);
            TextTokenizer? tokenizer = tokPath == null ? null
                : tokPath.EndsWith(".bin", StringComparison.OrdinalIgnoreCase) ? Llama2cTokenizer.Load(tokPath, checkpoint.Header.VocabSize)
                : TokenizerLoader.FromFile(tokPath);
            return new ModelSource(path, path, new ModelConfig(checkpoint.ToHfConfig(), path), checkpoint, tokenizer);
        }
        catch { checkpoint.Dispose(); throw; }
    }

    /// <summary>A llama2.c tokenizer beside the checkpoint: tokenizer.bin, or tok&lt;vocab&gt;.bin.</summary>
    static string? FindLlama2cTokenizer(string checkpoint)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(checkpoint))!;
        return new[] { "tokenizer.bin" }.Concat(Directory.GetFiles(dir, "tok*.bin").Select(Path.GetFileName).OfType<string>())
            .Select(f => Path.Combine(dir, f)).FirstOrDefault(f => File.Exists(f) && Path.GetFullPath(f) != Path.GetFullPath(checkpoint));
    }

    /// <inheritdoc/>
    public void Dispose() => Weights.Dispose();
}
