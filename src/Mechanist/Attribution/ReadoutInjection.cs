using Mechanist.Dictionaries;
using Mechanist.Models;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Attribution;

/// <summary>
/// The gradients one backward pass injects over a retained forward of B prompt copies, one target readout per copy: a feature's
/// encoder row at its transcoder input, or a logit target's direction at the unembedding's input. Shared by graph rows and head loadings.
/// </summary>
internal sealed class ReadoutInjection(RetainedForward forward, ICrossLayerDictionary dictionary, string[] inputs, string unembedIn)
{
    readonly Tensor?[] _perLayer = new Tensor?[inputs.Length];
    Tensor? _logits;

    /// <summary>Copy <paramref name="row"/> reads feature <paramref name="feature"/> (a feature node) at its layer and position.</summary>
    public void Feature(int row, GraphNode feature)
    {
        var x = forward[inputs[feature.Layer]];
        _perLayer[feature.Layer] ??= zeros_like(x);
        using var index = SafeOps.FullInt(new long[] { 1 }, feature.Index);
        _perLayer[feature.Layer]![row, feature.Position] = dictionary.EncoderRows(feature.Layer, index)[0].to(x.dtype);
    }

    /// <summary>Copy <paramref name="row"/> reads the residual at <paramref name="position"/> along <paramref name="direction"/> [d_model].</summary>
    public void Logit(int row, int position, Tensor direction)
    {
        var u = forward[unembedIn];
        _logits ??= zeros_like(u);
        _logits[row, position] = direction.to(u.dtype);
    }

    /// <summary>(activation, injected gradient) pairs for <see cref="RetainedForward.Gradients(IReadOnlyList{ValueTuple{Tensor, Tensor}}, IReadOnlyList{string})"/>.</summary>
    public List<(Tensor, Tensor)> Injections()
    {
        var list = new List<(Tensor, Tensor)>();
        for (int l = 0; l < inputs.Length; l++) if (_perLayer[l] is { } g) list.Add((forward[inputs[l]], g));
        if (_logits is not null) list.Add((forward[unembedIn], _logits));
        return list;
    }
}
