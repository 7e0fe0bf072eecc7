using System.Text;
using System.Text.Json;
using Mechanist.IO;
using static TorchSharp.torch;

namespace Mechanist.Tests.IO;

public class SafetensorsTests
{
    [Fact]
    public void WriterMatchesTheReferenceLayoutByteForByte()
    {
        // The upstream safetensors test suite's serialisation of {"test": zeros((2, 2), int32)}:
        // 8-byte little-endian header length, the JSON header padded with spaces to 8 bytes, the data.
        using var dir = new TempDir();
        SafetensorsWriter.Write(dir.File("t.safetensors"), new Dictionary<string, Tensor> { ["test"] = zeros(new long[] { 2, 2 }, ScalarType.Int32) });
        string json = "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
        var header = Encoding.ASCII.GetBytes(json.PadRight((json.Length + 7) / 8 * 8));
        var expected = BitConverter.GetBytes((ulong)header.Length).Concat(header).Concat(new byte[16]).ToArray();
        Assert.Equal(expected, File.ReadAllBytes(dir.File("t.safetensors")));
    }

    [Fact]
    public void EveryDtypeRoundTripsWithMetadata()
    {
        using var dir = new TempDir();
        var tensors = new Dictionary<string, Tensor>
        {
            ["f64"] = tensor(new[] { 1.5, -2.25 }), ["f32"] = tensor(new[] { 3.5f }), ["f16"] = tensor(new[] { 0.5f }).to(ScalarType.Float16),
            ["bf16"] = tensor(new[] { -1.0f, 2.0f }).to(ScalarType.BFloat16), ["i64"] = tensor(new[] { long.MaxValue }),
            ["i32"] = tensor(new[] { -7 }), ["i16"] = tensor(new short[] { 300 }), ["i8"] = tensor(new sbyte[] { -3 }),
            ["u8"] = tensor(new byte[] { 250 }), ["bool"] = tensor(new[] { true, false }), ["empty"] = zeros(0, 3),
        };
        SafetensorsWriter.Write(dir.File("all.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        using var st = SafetensorsFile.Open(dir.File("all.safetensors"));
        Assert.Equal("pt", st.Metadata["format"]);
        foreach (var (name, t) in tensors)
        {
            using var back = st.Read(name);
            Assert.Equal(t.dtype, back.dtype);
            Assert.Equal(t.shape, back.shape);
            Assert.True(t.eq(back).all().item<bool>(), name);
        }
        // Tensors are laid out largest element size first, without gaps.
        var infos = st.Tensors.OrderBy(i => i.Begin).ToList();
        Assert.Equal(0, infos[0].Begin);
        for (int i = 1; i < infos.Count; i++) Assert.Equal(infos[i - 1].End, infos[i].Begin);
        Assert.True(infos.Select(i => i.DType.Size()).SequenceEqual(infos.Select(i => i.DType.Size()).OrderByDescending(s => s)));
    }

    [Fact]
    public void ReadsGoldenTensorsAsNumpyDid()
    {
        using var st = SafetensorsFile.Open(SharedData.PathOf("golden", "models", "llama", "reference.safetensors"));
        using var ids = st.Read("input_ids");
        Assert.Equal(new long[] { 2, 16 }, ids.shape);
        using var mask = st.Read("attention_mask_padded");
        Assert.Equal(new long[] { 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 }, mask[1].data<long>().ToArray());
    }

    [Fact]
    public void TensorsAtOffsetsThatAreNoMultipleOfTheirSizeRead()
    {
        // Python's safetensors writes such files (an I64 after 3 bytes of U8): the golden attribution references do.
        using var reference = SafetensorsFile.Open(SharedData.PathOf("golden", "attribution", "gpt2_plt_relu", "reference.safetensors"));
        Assert.NotEqual(0, reference.Info("logit_ids").Begin % 8);
        using var ids = reference.Read("logit_ids");
        using var logits = reference.Read("logits");
        // logit_ids are the top logits of the last position, in descending order.
        using var top = logits[-1].topk(10).indexes;
        Assert.Equal(top.data<long>().ToArray(), ids.data<long>().ToArray());
    }

    [Fact]
    public void FailedWriteLeavesTheOldFileIntact()
    {
        using var dir = new TempDir();
        string path = dir.File("keep.safetensors");
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["a"] = ones(2) });
        var before = File.ReadAllBytes(path);
        Assert.Throws<MechanistException>(() => SafetensorsWriter.Write(path,
            new[] { KeyValuePair.Create("a", ones(2)), KeyValuePair.Create("a", ones(3)) }));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void ShardedCheckpointsOpenThroughTheirIndex()
    {
        using var dir = new TempDir();
        SafetensorsWriter.Write(dir.File("model-00001-of-00002.safetensors"), new Dictionary<string, Tensor> { ["a"] = ones(2) });
        SafetensorsWriter.Write(dir.File("model-00002-of-00002.safetensors"), new Dictionary<string, Tensor> { ["b"] = zeros(3) });
        File.WriteAllText(dir.File("model.safetensors.index.json"), JsonSerializer.Serialize(new
        {
            metadata = new { total_size = 20 },
            weight_map = new Dictionary<string, string> { ["a"] = "model-00001-of-00002.safetensors", ["b"] = "model-00002-of-00002.safetensors" },
        }));
        using var sharded = ShardedSafetensors.Open(dir.File("model.safetensors.index.json"));
        Assert.Equal(new[] { "a", "b" }, sharded.Names.OrderBy(n => n));
        Assert.Equal(new long[] { 3 }, sharded.ShapeOf("b"));
        File.Delete(dir.File("model-00002-of-00002.safetensors"));
        var e = Assert.Throws<InvalidCheckpointException>(() => ShardedSafetensors.Open(dir.File("model.safetensors.index.json")));
        Assert.Contains("shard 'model-00002-of-00002.safetensors' (for tensor 'b') is missing", e.Message);
    }
}
