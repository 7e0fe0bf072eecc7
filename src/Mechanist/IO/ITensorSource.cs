using TorchSharp;

namespace Mechanist.IO;

/// <summary>A named collection of tensors on disk (one safetensors file, a sharded set, a llama2.c file).</summary>
public interface ITensorSource : IDisposable
{
    /// <summary>Every tensor name.</summary>
    IReadOnlyCollection<string> Names { get; }

    /// <summary>Whether a tensor of that name exists.</summary>
    bool Contains(string name);

    /// <summary>Shape of a tensor, without reading it.</summary>
    long[] ShapeOf(string name);

    /// <summary>Reads one tensor into a new CPU tensor of its stored dtype.</summary>
    torch.Tensor Read(string name);
}
