using System.IO.Compression;
using System.Text;
using Mechanist.Dictionaries.Formats;
using static TorchSharp.torch;

namespace Mechanist.Tests.Dictionaries;

/// <summary>Gemma Scope's params.npz, written here byte by byte from the .npy format's specification.</summary>
public class GemmaScopeFormatTests
{
    /// <summary>A version-1 .npy file: magic, version, header length, a Python dict literal padded to 64 bytes, then the data.</summary>
    static byte[] Npy(float[] values, long[] shape, bool fortran = false)
    {
        string dict = $"{{'descr': '<f4', 'fortran_order': {(fortran ? "True" : "False")}, 'shape': ({string.Join(", ", shape)}{(shape.Length == 1 ? "," : "")}), }}";
        int total = 10 + dict.Length + 1;
        string header = dict + new string(' ', (64 - total % 64) % 64) + "\n";
        var bytes = new List<byte> { 0x93 };
        bytes.AddRange(Encoding.ASCII.GetBytes("NUMPY"));
        bytes.AddRange(new byte[] { 1, 0 });
        bytes.AddRange(BitConverter.GetBytes((ushort)header.Length));
        bytes.AddRange(Encoding.ASCII.GetBytes(header));
        foreach (var v in values) bytes.AddRange(BitConverter.GetBytes(v));
        return bytes.ToArray();
    }

    [Fact]
    public void ParamsNpzLoadsAsAJumpReluSae()
    {
        using var dir = new TempDir();
        // d_model 2, d_sae 3. W_enc [2, 3] row-major; W_dec [3, 2] stored in Fortran (column-major) order.
        float[] wEnc = { 1, 0, -1, 0, 1, 1 };                  // W_enc[i, f]
        float[] wDecColumnMajor = { 1, 2, 3, 4, 5, 6 };         // W_dec[f, j]: column 0 = (1, 2, 3), column 1 = (4, 5, 6)
        string path = dir.File("params.npz");
        using (var zip = ZipFile.Open(path, ZipArchiveMode.Create))
            foreach (var (name, data) in new[]
                     {
                         ("W_enc", Npy(wEnc, new long[] { 2, 3 })), ("W_dec", Npy(wDecColumnMajor, new long[] { 3, 2 }, fortran: true)),
                         ("b_enc", Npy(new[] { 0f, 0f, 0.5f }, new long[] { 3 })), ("b_dec", Npy(new[] { 0.1f, 0.2f }, new long[] { 2 })),
                         ("threshold", Npy(new[] { 0.5f, 0.5f, 0.5f }, new long[] { 3 })),
                     })
                using (var s = zip.CreateEntry(name + ".npy").Open()) s.Write(data);
        using var bundle = GemmaScopeFormat.Load(dir.Path, "blocks.12.hook_resid_post");
        Assert.Equal(new[] { 1f, 4f, 2f, 5f, 3f, 6f }, bundle.Sae.WDec.contiguous().data<float>().ToArray());
        // x = (2, 1): pre = x·W_enc + b_enc = (2, 1, −2 + 1 + 0.5) = (2, 1, −0.5); JumpReLU at 0.5 keeps (2, 1, 0).
        using var x = tensor(new float[] { 2, 1 }, new long[] { 1, 2 });
        using var acts = bundle.Sae.Encode(x);
        Assert.Equal(new[] { 2f, 1f, 0f }, acts.data<float>().ToArray());
        // Reconstruction by hand: 2·(1, 4) + 1·(2, 5) + b_dec = (4.1, 13.2).
        using var recon = bundle.Sae.Decode(acts);
        Assert.Equal(4.1f, recon[0, 0].item<float>(), 5);
        Assert.Equal(13.2f, recon[0, 1].item<float>(), 5);

        File.WriteAllText(dir.File("bad.npz"), "not a zip");
        Assert.Contains("not a zip", Assert.Throws<Mechanist.InvalidCheckpointException>(() => GemmaScopeFormat.Load(dir.File("bad.npz"), "x")).Message);
    }
}
