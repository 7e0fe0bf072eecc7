using Mechanist.Models;

namespace Mechanist.Microscope;

/// <summary>Per-token microscope views of one prompt.</summary>
/// <param name="Tokens">Prompt tokens.</param>
/// <param name="Classes">Token classes.</param>
/// <param name="Depths">Depth labels.</param>
/// <param name="Linearity">Corpus linearity per depth pair.</param>
/// <param name="IntrinsicDimension">Corpus TwoNN per depth.</param>
/// <param name="Anisotropy">Corpus anisotropy per depth.</param>
/// <param name="Nonlinearity">[depth pair][token] residual under the corpus fits.</param>
/// <param name="LensLoss">[depth][token] logit-lens loss of the next token.</param>
public sealed record PromptMicroscope(string[] Tokens, string[] Classes, string[] Depths, double[] Linearity, double[] IntrinsicDimension,
    double[] Anisotropy, double[][] Nonlinearity, double[][] LensLoss);

/// <summary>
/// Corpus-level fits of a model (on a corpus it writes itself), so that any prompt's per-token
/// nonlinearity can be read off quickly against them.
/// </summary>
public sealed class MicroscopeBaseline : IDisposable
{
    readonly Geometry.LinearFit[] _fits;
    readonly MicroscopeReport _report;
    readonly int _rows;

    MicroscopeBaseline(Geometry.LinearFit[] fits, MicroscopeReport report, int rows) { _fits = fits; _report = report; _rows = rows; }

    /// <summary>Fits the baseline on <paramref name="texts"/> (default: 40 texts the model writes).</summary>
    public static MicroscopeBaseline Build(HookedTransformer model, IReadOnlyList<string>? texts = null)
    {
        CorpusStates.RequireCausal(model);
        texts ??= ModelCorpus.Generate(model, 40);
        using var states = CorpusStates.Collect(model, texts);
        var (report, fits) = MicroscopeRunner.Run(model, states, new MicroscopeOptions(PerTextViews: 0));
        return new MicroscopeBaseline(fits, report, states.RowCount);
    }

    /// <summary>The per-token views of a prompt.</summary>
    public PromptMicroscope For(HookedTransformer model, string prompt)
    {
        using var states = CorpusStates.Collect(model, new[] { prompt });
        var text = states.Texts[0];
        var (_, count, offset) = states.Rows[0];
        var nonlinearity = _fits.Select((fit, l) =>
            Enumerable.Repeat(0.0, offset).Concat(fit.RowErrors(states.Layers[l], states.Layers[l + 1], _rows)).ToArray()).ToArray();
        var lens = MicroscopeRunner.Lens(model, states).PerText[0];
        return new PromptMicroscope(text.Tokens, text.Classes, states.Labels, _report.Linearity, _report.IntrinsicDimension, _report.Anisotropy, nonlinearity, lens);
    }

    /// <inheritdoc/>
    public void Dispose() { foreach (var f in _fits) f.Dispose(); }
}
