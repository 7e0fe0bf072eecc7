using System.CommandLine;
using System.Text.Json;
using Mechanist.Dictionaries;
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
        kind.AcceptOnlyFromAmong(DictionaryNames.Kinds.Names);
        activation.AcceptOnlyFromAmong(DictionaryNames.TrainActivations.Names);
        input.AcceptOnlyFromAmong(DictionaryNames.Inputs.Names.Where(n => DictionaryNames.Inputs.TryParse(n, out var i) && TranscoderInputs.HasOwnHookPoint(i)).ToArray());
        var cmd = new Command("train", "Train a dictionary on a model's activations and save it with a card (defaults: a top-k CLT on the built-in model).")
        { model, offline, kind, activation, features, k, sparsity, steps, batch, lr, tokens, evalTokens, corpus, hook, input, seed, output, overwrite, checkpoint, activations, generate };
        cmd.SetAction(parse =>
        {
            string outDir = parse.GetValue(output) ?? $"{Path.GetFileNameWithoutExtension((parse.GetValue(model) ?? ToyPresets.DefaultName).TrimEnd('/', '\\'))}-{parse.GetValue(kind)}";
            if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any() && !parse.GetValue(overwrite))
                throw new MechanistException($"{outDir}: the folder exists and is not empty (pass --overwrite to replace it)");
            using var m = ModelInput.Load(parse.GetValue(model), parse, parse.GetValue(offline), ctx);
            var config = new DictionaryTrainConfig(
                DictionaryNames.Kinds.Parse(parse.GetValue(kind)!), DictionaryNames.TrainActivations.Parse(parse.GetValue(activation)!),
                parse.GetValue(features) ?? 8 * m.Config.DModel, parse.GetValue(k), parse.GetValue(sparsity),
                Steps: parse.GetValue(steps), BatchSize: parse.GetValue(batch), LearningRate: parse.GetValue(lr), Seed: parse.GetValue(seed));
            var options = new DictionaryJobOptions(config, DictionaryNames.Inputs.Parse(parse.GetValue(input)!),
                parse.GetValue(hook), parse.GetValue(tokens), parse.GetValue(evalTokens));
            var (train, eval, description) = Texts(parse.GetValue(corpus), parse.GetValue(model), m, parse.GetValue(seed), ctx, parse.GetValue(generate));
            ctx.Err.WriteLine($"{m.Name}: {config.Kind}, {config.Activation}, {config.Features} features per layer; text: {description}");
            var printer = new TrainLinePrinter(ctx.Err);
            using var trained = DictionaryJob.Run(m, train, eval, options, parse.GetValue(checkpoint),
                new Mechanist.Training.SyncProgress<string>(s => ctx.Err.WriteLine(s)), printer, harvestDir: parse.GetValue(activations));
            ctx.Err.WriteLine();
            string command = "mechanist dict train " + string.Join(" ", Environment.GetCommandLineArgs().SkipWhile(a => a != "train").Skip(1).Select(a => a.Contains(' ') ? $"\"{a}\"" : a));
            DictionaryJob.Save(trained, outDir, command, parse.GetValue(overwrite));
            PrintEvaluation(ctx, trained.Evaluation);
            ctx.Out.WriteLine($"wrote {outDir} ({trained.TokensPerSecond:N0} tokens/s, {trained.FlopsPerSecond / 1e9:F1} GFLOP/s)");
            return 0;
        });
        return cmd;
    }

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
        var json = CommonOptions.Json();
        var cmd = new Command("eval", "Evaluate a dictionary: FVU, MSE, L0, dead and dense features, loss recovered, KL, next-token agreement.") { model, offline, dict, corpus, tokens, json };
        cmd.SetAction(parse =>
        {
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
