namespace Mechanist.Microscope;

/// <summary>What LLM-Microscope measures on one model and corpus; every per-layer array has one value per depth or depth pair.</summary>
/// <param name="Model">Model name.</param>
/// <param name="Texts">Texts analysed.</param>
/// <param name="Tokens">Tokens analysed (BOS excluded).</param>
/// <param name="Depths">Labels of the hidden states: "emb", "1", ..., "L".</param>
/// <param name="Linearity">Linearity score of each consecutive pair (L values).</param>
/// <param name="LinearityCentred">The same for the block's update only (Y − X).</param>
/// <param name="IntrinsicDimension">TwoNN estimate per depth.</param>
/// <param name="Anisotropy">Largest covariance eigenvalue / trace per depth.</param>
/// <param name="AnisotropyPowerIteration">The same by power iteration.</param>
/// <param name="LensLoss">Logit-lens loss against the true next token per depth.</param>
/// <param name="LensTopTokenLoss">The paper's variant: −log p of each depth's own top-1 token.</param>
/// <param name="PerText">Per-token views of the first texts.</param>
/// <param name="Contextuality">Context memory, when computed.</param>
/// <param name="Removal">Token-removal curves, when computed.</param>
public sealed record MicroscopeReport(string Model, int Texts, int Tokens, string[] Depths, double[] Linearity, double[] LinearityCentred,
    double[] IntrinsicDimension, double[] Anisotropy, double[] AnisotropyPowerIteration, double[] LensLoss, double[] LensTopTokenLoss,
    TextView[] PerText, ContextualityResult? Contextuality, RemovalCurve[]? Removal);

/// <summary>Per-token measurements of one text.</summary>
/// <param name="Index">Index in the corpus.</param>
/// <param name="Tokens">Tokens (BOS included).</param>
/// <param name="Classes">Token classes.</param>
/// <param name="Nonlinearity">[depth pair][token] residual of the fitted linear map (BOS: 0).</param>
/// <param name="LensLoss">[depth][token] logit-lens loss of predicting the next token (last token: NaN).</param>
/// <param name="Contextuality">Per-token context score when this text was held out for it.</param>
public sealed record TextView(int Index, string[] Tokens, string[] Classes, double[][] Nonlinearity, double[][] LensLoss, double?[]? Contextuality);
