using Mechanist.Attribution;
using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Formats;
using Mechanist.Dictionaries.Training;
using Mechanist.Features;
using Mechanist.Microscope;
using Mechanist.Models;
using Mechanist.Runtime;
using Mechanist.Tensors;
using Mechanist.Toy;
using static TorchSharp.torch;

namespace Mechanist.Cli.Bench;

/// <summary>The sizer against what each job then measures.</summary>
public sealed partial class BenchCommand
{
    /// <summary>
    /// Each job the sizer covers, on the built-in model at sizes larger than the tests', plus the research-sized attribution graph:
    /// the estimate (pilots of at most a quarter of the job, as <c>--estimate</c> uses on jobs too small for its 3 %), then the job
    /// itself in the same process, measured the same way; the error of each prediction.
    /// </summary>
    static IEnumerable<Row> SizerRows(string dir)
    {
        const double fraction = 0.25;
        using var toy = HookedTransformer.Load(BuiltInModels.DefaultPath());
        string clt = Path.Combine(BuiltInModels.DefaultPath(), "clt");
        // A signed whole percentage ("-0.3 %" is "0%", not "-+0%" as a two-section format writes it).
        static string Percent(double error) => Math.Round(error * 100) is var p && p == 0 ? "0%" : $"{p:+0;-0}%";
        Row Compare(string name, JobEstimate? e, (SizerPilot Median, int Runs) job)
        {
            var measured = job.Median;
            string times = job.Runs == 1 ? "" : $" (median of {job.Runs} runs)";
            if (e is null) return new Row(name, measured.Seconds * 1000, measured.Seconds * 1000, Note: "too small to estimate");
            double timeError = e.Seconds / measured.Seconds - 1, peakError = (double)e.PeakBytes / measured.PeakBytes - 1;
            double pilotSeconds = e.Pilots.Sum(p => p.Seconds);
            return new Row(name, measured.Seconds * 1000, measured.Seconds * 1000,
                Note: $"{e.Units:N0} {e.Unit}: predicted {e.Seconds:F1} s / measured {measured.Seconds:F1} s{times} (**{Percent(timeError)}**), peak predicted {e.PeakBytes / 1e6:N0} MB / " +
                      $"measured {measured.PeakBytes / 1e6:N0} MB (**{Percent(peakError)}**); {e.Pilots.Count} pilots up to {e.Pilots.Max(p => p.Units):N0} {e.PilotUnit ?? e.Unit}, {pilotSeconds:F1} s");
        }

        // The job as measured: one run, or where it takes under 15 s (where one of this VM's slow spells moves a single run most) the
        // median of three, each writing where the others did not (a resumable job would find its output done).
        (SizerPilot Median, int Runs) Job(double units, Action<int> run)
        {
            var first = JobSizer.Measure(units, () => run(0));
            if (first.Seconds >= 15) return (first, 1);
            var runs = new List<SizerPilot> { first, JobSizer.Measure(units, () => run(1)), JobSizer.Measure(units, () => run(2)) };
            return (new SizerPilot(units, runs.Select(r => r.Seconds).Order().ElementAt(1), runs.Select(r => r.PeakBytes).Order().ElementAt(1)), 3);
        }

        var texts = new ToyCorpus(1000).Lines(60_000).ToList();
        var (ins, outs) = DictionaryJob.Hooks(toy, DictionaryKind.Clt, TranscoderInput.Resid, null);
        var harvest = new HarvestOptions(ins.Concat(outs).ToArray(), 400_000);
        var he = Sizers.Harvest(toy, texts, harvest, fraction);
        yield return Compare("sizer: harvest (toy-4l)", he, Job(harvest.MaxTokens, k => HarvestJob.Run(toy, texts, harvest, Path.Combine(dir, k == 0 ? "harvest" : $"harvest{k}"))));

        using (var bundle = CircuitTracerFormat.Load(clt))
        using (var all = toy.ToTokens(string.Join(" ", new ToyCorpus(5).Lines(12))))
        using (var tokens = all[.., ..60])
        {
            var options = new AttributionOptions(BatchSize: 4, MaxFeatureNodes: 4000);
            var te = Sizers.Trace(toy, bundle, tokens, options, new GraphQkOptions(), fraction);
            yield return Compare("sizer: trace (toy-4l, 60 tokens)", te, Job(te?.Units ?? 0, _ => GraphTrace.Write(toy, bundle, tokens, Path.Combine(dir, "g.json"), options, qk: new GraphQkOptions())));
            // trace --prompts: prompts of three lengths, one graph each.
            var prompts = new[] { 30, 60, 45 }.Select(n => all[.., ..n]).ToList();
            var be = Sizers.TraceBatch(toy, bundle, prompts, options, new GraphQkOptions(), fraction);
            // As the CLI runs it: TraceBatch.Run (a manifest, one graph file per prompt, the managed heap collected between graphs).
            var names = new[] { "30", "60", "45" };
            yield return Compare("sizer: trace --prompts (toy-4l, 30 / 60 / 45 tokens)", be, Job(prompts.Count, run =>
                TraceBatch.Run(names, Path.Combine(dir, $"batch{run}"), 0, 1, toy.Name, "clt",
                    (k, path) => GraphTrace.Write(toy, bundle, prompts[k], path, options, qk: new GraphQkOptions()))));
            foreach (var p in prompts) p.Dispose();
        }

        using (var source = FeatureSource.Load(toy, clt))
        {
            var corpus = new ToyCorpus(2000).Lines(20_000).ToList();
            var options = new FeatureBuildOptions(new FeatureSketchSettings(20, 4, 12, 4));
            var fe = Sizers.FeatureBuild(toy, source, clt, () => corpus, options, fraction);
            yield return Compare("sizer: features build (toy-4l)", fe, Job(corpus.Count, k => FeatureBuild.Run(toy, source, clt, () => corpus, options, Path.Combine(dir, $"features{k}"))));
        }

        {
            var train = new ToyCorpus(3000).Lines(40_000).ToList();
            var eval = new ToyCorpus(3001).Lines(2_000).ToList();
            var options = new DictionaryJobOptions(new DictionaryTrainConfig(DictionaryKind.Clt, TrainActivation.TopK, 1024, Steps: 1000, BatchSize: 1024), TrainTokens: 200_000, EvalTokens: 20_000);
            var de = Sizers.DictionaryTrain(toy, train, eval, options, fraction);
            yield return Compare("sizer: dict train (toy-4l CLT)", de, Job(options.Config.Steps, _ => DictionaryJob.Run(toy, train, eval, options).Dispose()));
            // The same CLT on the harvest above (stored activations: dict train --activations), fewer steps.
            HarvestJob.Merge(Path.Combine(dir, "harvest"));
            var stored = options with { Config = options.Config with { Steps = 300 } };
            var se = Sizers.DictionaryTrain(toy, train, eval, stored, fraction, harvestDir: Path.Combine(dir, "harvest"));
            yield return Compare("sizer: dict train --activations (toy-4l CLT, stored rows)", se,
                Job(stored.Config.Steps, _ => DictionaryJob.Run(toy, train, eval, stored, harvestDir: Path.Combine(dir, "harvest")).Dispose()));
        }

        {
            // An SAE on vectors alone (dict train --activations-file): dict synth's defaults at 200,000 samples.
            using var data = Dictionaries.Evaluation.SyntheticData.Generate(new Dictionaries.Evaluation.SyntheticConfig(Seed: 0), 200_000, sampleSeed: 1);
            var config = new DictionaryTrainConfig(DictionaryKind.Sae, TrainActivation.TopK, 1024, 8, Steps: 3000, BatchSize: 1024);
            var ve = Sizers.DictionaryTrainOnVectors(data.Activations, "synthetic", config, hook: null, fraction);
            yield return Compare("sizer: dict train --activations-file (SAE, 1,024 latents on 200,000 vectors of 64)", ve,
                Job(config.Steps, _ => DictionaryJob.RunOnVectors(data.Activations, "synthetic", config).Dispose()));
        }

        {
            var mtexts = new ToyCorpus(4000).Lines(600).ToList();
            var options = new MicroscopeOptions(RemovalLengths: Array.Empty<int>());
            var me = Sizers.Microscope(toy, mtexts, options, fraction);
            yield return Compare("sizer: microscope (toy-4l)", me, Job(mtexts.Count, _ => MicroscopeRunner.Run(toy, mtexts, options)));
            // microscope --out: a corpus streamed into sums, then the merged report.
            var corpusTexts = new ToyCorpus(4100).Lines(6000).ToList();
            var ce = Sizers.MicroscopeCorpus(toy, corpusTexts, includeBos: false, merges: true, fraction: fraction);
            yield return Compare("sizer: microscope --out (toy-4l)", ce, Job(corpusTexts.Count, k =>
            {
                MicroscopeShards.Run(toy, () => corpusTexts, 0, 1, Path.Combine(dir, $"microscope{k}"));
                MicroscopeShards.Merge(toy, Path.Combine(dir, $"microscope{k}"));
            }));
        }

        // The research-sized graph of the attribution suite (64 tokens, 1,000 features of a 12 x 8,192 CLT), its attention detail included.
        var cfg = RandomModels.Gpt2SmallConfig();
        using var model = RandomModels.Create(cfg, seed: 0);
        int L = cfg.NLayers, d = cfg.DModel;
        manual_seed(1);
        var big = new CrossLayerTranscoder(
            Enumerable.Range(0, L).Select(_ => randn(8192, d).Div(Math.Sqrt(d))).ToArray(), Enumerable.Range(0, L).Select(_ => zeros(8192)).ToArray(),
            Enumerable.Range(0, L).Select(i => randn(8192, L - i, d).Mul(0.02f)).ToArray(), Enumerable.Range(0, L).Select(_ => zeros(d)).ToArray(), DictionaryActivation.TopK, topK: 64);
        using var bigBundle = new TranscoderBundle(big, TranscoderInput.Resid, "gpt2-shaped");
        using var promptGenerator = new Generator(64UL);
        using var prompt = randint(0, cfg.VocabSize, new long[] { 1, 64 }, generator: promptGenerator);
        var research = new AttributionOptions(MaxLogits: 5, BatchSize: 32, MaxFeatureNodes: 1000);
        var re = Sizers.Trace(model, bigBundle, prompt, research, new GraphQkOptions(), fraction);
        yield return Compare("sizer: trace (GPT-2-small-shaped, 64 tokens, 1,000 features)", re,
            Job(re?.Units ?? 0, _ => GraphTrace.Write(model, bigBundle, prompt, Path.Combine(dir, "big.json"), research, qk: new GraphQkOptions())));
    }
}
