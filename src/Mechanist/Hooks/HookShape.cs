namespace Mechanist.Hooks;

/// <summary>
/// The shape of a hook point's activation for a [batch, pos] input: fixed sizes, with batch and positions symbolic
/// (<see cref="Batch"/>, <see cref="Pos"/>). Compared and queried as numbers; printed as TransformerLens prints it,
/// e.g. <c>[batch, pos, 64]</c>.
/// </summary>
public sealed class HookShape : IEquatable<HookShape>
{
    /// <summary>The batch dimension.</summary>
    public const long Batch = -1;
    /// <summary>A positions dimension (queries or keys).</summary>
    public const long Pos = -2;
    /// <summary>An encoder-decoder's encoder positions.</summary>
    public const long EncPos = -3;
    /// <summary>An encoder-decoder's decoder positions.</summary>
    public const long DecPos = -4;

    readonly long[] _dims;

    /// <summary>A shape from its dimensions (<see cref="Batch"/> and <see cref="Pos"/> for the symbolic ones).</summary>
    public HookShape(params long[] dims)
    {
        if (dims.Length == 0 || dims.Any(d => d < DecPos)) throw new ArgumentException("a hook shape needs dimensions", nameof(dims));
        _dims = (long[])dims.Clone();
    }

    /// <summary>[batch, pos, …trailing].</summary>
    public static HookShape BatchPos(params long[] trailing) => new(new[] { Batch, Pos }.Concat(trailing).ToArray());

    /// <summary>The dimensions.</summary>
    public IReadOnlyList<long> Dims => _dims;

    /// <summary>The last dimension (the feature width of a [batch, pos, d] point).</summary>
    public long Width => _dims[^1];

    /// <summary>Whether this is a [batch, pos, d] activation (one vector per position).</summary>
    public bool IsPerPosition => _dims.Length == 3 && _dims[0] == Batch && _dims[1] is Pos or EncPos or DecPos && _dims[2] > 0;

    /// <summary>Whether a concrete tensor shape fits (any batch and position counts).</summary>
    public bool Fits(IReadOnlyList<long> actual) => actual.Count == _dims.Length && _dims.Zip(actual).All(p => p.First < 0 || p.First == p.Second);

    /// <inheritdoc/>
    public override string ToString() => "[" + string.Join(", ", _dims.Select(d => d switch { Batch => "batch", Pos => "pos", EncPos => "enc_pos", DecPos => "dec_pos", _ => d.ToString() })) + "]";

    /// <inheritdoc/>
    public bool Equals(HookShape? other) => other is not null && _dims.SequenceEqual(other._dims);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as HookShape);

    /// <inheritdoc/>
    public override int GetHashCode() => _dims.Aggregate(17, (h, d) => h * 31 + d.GetHashCode());
}
