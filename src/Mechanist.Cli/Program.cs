using TorchSharp;
Mechanist.Runtime.TorchRuntime.EnsureLoaded();
using var t = torch.ones(3);
Console.WriteLine(t.sum().item<float>());
