using System.Diagnostics;

namespace Mechanist.Tests.Reliability;

/// <summary>The compiler refuses TorchSharp calls that make temporary Scalars (or unowned Generators), in any project of this repository.</summary>
public class BannedApiTests
{
    [Fact]
    public async Task AnUnsafeLineFailsTheBuild()
    {
        // A scratch project inside the repository, so Directory.Build.props applies to it as to every project here.
        string dir = Path.Combine(SharedData.RepoRoot, "tests", $".unsafe-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllText(Path.Combine(dir, "Unsafe.csproj"), """
                <Project Sdk="Microsoft.NET.Sdk">
                  <ItemGroup><PackageReference Include="TorchSharp-cpu" /></ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(dir, "Demo.cs"), """
                using static TorchSharp.torch;
                public static class Demo
                {
                    public static Tensor Unsafe(Tensor t, Tensor u)
                    {
                        var scaled = t * 2.0;
                        scaled += u;
                        return scaled.square().masked_fill(t > 0, 1.0);
                    }

                    public static Tensor AllIntoAByte(Tensor t) => t.sum(0);

                    public static Tensor Shuffled(long n) => randperm(n, generator: new Generator(0));

                    public static Tensor Owned(long n) { using var g = new Generator(0); return randperm(n, generator: g); }
                }
                """);
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dir };
            foreach (var a in new[] { "build", "-c", "Release", "-p:UseSharedCompilation=false", "-nodeReuse:false" }) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            var stdout = p.StandardOutput.ReadToEndAsync(); var stderr = p.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(5));
            await p.WaitForExitAsync(timeout.Token);
            string output = await stdout + await stderr;
            Assert.NotEqual(0, p.ExitCode);
            Assert.Contains("Demo.cs(6,", output); Assert.Contains("RS0030", output);   // t * 2.0
            Assert.Contains("Demo.cs(7,", output); Assert.Contains("MECH001", output);  // scaled += u
            Assert.Contains("torch.Tensor.square()", output);
            Assert.Contains("implicit operator Scalar", output);                         // t > 0, 1.0
            Assert.Contains("Demo.cs(11,", output); Assert.Contains("MECH002", output);  // t.sum(0): the literal 0 binds to sum(ScalarType)
            Assert.Contains("Demo.cs(13,", output); Assert.Contains("MECH003", output);  // a Generator nothing keeps alive through randperm
            Assert.DoesNotContain("Demo.cs(15,", output);                                 // the same Generator owned by a using
        }
        finally { try { Directory.Delete(dir, true); } catch (IOException) { } }
    }
}
