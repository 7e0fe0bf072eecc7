using TorchSharp;

namespace Mechanist.IO;

/// <summary>The element types of the safetensors format.</summary>
public enum TensorDType
{
    /// <summary>64-bit float.</summary>
    F64,
    /// <summary>32-bit float.</summary>
    F32,
    /// <summary>IEEE half.</summary>
    F16,
    /// <summary>bfloat16.</summary>
    BF16,
    /// <summary>64-bit signed integer.</summary>
    I64,
    /// <summary>32-bit signed integer.</summary>
    I32,
    /// <summary>16-bit signed integer.</summary>
    I16,
    /// <summary>8-bit signed integer.</summary>
    I8,
    /// <summary>8-bit unsigned integer.</summary>
    U8,
    /// <summary>Boolean stored as one byte.</summary>
    BOOL,
}

/// <summary>Sizes and torch equivalents of <see cref="TensorDType"/>.</summary>
public static class TensorDTypes
{
    /// <summary>Parses a safetensors dtype string ("F32", "BF16", ...); null when unknown.</summary>
    public static TensorDType? Parse(string name) => name switch
    {
        "F64" => TensorDType.F64, "F32" => TensorDType.F32, "F16" => TensorDType.F16, "BF16" => TensorDType.BF16,
        "I64" => TensorDType.I64, "I32" => TensorDType.I32, "I16" => TensorDType.I16, "I8" => TensorDType.I8,
        "U8" => TensorDType.U8, "BOOL" => TensorDType.BOOL, _ => null,
    };

    /// <summary>Bytes per element.</summary>
    public static int Size(this TensorDType t) => t switch
    {
        TensorDType.F64 or TensorDType.I64 => 8,
        TensorDType.F32 or TensorDType.I32 => 4,
        TensorDType.F16 or TensorDType.BF16 or TensorDType.I16 => 2,
        _ => 1,
    };

    /// <summary>The torch scalar type with the same bit layout.</summary>
    public static torch.ScalarType ToTorch(this TensorDType t) => t switch
    {
        TensorDType.F64 => torch.ScalarType.Float64, TensorDType.F32 => torch.ScalarType.Float32,
        TensorDType.F16 => torch.ScalarType.Float16, TensorDType.BF16 => torch.ScalarType.BFloat16,
        TensorDType.I64 => torch.ScalarType.Int64, TensorDType.I32 => torch.ScalarType.Int32,
        TensorDType.I16 => torch.ScalarType.Int16, TensorDType.I8 => torch.ScalarType.Int8,
        TensorDType.U8 => torch.ScalarType.Byte, TensorDType.BOOL => torch.ScalarType.Bool,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>The safetensors dtype for a torch scalar type.</summary>
    public static TensorDType FromTorch(torch.ScalarType t) => t switch
    {
        torch.ScalarType.Float64 => TensorDType.F64, torch.ScalarType.Float32 => TensorDType.F32,
        torch.ScalarType.Float16 => TensorDType.F16, torch.ScalarType.BFloat16 => TensorDType.BF16,
        torch.ScalarType.Int64 => TensorDType.I64, torch.ScalarType.Int32 => TensorDType.I32,
        torch.ScalarType.Int16 => TensorDType.I16, torch.ScalarType.Int8 => TensorDType.I8,
        torch.ScalarType.Byte => TensorDType.U8, torch.ScalarType.Bool => TensorDType.BOOL,
        _ => throw new MechanistException($"dtype {t} cannot be stored in safetensors"),
    };
}
