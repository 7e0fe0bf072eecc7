using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;

namespace Mechanist.IO;

/// <summary>A checkpoint split across several safetensors files, described by model.safetensors.index.json.</summary>
public sealed class ShardedSafetensors : ITensorSource
{
    readonly Dictionary<string, SafetensorsFile> _byTensor = new();
    readonly List<SafetensorsFile> _shards = new();

    ShardedSafetensors() { }

    /// <summary>Opens every shard named by the index and checks that each listed tensor is where the index says.</summary>
    public static ShardedSafetensors Open(string indexPath)
    {
        JsonObject? weightMap;
        try { weightMap = JsonNode.Parse(File.ReadAllText(indexPath))?["weight_map"] as JsonObject; }
        catch (JsonException e) { throw new InvalidCheckpointException(indexPath, $"invalid JSON: {e.Message}"); }
        if (weightMap == null) throw new InvalidCheckpointException(indexPath, "no \"weight_map\" object");
        string dir = Path.GetDirectoryName(Path.GetFullPath(indexPath))!;
        var result = new ShardedSafetensors();
        try
        {
            var opened = new Dictionary<string, SafetensorsFile>();
            foreach (var (tensor, fileNode) in weightMap)
            {
                string file = fileNode?.GetValue<string>() ?? throw new InvalidCheckpointException(indexPath, $"tensor '{tensor}' has no file");
                if (file.Contains('/') || file.Contains('\\') || file.Contains(".."))
                    throw new InvalidCheckpointException(indexPath, $"shard name '{file}' must be a plain file name");
                if (!opened.TryGetValue(file, out var shard))
                {
                    string shardPath = Path.Combine(dir, file);
                    if (!File.Exists(shardPath)) throw new InvalidCheckpointException(indexPath, $"shard '{file}' (for tensor '{tensor}') is missing");
                    shard = SafetensorsFile.Open(shardPath);
                    opened[file] = shard;
                    result._shards.Add(shard);
                }
                if (!shard.Contains(tensor))
                    throw new InvalidCheckpointException(shard.Path, $"tensor '{tensor}' is listed in {Path.GetFileName(indexPath)} but not stored in this shard");
                result._byTensor[tensor] = shard;
            }
            return result;
        }
        catch { result.Dispose(); throw; }
    }

    /// <inheritdoc/>
    public IReadOnlyCollection<string> Names => _byTensor.Keys;

    /// <inheritdoc/>
    public bool Contains(string name) => _byTensor.ContainsKey(name);

    /// <inheritdoc/>
    public long[] ShapeOf(string name) => Shard(name).ShapeOf(name);

    /// <inheritdoc/>
    public torch.Tensor Read(string name) => Shard(name).Read(name);

    SafetensorsFile Shard(string name) =>
        _byTensor.TryGetValue(name, out var s) ? s : throw new MechanistException($"no tensor named '{name}' in the sharded checkpoint");

    /// <inheritdoc/>
    public void Dispose() { foreach (var s in _shards) s.Dispose(); }
}
