using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>What a patching experiment measures on the logits [batch, pos, vocab].</summary>
public abstract record PatchMetric
{
    /// <summary>The metric words of the CLI and the web: logit-diff, prob, loss, kl.</summary>
    public static readonly string[] Names = { "logit-diff", "prob", "loss", "kl" };

    /// <summary>
    /// A metric by word (empty: logit-diff when a wrong answer is given, else prob). KL compares with the clean
    /// run's last-position distribution, computed by <paramref name="cleanLogits"/> only when needed.
    /// </summary>
    public static PatchMetric Create(string? name, long answer, long? wrong, Func<Tensor> cleanLogits) => (string.IsNullOrEmpty(name) ? (wrong is null ? "prob" : "logit-diff") : name) switch
    {
        "logit-diff" => new LogitDiff(answer, wrong ?? throw new MechanistException("the logit-diff metric needs a wrong answer")),
        "prob" => new Probability(answer),
        "loss" => new Loss(answer),
        "kl" => new KlDivergence(cleanLogits()[0, -1].to(ScalarType.Float32).log_softmax(-1).DetachFromDisposeScope()),
        var other => throw new MechanistException($"unknown metric '{other}' (use {string.Join(", ", Names)})"),
    };

    /// <summary>A short description for reports.</summary>
    public abstract string Describe { get; }

    /// <summary>The scalar metric (a 0-d tensor, differentiable).</summary>
    public abstract Tensor Compute(Tensor logits);

    /// <summary>logit(answer) − logit(wrong) at the last position.</summary>
    public sealed record LogitDiff(long Answer, long Wrong) : PatchMetric
    {
        /// <inheritdoc/>
        public override string Describe => $"logit diff ({Answer} - {Wrong})";
        /// <inheritdoc/>
        public override Tensor Compute(Tensor logits) => logits[0, -1, Answer] - logits[0, -1, Wrong];
    }

    /// <summary>Probability of the answer at the last position.</summary>
    public sealed record Probability(long Answer) : PatchMetric
    {
        /// <inheritdoc/>
        public override string Describe => $"p({Answer})";
        /// <inheritdoc/>
        public override Tensor Compute(Tensor logits) => logits[0, -1].to(ScalarType.Float32).softmax(-1)[Answer];
    }

    /// <summary>Cross-entropy of the answer at the last position (lower is better).</summary>
    public sealed record Loss(long Answer) : PatchMetric
    {
        /// <inheritdoc/>
        public override string Describe => $"loss({Answer})";
        /// <inheritdoc/>
        public override Tensor Compute(Tensor logits) => -logits[0, -1].to(ScalarType.Float32).log_softmax(-1)[Answer];
    }

    /// <summary>KL(reference ‖ model) of the last-position distribution; reference = the clean run.</summary>
    public sealed record KlDivergence(Tensor ReferenceLogProbs) : PatchMetric
    {
        /// <inheritdoc/>
        public override string Describe => "KL(clean || patched)";
        /// <inheritdoc/>
        public override Tensor Compute(Tensor logits)
        {
            var lp = logits[0, -1].to(ScalarType.Float32).log_softmax(-1);
            return (ReferenceLogProbs.exp() * (ReferenceLogProbs - lp)).sum();
        }
    }
}
