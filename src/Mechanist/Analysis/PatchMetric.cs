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
    public static PatchMetric Create(string? name, long answer, long? wrong, Func<Tensor> cleanLogits, int position = -1) => (string.IsNullOrEmpty(name) ? (wrong is null ? "prob" : "logit-diff") : name) switch
    {
        "logit-diff" => new LogitDiff(answer, wrong ?? throw new MechanistException("the logit-diff metric needs a wrong answer")) { Position = position },
        "prob" => new Probability(answer) { Position = position },
        "loss" => new Loss(answer) { Position = position },
        "kl" => new KlDivergence(cleanLogits()[0, position].to(ScalarType.Float32).log_softmax(-1).DetachFromDisposeScope()) { Position = position },
        var other => throw new MechanistException($"unknown metric '{other}' (use {string.Join(", ", Names)})"),
    };

    /// <summary>The position whose logits the metric reads (−1: the last; a masked LM's mask position, say).</summary>
    public int Position { get; init; } = -1;

    /// <summary>" at position P" when the metric reads another position than the last.</summary>
    protected string At => Position == -1 ? "" : $" at position {Position}";

    /// <summary>A short description for reports.</summary>
    public abstract string Describe { get; }

    /// <summary>The scalar metric (a 0-d tensor, differentiable).</summary>
    public abstract Tensor Compute(Tensor logits);

    /// <summary>logit(answer) − logit(wrong) at the metric's position (the last by default).</summary>
    public sealed record LogitDiff(long Answer, long Wrong) : PatchMetric
    {
        /// <inheritdoc/>
        public override string Describe => $"logit diff ({Answer} - {Wrong}){At}";
        /// <inheritdoc/>
        public override Tensor Compute(Tensor logits) => logits[0, Position, Answer] - logits[0, Position, Wrong];
    }

    /// <summary>Probability of the answer at the metric's position (the last by default).</summary>
    public sealed record Probability(long Answer) : PatchMetric
    {
        /// <inheritdoc/>
        public override string Describe => $"p({Answer}){At}";
        /// <inheritdoc/>
        public override Tensor Compute(Tensor logits) => logits[0, Position].to(ScalarType.Float32).softmax(-1)[Answer];
    }

    /// <summary>Cross-entropy of the answer at the metric's position (lower is better).</summary>
    public sealed record Loss(long Answer) : PatchMetric
    {
        /// <inheritdoc/>
        public override string Describe => $"loss({Answer}){At}";
        /// <inheritdoc/>
        public override Tensor Compute(Tensor logits) => -logits[0, Position].to(ScalarType.Float32).log_softmax(-1)[Answer];
    }

    /// <summary>KL(reference ‖ model) of the distribution at the metric's position; reference = the clean run.</summary>
    public sealed record KlDivergence(Tensor ReferenceLogProbs) : PatchMetric
    {
        /// <inheritdoc/>
        public override string Describe => $"KL(clean || patched){At}";
        /// <inheritdoc/>
        public override Tensor Compute(Tensor logits)
        {
            var lp = logits[0, Position].to(ScalarType.Float32).log_softmax(-1);
            return (ReferenceLogProbs.exp() * (ReferenceLogProbs - lp)).sum();
        }
    }
}
