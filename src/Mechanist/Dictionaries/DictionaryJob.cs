using System.Text;
using Mechanist.Dictionaries.Formats;
using Mechanist.Dictionaries.Training;
using Mechanist.Hooks;
using Mechanist.IO;
using Mechanist.Models;
using Mechanist.Reporting;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries;

/// <summary>Where the dictionary reads and writes, and on which text.</summary>
/// <param name="Config">Training hyper-parameters.</param>
/// <param name="Input">For transcoders and CLTs: where features read the MLP input.</param>
/// <param name="SaeHook">For an SAE: its hook point (default: the middle layer's resid_post).</param>
/// <param name="TrainTokens">Tokens of activations to train on.</param>
/// <param name="EvalTokens">Held-out tokens to evaluate on.</param>
public sealed record DictionaryJobOptions(DictionaryTrainConfig Config, TranscoderInput Input = TranscoderInput.Resid, string? SaeHook = null,
    long TrainTokens = 200_000, long EvalTokens = 20_000);

/// <summary>A trained dictionary with its evaluation and training curve.</summary>
/// <param name="Bundle">The dictionary with its site.</param>
/// <param name="Options">How it was trained.</param>
/// <param name="Evaluation">Held-out evaluation.</param>
/// <param name="Losses">Loss per step.</param>
/// <param name="TrainTokens">Tokens trained on.</param>
/// <param name="TrainSeconds">Optimisation time.</param>
/// <param name="TokensPerSecond">Training throughput.</param>
/// <param name="FlopsPerSecond">Training FLOP rate (3 × forward multiply-adds × 2 per token).</param>
public sealed record TrainedDictionary(DictionaryBundle Bundle, DictionaryJobOptions Options, DictionaryEvaluationResult Evaluation, double[] Losses,
    long TrainTokens, double TrainSeconds, double TokensPerSecond, double FlopsPerSecond) : IDisposable
{
    /// <inheritdoc/>
    public void Dispose() => Bundle.Dispose();
}

/// <summary>The whole job behind <c>mechanist dict train</c>: harvest, train, evaluate on held-out text, save with a card.</summary>
public static class DictionaryJob
{
    /// <summary>The input and target hooks per layer for a kind: an SAE's one hook point (default: the middle layer's resid_post), or the transcoder sites.</summary>
    public static (string[] Inputs, string[] Targets) Hooks(HookedTransformer model, DictionaryKind kind, TranscoderInput input, string? saeHook)
    {
        if (kind.ReplacesMlps()) return TranscoderInputs.HarvestHooks(model, input);
        string hook = saeHook ?? model.HookPoints.Name(HookKind.ResidPost, model.Config.NLayers / 2);
        model.HookPoints.Check(hook);
        return (new[] { hook }, new[] { hook });
    }

    /// <summary>
    /// Harvests (or reads <paramref name="harvestDir"/>, a merged harvest), trains and evaluates. <paramref name="evalTexts"/> must not
    /// overlap the training text.
    /// </summary>
    public static TrainedDictionary Run(HookedTransformer model, IEnumerable<string> trainTexts, IEnumerable<string> evalTexts, DictionaryJobOptions o,
        string? checkpointDir = null, IProgress<string>? stage = null, IProgress<DictionaryTrainProgress>? progress = null, CancellationToken ct = default,
        string? harvestDir = null)
    {
        var c = o.Config;
        var (inputs, targets) = Hooks(model, c.Kind, o.Input, o.SaeHook);
        stage?.Report(harvestDir is null ? $"harvesting {o.TrainTokens:N0} tokens at {inputs.Length} layer(s)" : $"reading activations from {harvestDir}");
        using var train = harvestDir is null ? ActivationHarvest.Collect(model, trainTexts, inputs, targets, o.TrainTokens)
            : HarvestJob.Load(harvestDir, inputs, targets, o.TrainTokens);
        var result = DictionaryTrainer.Train(train, c, checkpointDir, progress, ct);
        var bundle = DictionaryBundle.Of(result.Dictionary, model.Name, o.Input, inputs[0]);
        try
        {
            stage?.Report("evaluating on held-out text");
            var evalList = CorpusReader.TakeTokens(model.Tokenizer!, evalTexts, o.EvalTokens);
            using var held = ActivationHarvest.Collect(model, evalList, inputs, targets, o.EvalTokens);
            var layers = DictionaryEvaluation.Layers(bundle.Dictionary, held);
            var spliced = DictionaryEvaluation.Spliced(model, evalList, bundle.Splice(ErrorTerm.None), targets, o.EvalTokens);
            // Only this run's steps: a resumed run timed its own steps, not the ones before the kill.
            double tps = result.StepsRun * (double)c.BatchSize / Math.Max(1e-9, result.TrainSeconds);
            return new TrainedDictionary(bundle, o, new DictionaryEvaluationResult(layers, spliced), result.Losses, train.Rows, result.TrainSeconds, tps,
                result.FlopsPerStep * result.StepsRun / Math.Max(1e-9, result.TrainSeconds));
        }
        catch { bundle.Dispose(); throw; }
    }

