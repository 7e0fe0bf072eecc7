using Mechanist.Runtime;

namespace Mechanist.Tests;

/// <summary>Loads libtorch (and lets MKL choose its kernels, see <see cref="MklDispatch"/>) before any test's first product.</summary>
static class TorchSetup
{
#pragma warning disable CA2255 // the test assembly's own setup
    [System.Runtime.CompilerServices.ModuleInitializer]
    internal static void LoadTorch()
    {
        try { TorchRuntime.EnsureLoaded(); } catch (MechanistException) { }   // the tests that need libtorch say why it failed
    }
#pragma warning restore CA2255
}
