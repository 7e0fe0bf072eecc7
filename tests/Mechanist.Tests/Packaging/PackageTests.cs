using System.Diagnostics;
using System.Text;

namespace Mechanist.Tests.Packaging;

/// <summary>
/// The library and the CLI as a user gets them: both packed into a temporary local feed; the
/// <c>mechanist</c> .NET tool installed into a temporary folder and run from outside the repository
/// (it must find its built-in models inside the package); and a fresh console project that references
/// the library package builds and runs a forward on the built-in model (so the package's
/// buildTransitive targets made TorchSharp's native library loadable for it).
/// </summary>
public sealed class PackageTests : IDisposable
{
    // A version no earlier run used, so NuGet's global package cache cannot hand back a stale package.
    readonly string _version = $"0.1.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
    readonly string _root = Directory.CreateTempSubdirectory("mechanist-pack-").FullName;

    static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "Mechanist.sln"))) return dir.FullName;
            throw new DirectoryNotFoundException("Mechanist.sln not found above " + AppContext.BaseDirectory);
        }
    }

    [Fact]
    public void Packed_tool_and_library_work_outside_the_repository()
    {
        string feed = Path.Combine(_root, "feed"), tools = Path.Combine(_root, "tools"), elsewhere = Path.Combine(_root, "elsewhere");
        Directory.CreateDirectory(elsewhere);
        string repo = RepoRoot;
        Run("dotnet", $"pack src/Mechanist/Mechanist.csproj -c Release -o {feed} -p:PackageVersion={_version}", repo);
        Run("dotnet", $"pack src/Mechanist.Cli/Mechanist.Cli.csproj -c Release -r linux-x64 -o {feed} -p:PackageVersion={_version}", repo);
        Assert.True(File.Exists(Path.Combine(feed, $"Mechanist.{_version}.nupkg")));
        Assert.True(File.Exists(Path.Combine(feed, $"Mechanist.Tool.{_version}.nupkg")));

        Run("dotnet", $"tool install Mechanist.Tool --tool-path {tools} --add-source {feed} --version {_version}", elsewhere);
        string mechanist = Path.Combine(tools, "mechanist");
        var help = Run(mechanist, "--help", elsewhere);
        Assert.Contains("mechanist [command] [options]", help);
        Assert.Contains("demo finished", Run(mechanist, "demo", elsewhere));
        // The toy world's fact, from the built-in model the tool carries.
        var run = Run(mechanist, "run --prompt \"The capital of Texas is\" --top-k 1 --json", elsewhere);
        Assert.Contains("\"top\":[{\"id\":181,\"token\":\"Austin\"", run);

        string consumer = Path.Combine(_root, "consumer");
        Directory.CreateDirectory(consumer);
        File.WriteAllText(Path.Combine(consumer, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="local" value="{feed}" />
              </packageSources>
            </configuration>
            """);
        File.WriteAllText(Path.Combine(consumer, "Consumer.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <RuntimeIdentifier>linux-x64</RuntimeIdentifier>
                <SelfContained>false</SelfContained>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
                <NoWarn>NU1603</NoWarn>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="Mechanist" Version="{_version}" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(consumer, "Program.cs"), """
            using Mechanist.Analysis;
            using Mechanist.Models;
            var model = HookedTransformer.Load(args[0]);
            var top = NextTokens.Run(model, model.ToTokens("The capital of Texas is"), 1).Top[0];
            Console.WriteLine($"top next token: [{top.Token}] p={top.Prob:F3}");
            """);
        // The local feed is added to the machine's package sources; TorchSharp and the rest come from
        // the global package folder, where the repository's own build put them.
        Run("dotnet", "build -c Release -o out", consumer);
        var output = Run("dotnet", $"out/Consumer.dll {Path.Combine(repo, "models", "toy-4l")}", consumer);
        Assert.Contains("top next token: [Austin]", output);
    }

    static string Run(string file, string args, string cwd, params (string Name, string? Value)[] env)
    {
        var psi = new ProcessStartInfo(file, args) { WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment.Remove("MECHANIST_MODELS");
        // Keep MSBuild from this test host's environment out of the child builds.
        foreach (var key in new[] { "MSBuildExtensionsPath", "MSBUILD_EXE_PATH", "MSBuildSDKsPath", "MSBuildLoadMicrosoftTargetsReadOnly" })
            psi.Environment.Remove(key);
        foreach (var (name, value) in env) { if (value == null) psi.Environment.Remove(name); else psi.Environment[name] = value; }
        using var p = Process.Start(psi)!;
        var stdout = new StringBuilder(); var stderr = new StringBuilder();
        p.OutputDataReceived += (_, e) => { if (e.Data != null) lock (stdout) stdout.AppendLine(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (stderr) stderr.AppendLine(e.Data); };
        p.BeginOutputReadLine(); p.BeginErrorReadLine();
        if (!p.WaitForExit(TimeSpan.FromMinutes(6))) { p.Kill(true); throw new TimeoutException($"{file} {args} did not finish in 6 minutes"); }
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"{file} {args} (in {cwd}) exited {p.ExitCode}\n{Tail(stdout)}\n{Tail(stderr)}");
        return stdout.ToString();
    }

    static string Tail(StringBuilder sb) { var s = sb.ToString(); return s.Length > 4000 ? s[^4000..] : s; }

    public void Dispose()
    {
        try { Directory.Delete(_root, true); } catch (IOException) { }
        // Drop this run's packages from NuGet's global cache (the tool package is 150 MB).
        string cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        foreach (var id in new[] { "mechanist", "mechanist.tool" })
        {
            var dir = Path.Combine(cache, id, _version);
            try { if (Directory.Exists(dir)) Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
