using System.Runtime.InteropServices;
using TorchSharp;

namespace Mechanist.Tensors;

/// <summary>Raw access to the storage of CPU tensors, for bulk copies to and from files.</summary>
public static class TensorMemory
{
    [DllImport("LibTorchSharp")]
    static extern IntPtr THSTensor_data(IntPtr tensor);

    /// <summary>
    /// Pointer to the first element of a contiguous CPU tensor. Valid while the tensor lives and is not resized.
    /// </summary>
    public static IntPtr DataPointer(torch.Tensor tensor)
    {
        if (tensor.device_type != DeviceType.CPU) throw new ArgumentException("tensor must be on the CPU", nameof(tensor));
        if (!tensor.is_contiguous()) throw new ArgumentException("tensor must be contiguous", nameof(tensor));
        return THSTensor_data(tensor.Handle);
    }

    /// <summary>
    /// Pointer to the first element of a CPU tensor of any strides (the caller walks them). Valid while the tensor lives and is not resized.
    /// </summary>
    public static IntPtr StridedDataPointer(torch.Tensor tensor)
    {
        if (tensor.device_type != DeviceType.CPU) throw new ArgumentException("tensor must be on the CPU", nameof(tensor));
        return THSTensor_data(tensor.Handle);
    }
}