    /// <summary>
    /// An SAE trained on vectors alone (<paramref name="vectors"/> [N, d], no model): the last tenth is held out for its evaluation.
    /// <paramref name="source"/> names where they came from (the card's model line), <paramref name="hook"/> what they are.
    /// </summary>
    public static TrainedDictionary RunOnVectors(Tensor vectors, string source, DictionaryTrainConfig c, string? hook = null, string? checkpointDir = null,
        IProgress<DictionaryTrainProgress>? progress = null, CancellationToken ct = default)
    {
        if (vectors.dim() != 2) throw new MechanistException($"vectors must be [N, d]; got [{string.Join(", ", vectors.shape)}]");
        if (c.Kind != DictionaryKind.Sae) throw new MechanistException("a file of vectors trains an SAE (--kind sae): transcoders read one hook point and write another, which a file of vectors does not have");
        long n = vectors.shape[0], held = Math.Max(1, n / 10);
        if (n - held < c.BatchSize) throw new MechanistException($"{source}: {n:N0} vectors leave {n - held:N0} for training after the held-out tenth, fewer than one batch of {c.BatchSize}");
        var trainRows = vectors.narrow(0, 0, n - held).unsqueeze(1); var heldRows = vectors.narrow(0, n - held, held).unsqueeze(1);
        using var train = new ActivationSet(trainRows, trainRows, 0);
        using var eval = new ActivationSet(heldRows, heldRows, 0);
        var result = DictionaryTrainer.Train(train, c, checkpointDir, progress, ct);
        var bundle = DictionaryBundle.Of(result.Dictionary, source, TranscoderInput.Resid, hook ?? "activations");
        try
        {
            var evaluation = new DictionaryEvaluationResult(DictionaryEvaluation.Layers(bundle.Dictionary, eval), null);
            double tps = result.StepsRun * (double)c.BatchSize / Math.Max(1e-9, result.TrainSeconds);
            return new TrainedDictionary(bundle, new DictionaryJobOptions(c, SaeHook: hook ?? "activations", TrainTokens: n - held, EvalTokens: held), evaluation,
                result.Losses, n - held, result.TrainSeconds, tps, result.FlopsPerStep * result.StepsRun / Math.Max(1e-9, result.TrainSeconds));
        }
        catch { bundle.Dispose(); throw; }
    }

    /// <summary>Writes the dictionary (circuit-tracer or SAELens format) with README.md (card), metrics.json and loss.png, atomically.</summary>
    public static void Save(TrainedDictionary t, string dir, string command, bool overwrite = false)
    {
        void Extras(string folder)
        {
            AtomicFile.WriteText(Path.Combine(folder, "metrics.json"), JsonFormat.Serialize(new
            {
                kind = t.Options.Config.Kind, activation = t.Options.Config.Activation, t.Options.Config.Features, t.Options.Config.K,
                t.Options.Config.Steps, t.Options.Config.BatchSize, t.Options.Config.Seed, t.TrainTokens, t.TrainSeconds, t.TokensPerSecond,
                t.Evaluation.Layers, t.Evaluation.Splice, command,
            }) + "\n");
            AtomicFile.WriteText(Path.Combine(folder, "losses.json"), JsonFormat.Serialize(t.Losses.Select(l => Math.Round(l, 6))));
            Plots.LossCurve(t.Losses, Path.Combine(folder, "loss.png"), $"{t.Options.Config.Kind} training loss",
                t.Options.Config.Activation is TrainActivation.TopK or TrainActivation.BatchTopK ? "Σ over layers of FVU (+ AuxK)"
                : t.Options.Config.Activation == TrainActivation.MatryoshkaBatchTopK ? "Σ over layers and nested prefixes of FVU (+ AuxK)" : "Σ over layers of FVU + sparsity penalties");
            AtomicFile.WriteText(Path.Combine(folder, "README.md"), Card(t, command));
        }
        // The card and metrics go into the same temp folder, so the whole folder appears at once.
        t.Bundle.Save(dir, overwrite, Extras);
    }

    /// <summary>A model card: what was trained, on what, how well, and how to reproduce it.</summary>
    public static string Card(TrainedDictionary t, string command)
    {
        var c = t.Options.Config; var e = t.Evaluation;
        var sb = new StringBuilder();
        sb.AppendLine($"# {c.Kind} ({c.Activation}{(c.Activation is TrainActivation.TopK or TrainActivation.BatchTopK or TrainActivation.MatryoshkaBatchTopK ? $", k = {c.K}" : "")}, {c.Features} features per layer)");
        sb.AppendLine();
        sb.AppendLine($"Trained by Mechanist on {t.TrainTokens:N0} tokens of activations, {c.Steps} steps of {c.BatchSize} tokens, seed {c.Seed} ({t.TrainSeconds:F0} s, {t.TokensPerSecond:N0} tokens/s).");
        sb.AppendLine();
        sb.AppendLine("Reproduce:");
        sb.AppendLine();
        sb.AppendLine("```");
        sb.AppendLine(command);
        sb.AppendLine("```");
        sb.AppendLine();
        sb.AppendLine("Held-out evaluation, per layer:");
        sb.AppendLine();
        sb.AppendLine("| layer | FVU | MSE | L0 | dead | dense |");
        sb.AppendLine("|---|---|---|---|---|---|");
        foreach (var l in e.Layers) sb.AppendLine($"| {l.Layer} | {l.Fvu:F4} | {l.Mse:G4} | {l.L0:F1} | {l.DeadFraction:P1} | {l.DenseFraction:P1} |");
        if (e.Splice is { } s)
        {
            sb.AppendLine();
            sb.AppendLine($"Spliced into the model (error terms dropped), {s.Tokens:N0} held-out tokens: next-token loss {s.CleanLoss:F3} clean, {s.SplicedLoss:F3} spliced, {s.ZeroAblatedLoss:F3} zero-ablated;");
            sb.AppendLine($"**loss recovered {s.LossRecovered:P1}**, KL {s.Kl:F4}, **top-1 agreement {s.TopTokenAgreement:P1}** ({s.ConfidentAgreement:P1} on the {s.ConfidentShare:P0} of positions where the model gives its top token p ≥ 0.5).");
        }
        sb.AppendLine();
        sb.AppendLine("![training loss](loss.png)");
        return sb.ToString();
    }
}
