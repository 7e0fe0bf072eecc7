using System.Text;
using Mechanist.IO;
using Mechanist.Tests.Cli;
using static TorchSharp.torch;

namespace Mechanist.Tests.IO;

/// <summary>
/// Every class of broken checkpoint gets a specific message naming the file (and tensor) and exit
/// code 2 from the CLI, never a stack trace.
/// </summary>
public class BadCheckpointTests
{
    static byte[] Safetensors(string headerJson, int dataBytes)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        return BitConverter.GetBytes((ulong)header.Length).Concat(header).Concat(new byte[dataBytes]).ToArray();
    }

    /// <summary>A model folder with gpt2's golden config and the given weights file bytes.</summary>
    static TempDir FolderWith(byte[] weights, string? config = null)
    {
        var dir = new TempDir();
        File.WriteAllText(dir.File("config.json"), config ?? File.ReadAllText(SharedData.PathOf("golden", "models", "gpt2", "config.json")));
        File.WriteAllBytes(dir.File("model.safetensors"), weights);
        return dir;
    }

    static void ExpectError(TempDir dir, params string[] fragments)
    {
        var (code, _, err) = CliRunner.Run("run", "--model", dir.Path, "--tokens", "1,2,3");
        Assert.Equal(2, code);
        Assert.StartsWith("error: ", err);
        Assert.DoesNotContain("   at ", err);
        foreach (var f in fragments) Assert.Contains(f, err);
    }

    public static IEnumerable<object[]> HeaderCases() => new[]
    {
        new object[] { new byte[] { 1, 2, 3 }, "truncated" },
        new object[] { BitConverter.GetBytes(4000UL).Concat(new byte[100]).ToArray(), "header length 4000 runs past the end of the file" },
        new object[] { BitConverter.GetBytes(1UL << 40).Concat(new byte[100]).ToArray(), "absurdly large" },
        new object[] { Safetensors("{\"a\": [1, 2", 0), "invalid header JSON" },
        new object[] { Safetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12), "overlap" },
        new object[] { Safetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8), "tensor 'a': data_offsets [0, 16] are out of range" },
        new object[] { Safetensors("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8), "tensor 'a': byte count 8 does not match F32 x [3] = 12 bytes" },
        new object[] { Safetensors("{\"a\":{\"dtype\":\"F8_E9\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1), "tensor 'a': unknown dtype 'F8_E9'" },
    };

    [Theory]
    [MemberData(nameof(HeaderCases))]
    public void MalformedSafetensorsIsRejectedWithItsReason(byte[] bytes, string message)
    {
        using var dir = FolderWith(bytes);
        ExpectError(dir, "model.safetensors", message);
    }

    /// <summary>The golden gpt2 weights, re-written with one change.</summary>
    static TempDir GoldenGpt2With(Func<Dictionary<string, Tensor>, Dictionary<string, Tensor>> change)
    {
        using var st = SafetensorsFile.Open(SharedData.PathOf("golden", "models", "gpt2", "model.safetensors"));
        var tensors = change(st.Names.ToDictionary(n => n, n => st.Read(n)));
        var dir = new TempDir();
        File.Copy(SharedData.PathOf("golden", "models", "gpt2", "config.json"), dir.File("config.json"));
        SafetensorsWriter.Write(dir.File("model.safetensors"), tensors);
        return dir;
    }

    [Fact]
    public void MissingTensorIsNamed()
    {
        using var dir = GoldenGpt2With(t => { t.Remove("transformer.h.1.mlp.c_fc.bias"); return t; });
        ExpectError(dir, "missing tensor 'transformer.h.1.mlp.c_fc.bias'");
    }

    [Fact]
    public void UnexpectedTensorIsNamed()
    {
        using var dir = GoldenGpt2With(t => { t["transformer.h.7.extra.weight"] = zeros(3); return t; });
        ExpectError(dir, "unexpected tensor 'transformer.h.7.extra.weight'");
    }

    [Fact]
    public void ShapeContradictingConfigIsNamed()
    {
        using var dir = GoldenGpt2With(t => { t["transformer.h.0.ln_1.weight"] = ones(65); return t; });
        ExpectError(dir, "tensor 'transformer.h.0.ln_1.weight' has shape [65] but config.json implies [64]");
    }

    [Theory]
    [InlineData("{ not json", "malformed config: invalid JSON")]
    [InlineData("[1, 2]", "malformed config: the top level must be a JSON object")]
    [InlineData("{\"model_type\": \"gpt2\", \"n_embd\": \"wide\"}", "malformed config: 'n_embd' expected an integer")]
    [InlineData("{\"model_type\": \"gpt2\", \"n_embd\": 64}", "malformed config: required key 'n_head' is missing")]
    [InlineData("{\"model_type\": \"roberta\"}", "model_type 'roberta' is not supported")]
    [InlineData("{\"model_type\": \"t5\"}", "required key 'd_model' is missing")]
    public void MalformedConfigIsRejected(string config, string message)
    {
        using var dir = FolderWith(Safetensors("{}", 0), config);
        ExpectError(dir, "config.json", message);
    }

    [Fact]
    public void TruncatedLlama2cCheckpointIsRejected()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(SharedData.PathOf("models", "stories260K", "stories260K.bin"));
        File.WriteAllBytes(dir.File("model.bin"), bytes[..(bytes.Length / 2)]);
        var (code, _, err) = CliRunner.Run("run", "--model", dir.File("model.bin"), "--tokens", "1");
        Assert.Equal(2, code);
        Assert.Contains("model.bin: truncated: the header describes 1056540 bytes of fp32 weights but the file has 528270", err);
    }

    [Fact]
    public void BadArgumentsAndUnknownInputsExitTwo()
    {
        Assert.Equal(2, CliRunner.Run("run", "--model").Code);
        Assert.Equal(2, CliRunner.Run("frobnicate").Code);
        var (code, _, err) = CliRunner.Run("run", "--model", SharedData.PathOf("golden", "models", "gpt2"), "--tokens", "1,99999");
        Assert.Equal(2, code);
        Assert.Contains("token id 99999 is outside the vocabulary (0..511)", err);
        (code, _, err) = CliRunner.Run("run", "--model", SharedData.PathOf("golden", "models", "gpt2"), "--tokens", "1,x");
        Assert.Equal(2, code);
        Assert.Contains("'x' is not an integer token id", err);
    }
}
