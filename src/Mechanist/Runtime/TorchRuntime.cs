using TorchSharp;

namespace Mechanist.Runtime;

/// <summary>
/// Loads libtorch once and turns a failure into one clear message instead of TorchSharp's
/// multi-page trace.
/// </summary>
public static class TorchRuntime
{
    static readonly Lazy<string?> LoadError = new(TryLoad, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>
    /// Loads libtorch when this assembly is first used, so that <see cref="MklDispatch"/> runs before any caller's first GEMM (MKL keeps
    /// the kernels it chose then) and <see cref="NativeHeap"/> before its first allocation; a failure is kept for <see cref="EnsureLoaded"/> to report.
    /// </summary>
#pragma warning disable CA2255 // a library's module initializer: MKL's kernel choice must precede the first product anywhere in the process
    [System.Runtime.CompilerServices.ModuleInitializer]
    internal static void LoadEarly() => _ = LoadError.Value;
#pragma warning restore CA2255

    /// <summary>Ensures libtorch is loaded; throws <see cref="MechanistException"/> saying why it cannot be.</summary>
    public static void EnsureLoaded()
    {
        if (LoadError.Value is { } error) throw new MechanistException(error);
    }

    static string? TryLoad()
    {
        try
        {
            NativeHeap.Apply();                                 // before libtorch's first allocation
            _ = torch.__version__;
            using var probe = torch.zeros(1);
            MklDispatch.Apply();
            return null;
        }
        catch (Exception e)
        {
            string detail = e.InnerException?.Message ?? e.Message;
            string firstLine = detail.Split('\n', 2)[0].Trim();
            return "libtorch could not be loaded (TorchSharp-cpu 0.107 / libtorch 2.10). " +
                   "If the system libstdc++ lacks GLIBCXX_3.4.32, rebuild with 'dotnet build' so the " +
                   "build marks that version need weak in libLibTorchSharp.so; also check that the " +
                   $"runtimes/*/native folder sits beside TorchSharp.dll. Cause: {firstLine}";
        }
    }
}
