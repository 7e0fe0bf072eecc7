using Mechanist.Training;
using System.CommandLine;
using System.Text;
using System.Text.Json;
using Mechanist.IO;
using Mechanist.Models;
using Mechanist.Reporting;
using Mechanist.Tokenization;
using Mechanist.Toy;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist toy train|eval|corpus</c>: the toy-model zoo.</summary>
public sealed class ToyCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var toy = new Command("toy", "Train and evaluate the shipped toy models.");
        toy.Subcommands.Add(TrainCommand(ctx));
        toy.Subcommands.Add(EvalCommand(ctx));
        toy.Subcommands.Add(CorpusCommand(ctx));
        return toy;
    }

    static Command TrainCommand(CliContext ctx)
    {
        var preset = new Option<string>("--preset") { Description = $"Preset: {string.Join(", ", ToyPresets.All.Select(p => p.Name))}.", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "Output model folder (resumes from its checkpoint/ when present).", Required = true };
        var steps = new Option<int?>("--steps") { Description = "Override the preset's number of steps." };
        var cmd = new Command("train", "Train a toy model from its preset (seeded: reproduces the shipped model).") { preset, output, steps };
        cmd.SetAction(parse =>
        {
            var p = ToyPresets.Get(parse.GetValue(preset)!);
            if (parse.GetValue(steps) is { } s) p = p with { Train = p.Train with { Steps = s, CheckpointEvery = Math.Min(p.Train.CheckpointEvery, s) } };
            string dir = parse.GetValue(output)!;
            Directory.CreateDirectory(dir);
            ctx.Err.WriteLine($"{p.Name}: {p.Description}");
            var corpus = ToyPresets.Corpus(p);
            WordTokenizerBuilder.Write(dir, WordTokenizerBuilder.Build(corpus.Concat(ToyCorpus.AllText())));
            var tokenizer = TokenizerLoader.FromModelFolder(dir)!;
            var stream = ToyPresets.Stream(tokenizer, corpus);
            ctx.Err.WriteLine($"corpus: {corpus.Count:N0} lines, {stream.Length:N0} tokens, vocabulary {tokenizer.VocabSize}");
            using var model = RandomModels.Create(p.ModelConfig(tokenizer.VocabSize), seed: p.Train.Seed);
            ctx.Err.WriteLine($"model: {model.Weights.ParameterCount:N0} parameters; {p.Train.Steps} steps of {p.Train.BatchSize}x{p.Train.SeqLen} tokens");
            var losses = Trainer.Train(model, stream, p.Train, Path.Combine(dir, "checkpoint"), new TrainProgressPrinter(ctx.Err));
            ctx.Err.WriteLine();

            HfCheckpointWriter.Write(model, dir, new Dictionary<string, string> { ["preset"] = p.Name });
            AtomicFile.WriteText(Path.Combine(dir, "generation_config.json"), "{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 1\n}\n");
            AtomicFile.WriteText(Path.Combine(dir, "losses.json"), JsonSerializer.Serialize(losses.Select(l => Math.Round(l, 5))));
            Plots.LossCurve(losses, Path.Combine(dir, "loss.png"), $"{p.Name} training loss");
            using var trained = HookedTransformer.Load(dir);
            var (groups, induction, inductionHead) = ToyEvaluation.Run(trained);
            double finalLoss = losses.Skip(Math.Max(0, losses.Count - 50)).Average();
            AtomicFile.WriteText(Path.Combine(dir, "README.md"), ModelCard(p, corpus.Count, stream.Length, tokenizer.VocabSize, trained.Weights.ParameterCount, finalLoss, groups, induction, inductionHead));
            ctx.Out.WriteLine($"final loss (mean of the last 50 steps): {finalLoss:F4}");
            foreach (var g in groups) ctx.Out.WriteLine($"{g.Group}: {g.Correct}/{g.Total} = {g.Accuracy:P1}" + (g.MeanLogitDiff is { } d ? $", mean logit diff {d:F2}" : ""));
            ctx.Out.WriteLine($"best induction head: {inductionHead} ({induction:F3})");
            ctx.Out.WriteLine($"wrote {dir}");
            return 0;
        });
        return cmd;
    }

    static string ModelCard(ToyPreset p, int lines, int tokens, int vocab, long parameters, double finalLoss, ToyAccuracy[] groups, double induction, string inductionHead)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# {p.Name}");
        sb.AppendLine();
        sb.AppendLine($"{p.Description}. Trained by Mechanist itself: `mechanist toy train --preset {p.Name} --out DIR` reproduces it (seeded).");
        sb.AppendLine();
        sb.AppendLine("| | |");
        sb.AppendLine("|---|---|");
        sb.AppendLine($"| architecture | GPT-NeoX layout with full rotary positions, sequential residual, {p.Layers} layers, d_model {p.DModel}, {p.Heads} heads{(p.AttnOnly ? ", attention only (config key `attn_only`)" : $", d_mlp {4 * p.DModel}")}, context {p.Context}, tied embeddings |");
        sb.AppendLine($"| parameters | {parameters:N0} |");
        sb.AppendLine($"| data | toy corpus (seed {p.CorpusSeed}): {lines:N0} lines, {tokens:N0} tokens, word-level vocabulary of {vocab}; grammar in `src/Mechanist/Toy/ToyCorpus.cs` |");
        sb.AppendLine($"| training | {p.Train.Steps} steps x {p.Train.BatchSize} x {p.Train.SeqLen} tokens, AdamW (lr {p.Train.LearningRate}, wd {p.Train.WeightDecay}), warm-up {p.Train.WarmupSteps} + cosine, clip {p.Train.GradClip}, seed {p.Train.Seed} |");
        sb.AppendLine($"| final loss | {finalLoss:F4} nats/token (mean of the last 50 steps) |");
        sb.AppendLine();
        sb.AppendLine("## Evaluation");
        sb.AppendLine();
        sb.AppendLine("| prompts | correct | accuracy | mean logit diff |");
        sb.AppendLine("|---|---|---|---|");
        foreach (var g in groups) sb.AppendLine($"| {g.Group} | {g.Correct}/{g.Total} | {g.Accuracy:P1} | {(g.MeanLogitDiff is { } d ? d.ToString("F2") : "")} |");
        sb.AppendLine();
        sb.AppendLine($"Best induction head: {inductionHead}, induction score {induction:F3} (mean attention from the repeated half of BOS + r + r, r random tokens, to the token after the first copy, as in TransformerLens's induction demo).");
        sb.AppendLine();
        sb.AppendLine("![loss](loss.png)");
        return sb.ToString();
    }

    static Command EvalCommand(CliContext ctx)
    {
        var model = CommonOptions.Model(required: false);
        var json = CommonOptions.Json();
        var cmd = new Command("eval", "Evaluate a toy model on its held-out and fact prompts.") { model, json };
        cmd.SetAction(parse =>
        {
            using var m = HookedTransformer.Load(parse.GetValue(model) ?? BuiltInModels.DefaultPath());
            var (groups, induction, head) = ToyEvaluation.Run(m);
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(new { groups, induction, inductionHead = head }, JsonFormat.Options)); return 0; }
            foreach (var g in groups) ctx.Out.WriteLine($"{g.Group}: {g.Correct}/{g.Total} = {g.Accuracy:P1}" + (g.MeanLogitDiff is { } d ? $", mean logit diff {d:F2}" : ""));
            ctx.Out.WriteLine($"best induction head: {head} ({induction:F3})");
            return 0;
        });
        return cmd;
    }

    static Command CorpusCommand(CliContext ctx)
    {
        var lines = new Option<int>("--lines") { Description = "Lines to generate.", DefaultValueFactory = _ => 20 };
        var seed = new Option<int>("--seed") { Description = "Seed.", DefaultValueFactory = _ => 1234 };
        var cmd = new Command("corpus", "Print lines of the toy corpus.") { lines, seed };
        cmd.SetAction(parse =>
        {
            foreach (var line in new ToyCorpus(parse.GetValue(seed)).Lines(parse.GetValue(lines))) ctx.Out.WriteLine(line);
            return 0;
        });
        return cmd;
    }
}

/// <summary>Prints training progress as one updating line.</summary>
public sealed class TrainProgressPrinter(TextWriter err) : IProgress<TrainProgress>
{
    DateTime _last;

    /// <inheritdoc/>
    public void Report(TrainProgress p)
    {
        if (p.Step != p.Steps && DateTime.UtcNow - _last < TimeSpan.FromSeconds(1)) return;
        _last = DateTime.UtcNow;
        int width = 30, filled = width * p.Step / p.Steps;
        err.Write($"\r  [{new string('#', filled)}{new string('.', width - filled)}] step {p.Step}/{p.Steps}  loss {p.Loss:F3}  lr {p.LearningRate:E2}  {p.TokensPerSecond:N0} tok/s   ");
    }
}
