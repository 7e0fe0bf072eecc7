using Mechanist.Hooks;
using Mechanist.IO;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Models;

/// <summary>Reduced-precision runs.</summary>
public class DTypeTests
{
    [Fact]
    public void BFloat16RunsCloseToFloat32()
    {
        string dir = SharedData.PathOf("golden", "models", "llama");
        using var reference = SafetensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        using var model = HookedTransformer.Load(dir, new LoadOptions { DType = ScalarType.BFloat16 });
        using var scope = NewDisposeScope();
        var logits = model.Run(reference.Read("input_ids"));
        Assert.Equal(ScalarType.BFloat16, logits.dtype);
        TensorAssert.Close(reference.Read("logits"), logits.to(ScalarType.Float32), 0.25, "bf16 logits (bf16 has ~3 significant digits)");
    }

}
