using System.CommandLine;
using System.Text.Json;
using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Evaluation;
using Mechanist.Dictionaries.Formats;
using Mechanist.Dictionaries.Training;
using Mechanist.Models;
using Mechanist.Reporting;
using Mechanist.Toy;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist dict train|eval|info</c>: sparse dictionaries (SAEs, transcoders, cross-layer transcoders).</summary>
public sealed class DictCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var cmd = new Command("dict", "Sparse dictionaries: train, evaluate and inspect SAEs, transcoders and cross-layer transcoders.");
        cmd.Subcommands.Add(Train(ctx));
        cmd.Subcommands.Add(Eval(ctx));
        cmd.Subcommands.Add(Synth(ctx));
        cmd.Subcommands.Add(Info(ctx));
        return cmd;
    }

    /// <summary>The texts to train and evaluate on: a corpus (last tenth held out), the toy corpus for a built-in toy model, or texts the model writes.</summary>
    static (IEnumerable<string> Train, IEnumerable<string> Eval, string Description) Texts(string? corpus, string? modelSpec, HookedTransformer model, int seed, CliContext ctx,
        int generate = 3000)
    {
        if (corpus != null)
        {
            var all = CorpusReader.Read(corpus).ToList();
            if (all.Count < 2) throw new MechanistException($"{corpus}: the corpus needs at least two texts (one is held out for evaluation)");
            int held = Math.Max(1, all.Count / 10);
            return (all.Take(all.Count - held), all.Skip(all.Count - held), $"{corpus} ({all.Count - held:N0} texts; last {held:N0} held out)");
        }
        if (ToyPresets.All.Any(p => p.Name == (modelSpec ?? ToyPresets.DefaultName)))
            return (new ToyCorpus(seed + 1000).Lines(int.MaxValue), new ToyCorpus(seed + 2000).Lines(int.MaxValue), $"the toy corpus (seeds {seed + 1000} train / {seed + 2000} held out)");
        ctx.Err.WriteLine($"no --corpus: training on {generate:N0} texts the model writes itself (sampled, seeded)");
        if (generate < 10) throw new MechanistException("--generate needs at least 10 texts");
        var texts = Mechanist.Microscope.ModelCorpus.Generate(model, generate, seed: seed);
        int heldOut = generate / 10;
        return (texts.Take(generate - heldOut), texts.Skip(generate - heldOut), $"{generate:N0} texts the model wrote itself ({heldOut:N0} held out)");
    }

    Command Train(CliContext ctx)
    {
        var model = CommonOptions.Model(required: false);
        var offline = CommonOptions.Offline();
        var kind = new Option<string>("--kind") { Description = "sae, transcoder, skip-transcoder or clt.", DefaultValueFactory = _ => "clt" };
        var activation = new Option<string>("--activation") { Description = "topk, batchtopk, jumprelu or relu.", DefaultValueFactory = _ => "topk" };
        var features = new Option<int?>("--features") { Description = "Features per layer (default 8 × d_model)." };
        var k = new Option<int>("--k") { Description = "Active features per token and layer (topk, batchtopk).", DefaultValueFactory = _ => 16 };
        var sparsity = new Option<double>("--sparsity") { Description = "λ of the L1 (relu) or tanh (jumprelu) penalty.", DefaultValueFactory = _ => 1e-3 };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps.", DefaultValueFactory = _ => 3000 };
        var batch = new Option<int>("--batch") { Description = "Tokens per step.", DefaultValueFactory = _ => 1024 };
        var lr = new Option<double>("--lr") { Description = "Peak learning rate.", DefaultValueFactory = _ => 1e-3 };
        var tokens = new Option<long>("--tokens") { Description = "Tokens of activations to harvest for training.", DefaultValueFactory = _ => 200_000 };
        var evalTokens = new Option<long>("--eval-tokens") { Description = "Held-out tokens to evaluate on.", DefaultValueFactory = _ => 20_000 };
        var corpus = new Option<string>("--corpus") { Description = "Text file (one text per line), JSONL with a \"text\" field, or a folder of them. Default: the toy corpus for built-in models, else texts the model writes." };
        var hook = new Option<string>("--hook") { Description = "For an SAE: the hook point it reads (default: the middle layer's resid_post)." };
        var input = new Option<string>("--input") { Description = "For transcoders: resid (hook_resid_mid) or normalized (ln2.hook_normalized).", DefaultValueFactory = _ => "resid" };
        var seed = new Option<int>("--seed") { Description = "Seed.", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out") { Description = "Output folder (circuit-tracer format for transcoders and CLTs, SAELens for SAEs); default MODEL-KIND in the current folder." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an existing output folder." };
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint folder: a killed run resumes from it." };
        var generate = new Option<int>("--generate") { Description = "Without --corpus (and not a built-in model): how many texts the model writes for itself.", DefaultValueFactory = _ => 3000 };
        var activations = new Option<string>("--activations") { Description = "Train on a merged harvest folder (mechanist harvest ... && mechanist harvest merge) instead of harvesting in memory." };
        var activationsFile = new Option<string>("--activations-file") { Description = "Train an SAE on the float32 tensor 'activations' [N, d] of a safetensors file (mechanist dict synth, or vectors from anywhere); no model needed; the last tenth is held out." };
        kind.AcceptOnlyFromAmong(DictionaryNames.Kinds.Names);
        activation.AcceptOnlyFromAmong(DictionaryNames.TrainActivations.Names);
        input.AcceptOnlyFromAmong(DictionaryNames.Inputs.Names.Where(n => DictionaryNames.Inputs.TryParse(n, out var i) && TranscoderInputs.HasOwnHookPoint(i)).ToArray());
        var cmd = new Command("train", "Train a dictionary on a model's activations and save it with a card (defaults: a top-k CLT on the built-in model).")
        { model, offline, kind, activation, features, k, sparsity, steps, batch, lr, tokens, evalTokens, corpus, hook, input, seed, output, overwrite, checkpoint, activations, activationsFile, generate };
        var sizer = new SizerOptions();
        sizer.AddTo(cmd);
        cmd.SetAction(parse =>
        {
            string? file = parse.GetValue(activationsFile);
            string outDir = parse.GetValue(output) ?? (file is not null ? $"{Path.GetFileNameWithoutExtension(file)}-{parse.GetValue(kind)}"
                : $"{Path.GetFileNameWithoutExtension((parse.GetValue(model) ?? ToyPresets.DefaultName).TrimEnd('/', '\\'))}-{parse.GetValue(kind)}");
            if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any() && !parse.GetValue(overwrite))
                throw new MechanistException($"{outDir}: the folder exists and is not empty (pass --overwrite to replace it)");
            DictionaryTrainConfig Config(int dModel) => new(
                DictionaryNames.Kinds.Parse(parse.GetValue(kind)!), DictionaryNames.TrainActivations.Parse(parse.GetValue(activation)!),
                parse.GetValue(features) ?? 8 * dModel, parse.GetValue(k), parse.GetValue(sparsity),
                Steps: parse.GetValue(steps), BatchSize: parse.GetValue(batch), LearningRate: parse.GetValue(lr), Seed: parse.GetValue(seed));
            if (file is not null)
            {
                if (parse.GetValue(model) is not null || parse.GetValue(corpus) is not null || parse.GetValue(activations) is not null)
                    throw new MechanistException("--activations-file trains on the file alone: leave out --model, --corpus and --activations");
                return TrainOnFile(ctx, parse, sizer, file, Config, outDir, parse.GetValue(hook), parse.GetValue(checkpoint), parse.GetValue(overwrite));
            }
            using var m = ModelInput.Load(parse.GetValue(model), parse, parse.GetValue(offline), ctx);
            var config = Config(m.Config.DModel);
            var options = new DictionaryJobOptions(config, DictionaryNames.Inputs.Parse(parse.GetValue(input)!),
                parse.GetValue(hook), parse.GetValue(tokens), parse.GetValue(evalTokens));
            var (train, eval, description) = Texts(parse.GetValue(corpus), parse.GetValue(model), m, parse.GetValue(seed), ctx, parse.GetValue(generate));
            ctx.Err.WriteLine($"{m.Name}: {config.Kind}, {config.Activation}, {config.Features} features per layer; text: {description}");
            // (The texts are read afresh by each pilot; with --activations the pilots read a share of the stored rows.)
            if (sizer.Handle(parse, ctx, f => Mechanist.Runtime.Sizers.DictionaryTrain(m, train, eval, options, f, parse.GetValue(activations)))) return 0;
            var printer = new TrainLinePrinter(ctx.Err);
            using var trained = DictionaryJob.Run(m, train, eval, options, parse.GetValue(checkpoint),
                new Mechanist.Training.SyncProgress<string>(s => ctx.Err.WriteLine(s)), printer, harvestDir: parse.GetValue(activations));
            ctx.Err.WriteLine();
            string command = TrainCommandLine();
            DictionaryJob.Save(trained, outDir, command, parse.GetValue(overwrite));
            PrintEvaluation(ctx, trained.Evaluation);
            ctx.Out.WriteLine($"wrote {outDir} ({trained.TokensPerSecond:N0} tokens/s, {trained.FlopsPerSecond / 1e9:F1} GFLOP/s)");
            return 0;
        });
        return cmd;
    }

    /// <summary>An SAE trained on the vectors of a file (no model): the last tenth is held out for its card's evaluation.</summary>
    static int TrainOnFile(CliContext ctx, ParseResult parse, SizerOptions sizer, string file, Func<int, DictionaryTrainConfig> configFor, string outDir,
        string? hook, string? checkpoint, bool overwrite)
    {
        using var x = SyntheticData.ReadActivations(file);
        long n = x.shape[0], held = Math.Max(1, n / 10);
        var config = configFor((int)x.shape[1]);
        ctx.Err.WriteLine($"{file}: {n - held:N0} vectors of width {x.shape[1]} to train on, {held:N0} held out; {config.Kind}, {config.Activation}, {config.Features} features");
        if (sizer.Handle(parse, ctx, f => Mechanist.Runtime.Sizers.DictionaryTrainOnVectors(x, Path.GetFileName(file), config, hook, f))) return 0;
        using var trained = DictionaryJob.RunOnVectors(x, Path.GetFileName(file), config, hook, checkpoint, new TrainLinePrinter(ctx.Err));
        ctx.Err.WriteLine();
        DictionaryJob.Save(trained, outDir, TrainCommandLine(), overwrite);
        PrintEvaluation(ctx, trained.Evaluation);
        ctx.Out.WriteLine($"wrote {outDir} ({trained.TokensPerSecond:N0} vectors/s, {trained.FlopsPerSecond / 1e9:F1} GFLOP/s)");
        return 0;
    }

    /// <summary>This process's <c>dict train</c> command as a card's "reproduce" line.</summary>
    static string TrainCommandLine() =>
        "mechanist dict train " + string.Join(" ", Environment.GetCommandLineArgs().SkipWhile(a => a != "train").Skip(1).Select(a => a.Contains(' ') ? $"\"{a}\"" : a));

    static void PrintEvaluation(CliContext ctx, DictionaryEvaluationResult e)
    {
        var table = new Table().AddColumns("layer", "FVU", "MSE", "L0", "dead", "dense");
        foreach (var l in e.Layers) table.AddRow(l.Layer.ToString(), l.Fvu.ToString("F4"), l.Mse.ToString("G4"), l.L0.ToString("F1"), l.DeadFraction.ToString("P1"), l.DenseFraction.ToString("P1"));
        Render.Console(ctx).Write(table);
        if (e.Splice is { } s)
            ctx.Out.WriteLine($"spliced (no error terms), {s.Tokens:N0} tokens: loss {s.CleanLoss:F3} clean / {s.SplicedLoss:F3} spliced / {s.ZeroAblatedLoss:F3} zero-ablated; " +
                $"loss recovered {s.LossRecovered:P1}, KL {s.Kl:F4}, top-1 agreement {s.TopTokenAgreement:P1} ({s.ConfidentAgreement:P1} where the model's top token has p ≥ 0.5: {s.ConfidentShare:P0} of positions)");
    }


    Command Eval(CliContext ctx)
    {
        var model = CommonOptions.Model(required: false);
        var offline = CommonOptions.Offline();
        var dict = new Option<string>("--dict") { Description = "Dictionary folder (circuit-tracer or SAELens format), or a hub repository org/name[@revision].", Required = true };
        var corpus = new Option<string>("--corpus") { Description = "Evaluation texts (default: held-out toy corpus for built-in models, else texts the model writes)." };
        var tokens = new Option<long>("--tokens") { Description = "Tokens to evaluate on.", DefaultValueFactory = _ => 20_000 };
        var groundTruth = new Option<string>("--ground-truth") { Description = "Score an SAE against the features that made its data (a mechanist dict synth ground_truth.safetensors): MCC, feature recovery, explained variance, L0, dead latents, shrinkage, absorption. No model needed." };
        var cosine = new Option<double>("--cosine") { Description = "With --ground-truth: the decoder cosine at which a true feature counts as recovered.", DefaultValueFactory = _ => 0.9 };
        var suite = new Option<string[]>("--suite")
        {
            Description = $"SAEBench-style suites on the model ({string.Join(", ", EvaluationSuites.Names.Names)}; comma-separated or repeated): core gathers reconstruction, " +
                "cosine, density and loss recovered; probing fits probes on the best 1, 2, 5 latents for toy-world labels against one on the raw activations; absorption measures " +
                "feature absorption on toy-world word categories. Each writes eval/SUITE.json beside the dictionary (or in --report-dir) and its rows into the card (README.md).",
            AllowMultipleArgumentsPerToken = true,
        };
        var layer = new Option<int[]>("--layer") { Description = "With --suite probing/absorption: the dictionary layers to read (default: all).", AllowMultipleArgumentsPerToken = true };
        var seed = new Option<int>("--seed") { Description = "With --suite: seed of the probing texts and the held-out split.", DefaultValueFactory = _ => 0 };
        var reportDir = new Option<string>("--report-dir") { Description = "With --suite: where eval/SUITE.json and the card go (default: the dictionary's folder)." };
        var json = CommonOptions.Json();
        var cmd = new Command("eval", "Evaluate a dictionary: FVU, MSE, L0, dead and dense features, loss recovered, KL, next-token agreement; SAEBench-style suites (--suite); or against ground truth.")
            { model, offline, dict, corpus, tokens, groundTruth, cosine, suite, layer, seed, reportDir, json };
        cmd.SetAction(parse =>
        {
            if (parse.GetValue(suite) is { Length: > 0 } suiteNames)
            {
                if (parse.GetValue(groundTruth) is not null) throw new MechanistException("--suite evaluates on a model; --ground-truth on synthetic data: give one");
                var suites = suiteNames.SelectMany(n => n.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                    .Select(EvaluationSuites.Names.Parse).Distinct().ToArray();
                string dictDir = DictionaryInput.Resolve(parse.GetValue(dict)!, parse.GetValue(offline), ctx);
                string outDir = parse.GetValue(reportDir) ?? dictDir;
                if (!Directory.Exists(outDir)) throw new MechanistException($"--report-dir {outDir}: no such folder");
                using var sm = ModelInput.Load(parse.GetValue(model), parse, parse.GetValue(offline), ctx);
                using var sb = DictionaryBundle.Load(dictDir);
                sb.CheckFits(sm);
                int[]? layers = parse.GetValue(layer) is { Length: > 0 } ls ? ls : null;
                var reports = new Dictionary<string, object>();
                foreach (var s in suites)
                {
                    object report = s switch
                    {
                        EvaluationSuite.Core => EvaluationSuites.Core(sm, sb, CoreTexts(parse.GetValue(corpus), parse.GetValue(model), sm, ctx, parse.GetValue(tokens)), parse.GetValue(tokens)),
                        EvaluationSuite.Probing => EvaluationSuites.Probing(sm, sb, layers, parse.GetValue(seed)),
                        _ => EvaluationSuites.Absorption(sm, sb, layers, parse.GetValue(seed)),
                    };
                    EvaluationSuites.Save(outDir, s, report);
                    reports[EvaluationSuites.Names.Name(s)] = report;
                    if (!parse.GetValue(json))
                    {
                        ctx.Out.WriteLine(EvaluationSuites.Markdown(report));
                        ctx.Out.WriteLine($"wrote {Path.Combine(outDir, "eval", EvaluationSuites.Names.Name(s) + ".json")} and its rows in {Path.Combine(outDir, "README.md")}");
                        ctx.Out.WriteLine();
                    }
                }
                if (parse.GetValue(json)) ctx.Out.WriteLine(JsonSerializer.Serialize(reports, JsonFormat.Options));
                return 0;
            }
            if (parse.GetValue(layer) is { Length: > 0 } || parse.GetValue(reportDir) is not null) throw new MechanistException("--layer and --report-dir go with --suite");
            if (parse.GetValue(groundTruth) is { } gtPath)
            {
                if (parse.GetValue(model) is not null || parse.GetValue(corpus) is not null) throw new MechanistException("--ground-truth scores on the file's own samples: leave out --model and --corpus");
                double threshold = parse.GetValue(cosine);
                if (threshold is <= 0 or > 1) throw new MechanistException("--cosine must be in (0, 1]");
                using var saeBundle = DictionaryBundle.Load(DictionaryInput.Resolve(parse.GetValue(dict)!, parse.GetValue(offline), ctx));
                using var truth = SyntheticData.LoadGroundTruth(gtPath);
                var scores = GroundTruthEvaluation.Evaluate(saeBundle.Dictionary, truth, threshold);
                if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(scores, JsonFormat.Options)); return 0; }
                PrintGroundTruth(ctx, scores);
                return 0;
            }
            using var m = ModelInput.Load(parse.GetValue(model), parse, parse.GetValue(offline), ctx);
            using var bundle = DictionaryBundle.Load(DictionaryInput.Resolve(parse.GetValue(dict)!, parse.GetValue(offline), ctx));
            var (_, texts, _) = Texts(parse.GetValue(corpus), parse.GetValue(model), m, 0, ctx);
            var list = CorpusReader.TakeTokens(m.Tokenizer ?? throw new MechanistException($"{m.Name} has no tokenizer"), texts, parse.GetValue(tokens));
            bundle.CheckFits(m);
            var (inputs, targets) = bundle.HarvestHooks(m);
            using var held = ActivationHarvest.Collect(m, list, inputs, targets, parse.GetValue(tokens));
            var result = new DictionaryEvaluationResult(DictionaryEvaluation.Layers(bundle.Dictionary, held),
                DictionaryEvaluation.Spliced(m, list, bundle.Splice(ErrorTerm.None), targets, parse.GetValue(tokens)));
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(result, JsonFormat.Options)); return 0; }
            PrintEvaluation(ctx, result);
            return 0;
        });
        return cmd;
    }

    static List<string> CoreTexts(string? corpus, string? modelSpec, HookedTransformer m, CliContext ctx, long tokens)
    {
        var (_, texts, _) = Texts(corpus, modelSpec, m, 0, ctx);
        return CorpusReader.TakeTokens(m.Tokenizer ?? throw new MechanistException($"{m.Name} has no tokenizer"), texts, tokens);
    }

    static void PrintGroundTruth(CliContext ctx, GroundTruthMetrics g)
    {
        var table = new Table().AddColumns("measure", "value");
        table.AddRow("MCC (matched code correlation)", g.Mcc.ToString("F3"));
        table.AddRow($"recall (true features at cosine ≥ {g.CosineThreshold:0.##})", $"{g.Recall:P1} of {g.TrueFeatures}");
        table.AddRow("precision (live latents that are true features)", g.Precision.ToString("P1"));
        table.AddRow("F1", g.F1.ToString("F3"));
        table.AddRow("mean max cosine", g.MeanMaxCosine.ToString("F3"));
        table.AddRow("explained variance", g.ExplainedVariance.ToString("F4"));
        table.AddRow("L0 (true L0)", $"{g.L0:F2} ({g.TrueL0:F2})");
        table.AddRow("dead latents", $"{g.DeadFraction:P1} of {g.Latents}");
        table.AddRow("shrinkage ‖x̂‖/‖x‖", g.Shrinkage.ToString("F3"));
        if (g.Absorption.Length > 0) table.AddRow($"absorption (mean over {g.Absorption.Length} parent-child pairs)", g.MeanAbsorption.ToString("F3"));
        Render.Console(ctx).Write(table);
        foreach (var a in g.Absorption.OrderByDescending(a => a.Absorption).Take(5).Where(a => a.Absorption > 0))
            ctx.Out.WriteLine($"  parent {a.Parent} (latent {a.ParentLatent}) silent on {a.ChildMissRate:P0} of child {a.Child}'s {a.ChildSamples:N0} samples, {a.ParentOnlyMissRate:P0} without a child: absorption {a.Absorption:F3}");
        ctx.Out.WriteLine($"{g.Samples:N0} samples");
    }

    Command Synth(CliContext ctx)
    {
        var output = new Option<string>("--out") { Description = "Folder for activations.safetensors (training samples) and ground_truth.safetensors (held-out samples, their true codes and directions).", Required = true };
        var d = new Option<int>("--d") { Description = "Width of the activations.", DefaultValueFactory = _ => 64 };
        var features = new Option<int>("--features") { Description = "True features.", DefaultValueFactory = _ => 256 };
        var l0 = new Option<double>("--l0") { Description = "Expected true features per sample.", DefaultValueFactory = _ => 6 };
        var alpha = new Option<double>("--alpha") { Description = "Power-law exponent of the firing frequencies, p_i ∝ (i + 1)^-alpha.", DefaultValueFactory = _ => 0.5 };
        var magnitude = new Option<double>("--magnitude-std") { Description = "Spread of firing magnitudes around 1.", DefaultValueFactory = _ => 0.2 };
        var correlation = new Option<double>("--correlation") { Description = "Correlation of firing (one-factor Gaussian copula), in [0, 1).", DefaultValueFactory = _ => 0 };
        var parents = new Option<int>("--parents") { Description = "Hierarchy: parent features (the most frequent ones), each with --children children that fire only with it.", DefaultValueFactory = _ => 0 };
        var children = new Option<int>("--children") { Description = "Children per parent (at most one fires with its parent).", DefaultValueFactory = _ => 0 };
        var childProbability = new Option<double>("--child-probability") { Description = "When a parent fires, the chance that one of its children fires with it.", DefaultValueFactory = _ => 0.5 };
        var noise = new Option<double>("--noise") { Description = "Expected norm of the Gaussian noise added to each sample.", DefaultValueFactory = _ => 0 };
        var samples = new Option<long>("--samples") { Description = "Training samples.", DefaultValueFactory = _ => 100_000 };
        var evalSamples = new Option<long>("--eval-samples") { Description = "Held-out samples in the ground-truth file.", DefaultValueFactory = _ => 20_000 };
        var seed = new Option<int>("--seed") { Description = "Seed of the directions and samples.", DefaultValueFactory = _ => 0 };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace existing files." };
        var cmd = new Command("synth", "Write synthetic activations with known features (power-law frequencies, correlation, a parent-child hierarchy, noise) and their ground truth, for dict train --activations-file and dict eval --ground-truth.")
        { output, d, features, l0, alpha, magnitude, correlation, parents, children, childProbability, noise, samples, evalSamples, seed, overwrite };
        cmd.SetAction(parse =>
        {
            var config = new SyntheticConfig(parse.GetValue(d), parse.GetValue(features), parse.GetValue(l0), parse.GetValue(alpha), 1.0, parse.GetValue(magnitude),
                parse.GetValue(correlation), parse.GetValue(parents), parse.GetValue(children), parse.GetValue(childProbability), parse.GetValue(noise), parse.GetValue(seed));
            config.Check();
            long train = parse.GetValue(samples), held = parse.GetValue(evalSamples);
            if (train < 1 || held < 1) throw new MechanistException("--samples and --eval-samples must be at least 1");
            if ((double)Math.Max(train, held) * config.Features > 2e9) throw new MechanistException($"{Math.Max(train, held):N0} samples × {config.Features:N0} features of true codes is too many values for one file; use fewer samples");
            string dir = parse.GetValue(output)!;
            string activationsPath = Path.Combine(dir, "activations.safetensors"), truthPath = Path.Combine(dir, "ground_truth.safetensors");
            if (!parse.GetValue(overwrite) && (File.Exists(activationsPath) || File.Exists(truthPath))) throw new MechanistException($"{dir}: synthetic files exist (pass --overwrite to replace them)");
            Directory.CreateDirectory(dir);
            using (var data = SyntheticData.Generate(config, train, sampleSeed: 1)) data.SaveActivations(activationsPath);
            using var truth = SyntheticData.Generate(config, held, sampleSeed: 2);
            truth.SaveGroundTruth(truthPath);
            double trueL0 = truth.TrueL0();
            ctx.Out.WriteLine($"wrote {activationsPath} ({train:N0} x {config.DModel}) and {truthPath} ({held:N0} held-out samples, {config.Features} true features, " +
                $"true L0 {trueL0:F2}{(config.Parents > 0 ? $", {config.Hierarchy().Length} parent-child pairs" : "")})");
            return 0;
        });
        return cmd;
    }

    Command Info(CliContext ctx)
    {
        var dir = new Argument<string>("folder") { Description = "Dictionary folder, or a hub repository org/name[@revision]." };
        var json = CommonOptions.Json();
        var cmd = new Command("info", "Describe a dictionary folder: format, kind, layers, widths, activation, where it reads.") { dir, json };
        cmd.SetAction(parse =>
        {
            string folder = parse.GetValue(dir)!;
            using var bundle = DictionaryBundle.Load(DictionaryInput.Resolve(folder, offline: false, ctx));
            var info = bundle.Describe();
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(info, JsonFormat.Options)); return 0; }
            foreach (var p in info.GetType().GetProperties()) ctx.Out.WriteLine($"{p.Name,-12} {p.GetValue(info)}");
            return 0;
        });
        return cmd;
    }
}

/// <summary>Prints dictionary training progress as one updating line.</summary>
public sealed class TrainLinePrinter(TextWriter err) : IProgress<DictionaryTrainProgress>
{
    DateTime _last;

    /// <inheritdoc/>
    public void Report(DictionaryTrainProgress p)
    {
        if (p.Step != p.Steps && DateTime.UtcNow - _last < TimeSpan.FromMilliseconds(500)) return;
        _last = DateTime.UtcNow;
        err.Write($"\r  step {p.Step}/{p.Steps}  loss {p.Loss:F4}  FVU {p.Fvu:F4}  L0 {p.L0:F1}  dead {p.DeadFraction:P1}  {p.TokensPerSecond:N0} tokens/s   ");
    }
}
