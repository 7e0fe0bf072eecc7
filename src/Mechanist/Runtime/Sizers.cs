using Mechanist.Attribution;
using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Formats;
using Mechanist.Dictionaries.Training;
using Mechanist.Features;
using Mechanist.Microscope;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Runtime;

/// <summary>
/// The sizer of each corpus- or graph-scale job: pilots of the job itself at reduced sizes (written to a temporary folder that is
/// removed), extrapolated by <see cref="JobSizer"/>. Null where the job is too small to pilot below its own size.
/// </summary>
public static class Sizers
{
    /// <summary>The share of a job its largest pilot may run before a large job starts (the pilots together run about three times it).</summary>
    public const double PilotFraction = 0.03;

    /// <summary>
    /// <c>trace</c> of one prompt: rows are the visited features (the budget, or every active feature); pilots run smaller budgets.
    /// Rows differ in cost: one runs back through the layers up to its feature's and the positions up to its own, and reads the
    /// columns of the active features there; a budget visits the most influential features first, which sit late and high (on the
    /// built-in model the first 256 cost about twice the average of 2,000). So time is read per unit of a row's work
    /// (<see cref="RowWork"/>): the pilots' visited rows are known; the job's further rows start at the work of the last pilots'
    /// marginal rows and move linearly towards what makes all the active features' known total. Beyond the pilots' working set (one
    /// pass's gradients, the kept decoder rows) the rows grow: their edges (per row, more the more rows are visited: see
    /// <see cref="BytesPerEdge"/> for what each holds) and the hook_z gradients kept for the attention detail (each up to its target's
    /// position: as far as the pilots' rows reach, then as the unvisited features do on average), up to their budget.
    /// </summary>
    public static JobEstimate? Trace(HookedTransformer model, TranscoderBundle? bundle, Tensor tokens, AttributionOptions options, GraphQkOptions? qk, double fraction = PilotFraction)
    {
        if (bundle is null) return null;
        var c = model.Config;
        int L = c.NLayers, T = (int)tokens.shape[1];
        var (work, active, allWork) = RowWork.Of(model, bundle, tokens);
        double rows = Math.Min(options.MaxFeatureNodes ?? active, active);
        int batch = Math.Max(1, options.BatchSize);
        if (JobSizer.PilotSizes(rows, fraction, batch) is not var (small, largest)) return null;
        // A row's hook_z gradients are kept up to its target's position (a logit's: every position). The pilots' rows reach further
        // than the rest (the most influential features sit late: on toy-4l at 60 tokens the first 1,000 rows reach 47.5 positions on
        // average, all 4,000 32.5): rows beyond the largest pilot reach what the unvisited active features do on average.
        double zPosition = 4.0 * L * c.NHeads * c.DHead;
        (double Visited, double Reach) pilotReach = (0, 0);                     // the largest pilot's visited features
        double logitRows = 0;
        double Reached(double r)
        {
            var (s, sum) = pilotReach;
            double features = r <= s || s >= active ? (s > 0 ? sum * r / s : r * work.MeanReach)
                : sum + (r - s) * Math.Max(1, (work.MeanReach * active - sum) / (active - s));
            return features + logitRows * T;
        }
        // A row's edges reach the visited features below it as well as the error and token nodes, so edges per row grow with the rows
        // visited (on toy-4l at 60 tokens: 206 a row at 512 rows, 753 at 4,000): e(r) = a + b·r through the two largest pilots.
        var pilotEdges = new SortedDictionary<double, double>();
        double EdgesPerRow(double r)
        {
            if (pilotEdges.Count == 0) return 0;
            var sizes = pilotEdges.Keys.ToArray();
            double s2 = sizes[^1], e2 = pilotEdges[s2];
            double slope = sizes.Length > 1 ? Math.Max(0, (e2 - pilotEdges[sizes[^2]]) / (s2 - sizes[^2])) : 0;
            return Math.Max(0, e2 + slope * (r - s2));
        }
        // Per pilot size: the work of its rows, and the work of the features it visited (for the rows beyond it).
        var pilotWork = new Dictionary<double, (double Rows, double Features, int Visited)>();
        double Held(double r) => r * EdgesPerRow(r) * BytesPerEdge + (qk is null ? 0 : Math.Min(Reached(r) * zPosition, qk.GradientBudgetMb * (double)(1L << 20)));
        double Work(double size)
        {
            if (pilotWork.TryGetValue(size, out var w)) return w.Rows;
            // The job: the largest pilot's rows, then the next ones. Their work starts where the last pilots' marginal rows were and
            // falls (or rises) linearly with the visiting order so that all the active features together have their known total:
            // a budget just above the pilots costs as they did per row, one that visits every feature costs exactly that total.
            var ordered = pilotWork.OrderBy(kv => kv.Key).Select(kv => kv.Value).ToList();
            var last = ordered[^1];
            if (active <= last.Visited) return last.Rows;
            var before = ordered.Count > 1 ? ordered[^2] : (Rows: 0.0, Features: 0.0, Visited: 0);
            double remaining = active - last.Visited;
            double marginal = last.Visited > before.Visited ? (last.Features - before.Features) / (last.Visited - before.Visited) : (allWork - last.Features) / remaining;
            double restMean = (allWork - last.Features) / remaining, end = Math.Max(0, 2 * restMean - marginal);
            double extra = Math.Clamp(size - last.Visited, 0, remaining);
            return last.Rows + extra * (marginal + (end - marginal) * extra / remaining / 2);
        }
        // Pruning and scoring run over every edge, and edges grow faster than the rows (above): pilots far smaller than the job show
        // little of it (0.3 s of a 4,000-row toy trace's 4.5). Timed in the pilots per edge, taken out of their times and added back
        // at the job's size.
        var pilotPruning = new SortedDictionary<double, (double Seconds, long Edges)>();
        double PruneSeconds(double size)
        {
            long edges = pilotPruning.Values.Sum(p => p.Edges);
            return edges == 0 ? 0 : pilotPruning.Values.Sum(p => p.Seconds) / edges * (size + logitRows) * EdgesPerRow(size);
        }
        return WithTemp(dir => JobSizer.Estimate("trace", "feature rows", rows, small, largest, s =>
            {
                var summary = GraphTrace.Write(model, bundle, tokens, Path.Combine(dir, "pilot.json"), options with { MaxFeatureNodes = (int)s, Progress = null }, qk: qk,
                    inspect: (graph, _) =>
                    {
                        double features = 0, logits = 0, reach = 0; int visited = 0;
                        foreach (var n in graph.Nodes)
                            if (n.Kind == NodeKind.Feature) { features += work.Feature(n.Layer, n.Position); visited++; reach += n.Position + 1; }
                            else if (n.Kind == NodeKind.Logit) logits += work.Logit();
                        pilotWork[s] = (features + logits, features, visited);
                        if (visited > pilotReach.Visited) pilotReach = (visited, reach);
                    });
                pilotEdges[s] = summary.Edges / (s + summary.LogitTargets);
                pilotPruning[s] = (summary.PruneSeconds, summary.Edges);
                logitRows = summary.LogitTargets;
            }, Held, new[] { "--batch", "--max-feature-nodes", "--dtype", "--no-qk" }, modelledSeconds: PruneSeconds, effort: Work));
    }

    /// <summary>
    /// <c>trace --prompts</c>: one graph per prompt of the shard. The longest prompt is piloted as <see cref="Trace"/> does (it has the
    /// most active features and the costliest rows: the peak), and so is the shortest; every other prompt's time is read on the line
    /// through those two by the work of its rows (their number and mean work, from one forward of each prompt that counts its active
    /// features). Those are the times of graphs traced each in a fresh process; the prompts after the first run in memory the process
    /// has already touched, which on a machine with dear page faults is much faster (the built-in model's 45-token graph: 2.5 s fresh,
    /// 1.45 s after another). That factor is measured too: the shortest prompt's largest pilot, fresh and then again right after the
    /// longest prompt's.
    /// </summary>
    public static JobEstimate? TraceBatch(HookedTransformer model, TranscoderBundle? bundle, IReadOnlyList<Tensor> prompts, AttributionOptions options, GraphQkOptions? qk, double fraction = PilotFraction)
    {
        if (bundle is null || prompts.Count == 0) return null;
        var longest = prompts.MaxBy(p => p.shape[1])!;
        if (Trace(model, bundle, longest, options, qk, fraction) is not { } one) return null;
        double Work(Tensor tokens)
        {
            var (work, active, allWork) = RowWork.Of(model, bundle, tokens);
            double rows = Math.Min(options.MaxFeatureNodes ?? active, active);
            return (active == 0 ? 0 : rows * allWork / active) + Math.Max(1, options.Targets?.Count ?? options.MaxLogits) * work.Logit();
        }
        // A prompt's time is not its work's share of the longest's: each row also pays a pass's fixed costs (on the built-in model at
        // batches of 2, a 24-token prompt's 1,500 rows took 0.45 s against 0.6 s for 60 tokens, at a quarter of the work). The shortest
        // prompt is piloted too, and a prompt's time read on the line through the two by its work.
        var shortest = prompts.MinBy(p => p.shape[1])!;
        var low = shortest.shape[1] < longest.shape[1] ? Trace(model, bundle, shortest, options, qk, fraction) : null;
        var works = prompts.ToDictionary(p => p, Work);   // Tensor keeps reference equality
        double wLong = works[longest], wShort = works[shortest];
        double Seconds(Tensor p)
        {
            if (ReferenceEquals(p, longest)) return one.Seconds;
            if (low is null || wLong <= wShort) return one.Seconds * works[p] / wLong;
            if (ReferenceEquals(p, shortest)) return low.Seconds;
            return Math.Max(0, low.Seconds + (one.Seconds - low.Seconds) * (works[p] - wShort) / (wLong - wShort));
        }
        var largestPilot = one.Pilots.MaxBy(p => p.Units)!;
        var (warm, heldOver) = prompts.Count > 1 ? WarmFactor(model, bundle, shortest, longest, options with { MaxFeatureNodes = (int)largestPilot.Units }, qk) : (1, 0);
        double seconds = prompts.Select((p, i) => Seconds(p) * (i == 0 ? 1 : warm)).Sum();
        // Where a shorter prompt runs before the longest, the longest's graph peaks above itself alone (the heap keeps what the
        // earlier one freed, in pieces): the share measured at the pilots' size, applied to what the longest's graph adds over the model.
        double share = Math.Max(1, (double)(heldOver - one.ResidentBytes) / Math.Max(1, largestPilot.PeakBytes - one.ResidentBytes));
        bool longestFirst = prompts[0].shape[1] == longest.shape[1];
        long peak = one.ResidentBytes + (long)((one.PeakBytes - one.ResidentBytes) * (longestFirst ? 1 : share));
        return one with { Job = "trace --prompts", Unit = "prompts", Units = prompts.Count, Seconds = seconds, PeakBytes = peak, PilotUnit = $"feature rows of the longest prompt ({longest.shape[1]} tokens)" };
    }

    /// <summary>
    /// How much faster a graph runs after another than in a fresh process: <paramref name="shortest"/>'s graph timed fresh (the freed
    /// memory given back first), then <paramref name="longest"/>'s traced, then <paramref name="shortest"/>'s timed again; at most 1.
    /// Also the process's peak over the three, one after another as <c>trace --prompts</c> runs them: the heap keeps what the shorter
    /// graph freed, in pieces the longer one after it cannot all reuse.
    /// </summary>
    static (double Factor, long Peak) WarmFactor(HookedTransformer model, TranscoderBundle bundle, Tensor shortest, Tensor longest, AttributionOptions options, GraphQkOptions? qk)
    {
        var run = options with { Progress = null };
        return WithTemp(dir =>
        {
            string path = Path.Combine(dir, "warm.json");
            ProcessMemory.Settle();
            ProcessMemory.ResetPeak();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            GraphTrace.Write(model, bundle, shortest, path, run, qk: qk);
            double fresh = clock.Elapsed.TotalSeconds;
            GC.Collect();                                                     // between graphs, as TraceBatch.Run collects
            GraphTrace.Write(model, bundle, longest, path, run, qk: qk);
            GC.Collect();
            clock.Restart();
            GraphTrace.Write(model, bundle, shortest, path, run, qk: qk);
            double again = clock.Elapsed.TotalSeconds;
            return (fresh > 0 ? Math.Min(1, again / fresh) : 1, JobSizer.PeakSinceReset());
        });
    }

    /// <summary>
    /// The work of one attribution row, in FLOPs of what it runs (the attribution bench's floor): back through every attention layer up
    /// to its target's, two d × d products per position up to its own and the T × T mixing, then the dot products with the decoder
    /// rows of the active features at those positions, once per layer each writes to below the target.
    /// </summary>
    sealed class RowWork(HookedTransformer model, ICrossLayerDictionary dictionary, long[] activeAt, int T)
    {
        /// <summary>A prompt's row work, its active features and their rows' total work (one forward of the replacement model).</summary>
        public static (RowWork Work, long Active, double AllWork) Of(HookedTransformer model, TranscoderBundle bundle, Tensor tokens)
        {
            int L = model.Config.NLayers, T = (int)tokens.shape[1];
            long[] at;                                                  // active features of each (layer, position), row-major
            using (var rm = ReplacementModel.Build(model, bundle.Dictionary, bundle.Input, tokens))
            using (var counts = rm.Activations.count_nonzero(new long[] { -1 }))
                at = Tensors.TensorMemory.ToArray<long>(counts);
            var work = new RowWork(model, bundle.Dictionary, at, T);
            double all = 0;
            for (int l = 0; l < L; l++) for (int p = 0; p < T; p++) all += at[l * T + p] * work.Feature(l, p);
            return (work, at.Sum(), all);
        }

        readonly int _layers = model.Config.NLayers;
        readonly double _d = model.Config.DModel;
        readonly Dictionary<(int, int), double> _memo = new();
        // Active features of each layer at positions up to and including each one (prefix sums of activeAt, row-major).
        readonly long[] _upTo = PrefixSums(activeAt, T);

        public double Feature(int layer, int position) => Row(position, layer);

        /// <summary>The mean over the active features of the positions a row of theirs reaches (its own and those before it).</summary>
        public double MeanReach { get; } = activeAt.Sum() is var n && n > 0 ? activeAt.Select((count, i) => count * (i % T + 1.0)).Sum() / n : T;

        public double Logit() => Row(T - 1, _layers);

        /// <summary>A row at <paramref name="position"/> reading the MLP outputs below layer <paramref name="readsBelow"/> (the number of layers for a logit).</summary>
        double Row(int position, int readsBelow)
        {
            if (_memo.TryGetValue((readsBelow, position), out var known)) return known;
            double p = position + 1, flops = 0;
            // Its backward runs through the attention of every layer up to its own (a logit's: all of them).
            for (int m = 0; m <= Math.Min(readsBelow, _layers - 1); m++) flops += p * 4 * _d * _d + 2 * p * p * _d;
            for (int m = 0; m < readsBelow; m++)
            {
                int writes = 0;
                for (int j = m; j < readsBelow; j++) if (dictionary.WritesTo(m, j)) writes++;
                flops += 2 * _d * _upTo[m * T + position] * writes;
            }
            return _memo[(readsBelow, position)] = flops;
        }

        static long[] PrefixSums(long[] perPosition, int T)
        {
            var sums = new long[perPosition.Length];
            for (int i = 0; i < perPosition.Length; i++) sums[i] = perPosition[i] + (i % T == 0 ? 0 : sums[i - 1]);
            return sums;
        }
    }

    /// <summary>
    /// Bytes an attribution edge holds at the trace's peak: its value and column in the built graph (8) while pruning holds its
    /// normalised weight and its score (8 each) and whether it is kept (1), plus what the managed heap keeps beyond those. Measured on
    /// toy-4l at 60 tokens (no attention detail): 2.76M edges more than a 1,000-row trace took 57-83 MB more (20-30 bytes an edge).
    /// </summary>
    const double BytesPerEdge = 25;

    /// <summary>Widths of hook points in bytes per token (float32).</summary>
    static double BytesPerToken(HookedTransformer model, IEnumerable<string> hooks) =>
        hooks.Sum(h => 4.0 * (model.HookPoints.Points.FirstOrDefault(p => p.Name == h)?.Shape.Dims.Where(d => d > 0).Aggregate(1L, (a, b) => a * b) ?? model.Config.DModel));

    /// <summary>
    /// <c>harvest</c>: tokens up to the shard's budget; its chunk buffer grows with them up to a chunk: the float32 rows, and their
    /// shuffled copy as written (float32, or bf16 with <c>--bf16</c>).
    /// </summary>
    public static JobEstimate? Harvest(HookedTransformer model, IReadOnlyList<string> texts, HarvestOptions o, double fraction = PilotFraction)
    {
        // The shard's tokens, up to its budget (a short corpus ends the job first).
        var tokenizer = model.Tokenizer ?? throw new MechanistException("harvest needs the model's tokenizer");
        long counted = 0;
        for (int i = o.ShardIndex; i < texts.Count && counted < o.MaxTokens; i += o.ShardCount) counted += Math.Max(0, tokenizer.Encode(texts[i]).Length - 1);
        double tokens = Math.Min(o.MaxTokens, counted);
        if (JobSizer.PilotSizes(tokens, fraction, 1024) is not var (small, largest)) return null;
        double perToken = BytesPerToken(model, o.Hooks) * (o.BFloat16 ? 1.5 : 2);
        return WithTemp(dir =>
        {
            int run = 0;
            return JobSizer.Estimate("harvest", "tokens", tokens, small, largest,
                s => HarvestJob.Run(model, texts, o with { MaxTokens = (long)s }, Path.Combine(dir, $"pilot{run++}")),
                u => Math.Min(u, o.ChunkTokens) * perToken, new[] { "--chunk-tokens", "--hooks", "--bf16" });
        });
    }

    /// <summary>
    /// <c>features build</c>: texts of the shard; pilots read its first texts. Its sketches are bounded per feature; nothing else grows.
    /// </summary>
    public static JobEstimate? FeatureBuild(HookedTransformer model, FeatureSource source, string dictionary, Func<IEnumerable<string>> corpus, FeatureBuildOptions o, double fraction = PilotFraction)
    {
        var plan = new Cluster.ShardPlan(o.ShardIndex, o.ShardCount);
        double texts = plan.Select(corpus()).LongCount();
        if (JobSizer.PilotSizes(texts, fraction, Math.Min(o.BatchTexts, 32)) is not var (small, largest)) return null;
        return WithTemp(dir =>
        {
            int run = 0;
            return JobSizer.Estimate("features build", "texts", texts, small, largest,
                s => Features.FeatureBuild.Run(model, source, dictionary, () => plan.Select(corpus()).Select(x => x.Item).Take((int)s),
                    o with { ShardIndex = 0, ShardCount = 1 }, Path.Combine(dir, $"pilot{run++}")),
                _ => 0, new[] { "--batch-texts", "--top-k", "--max-texts" });
        });
    }

    /// <summary>
    /// <c>dict train</c>: steps; a pilot of s steps runs that share of the job's steps, harvest and evaluation. Its memory grows with
    /// the harvested rows (modelled from the hooks' widths); the training step's own working set is the pilots'. With
    /// <paramref name="harvestDir"/> (stored activations) the pilots read that share of its rows instead of harvesting them.
    /// </summary>
    public static JobEstimate? DictionaryTrain(HookedTransformer model, IEnumerable<string> train, IEnumerable<string> eval, DictionaryJobOptions o, double fraction = PilotFraction,
        string? harvestDir = null)
    {
        var c = o.Config;
        // The smallest pilot: 8 steps, and 4 batches of tokens.
        double small = Math.Ceiling(Math.Max(8, 4.0 * c.BatchSize / o.TrainTokens * c.Steps));
        if (2 * small > fraction * c.Steps) return null;
        // What grows with the job: the harvested rows (float32, per token every input and, when they differ, every target), each
        // epoch's order (int64) and the scales' norms, for the train and held-out tokens, in proportion to the steps as the pilots run them.
        var (inputs, targets) = DictionaryJob.Hooks(model, c.Kind, o.Input, o.SaeHook);
        double perToken = BytesPerToken(model, inputs) + (inputs.SequenceEqual(targets) ? 0 : BytesPerToken(model, targets)) + 8 + 4 * inputs.Length;
        double Held(double steps) => perToken * (o.TrainTokens + o.EvalTokens) * steps / c.Steps;
        return JobSizer.Estimate("dict train", "steps", c.Steps, small, fraction * c.Steps, steps =>
            {
                double share = steps / c.Steps;
                DictionaryJob.Run(model, train, eval, o with
                {
                    // Scaled as the job is, dead features (and TopK's auxiliary loss, a second decode) appear at the same share of the steps.
                    Config = c with { Steps = (int)steps, WarmupSteps = Math.Max(1, (int)(c.WarmupSteps * share)), DeadAfterTokens = Math.Max(c.BatchSize, (long)(c.DeadAfterTokens * share)) },
                    TrainTokens = Math.Max(c.BatchSize, (long)(o.TrainTokens * share)), EvalTokens = Math.Max(64, (long)(o.EvalTokens * share)),
                }, harvestDir: harvestDir).Dispose();
            },
            Held, new[] { "--tokens", "--batch", "--features" });
    }

    /// <summary>
    /// <c>dict train --activations-file</c>: an SAE on vectors already read (<paramref name="vectors"/>, resident before the pilots and
    /// the job alike). Pilots train fewer steps on the same vectors (dead features scaled with the steps, as for a model's activations)
    /// and evaluate on the same held-out tenth; nothing the job holds grows with its steps.
    /// </summary>
    public static JobEstimate? DictionaryTrainOnVectors(Tensor vectors, string source, DictionaryTrainConfig c, string? hook, double fraction = PilotFraction)
    {
        double small = 8;
        if (2 * small > fraction * c.Steps) return null;
        return JobSizer.Estimate("dict train", "steps", c.Steps, small, fraction * c.Steps, steps =>
            {
                double share = steps / c.Steps;
                DictionaryJob.RunOnVectors(vectors, source, c with
                {
                    Steps = (int)steps, WarmupSteps = Math.Max(1, (int)(c.WarmupSteps * share)), DeadAfterTokens = Math.Max(c.BatchSize, (long)(c.DeadAfterTokens * share)),
                }, hook).Dispose();
            },
            _ => 0, new[] { "--batch", "--features", "a smaller --activations-file" });
    }

    /// <summary>
    /// <c>microscope</c> on texts held in memory: pilots run its first texts (at least two, for contextuality). Every layer's hidden
    /// states of every token are held; TwoNN's time grows with the square of the subsampled points up to the subsample's cap.
    /// </summary>
    public static JobEstimate? Microscope(HookedTransformer model, IReadOnlyList<string> texts, MicroscopeOptions options, double fraction = PilotFraction)
    {
        if (JobSizer.PilotSizes(texts.Count, fraction, 2) is not var (small, largest)) return null;
        var tokenizer = model.Tokenizer ?? throw new MechanistException("microscope needs the model's tokenizer");
        double pointsPerText = texts.Average(t => Math.Max(1, tokenizer.Encode(t).Length - (options.IncludeBos ? 0 : 1)));
        // Memory grows with the points: their states at every depth (float32, as CorpusStates holds them), and what the statistics
        // hold beyond them (TwoNN's blocks of distances, up to the subsample's cap): read as bytes per point through the largest
        // pilots' peaks, at least the states'.
        double stateBytes = 4.0 * (model.Config.NLayers + 1) * model.Config.DModel;
        var pilotPeaks = new SortedDictionary<double, long>();
        double Held(double n)
        {
            double perPoint = JobSizer.Line(pilotPeaks.TakeLast(4).Select(kv => (kv.Key * pointsPerText, (double)kv.Value)).ToList()).Slope;
            return n * pointsPerText * Math.Max(stateBytes, perPoint);
        }
        // TwoNN's pairwise distances cost the square of the points up to the subsample's cap: timed (on random points: the cost is the
        // shapes') at each pilot's point count and the job's, per depth.
        double Points(double n) => Math.Min(n * pointsPerText, options.MaxPointsForGeometry);
        var twoNN = new Dictionary<double, double>();
        double TwoNNSeconds(double n)
        {
            double points = Math.Round(Points(n));
            if (!twoNN.TryGetValue(points, out double seconds)) twoNN[points] = seconds = TimeTwoNN(model, points);
            return seconds;
        }
        return JobSizer.Estimate("microscope", "texts", texts.Count, small, largest,
            s =>
            {
                MicroscopeRunner.Run(model, texts.Take((int)s).ToList(), options);
                pilotPeaks[s] = JobSizer.PeakSinceReset();
            },
            Held, new[] { "--text-file/--corpus (fewer texts)", "--contextuality none" }, modelledSeconds: TwoNNSeconds);
    }

    /// <summary>
    /// <c>microscope --out</c>: the shard's texts streamed into sums whose sizes the model's shapes fix, and a hashed sample of rows
    /// (up to <paramref name="sampleRows"/>) for the intrinsic dimension; pilots run the shard's first texts into a temporary folder.
    /// With <paramref name="merges"/> (a single shard) the report follows: merged from the largest pilot's folder, time and peak measured.
    /// </summary>
    public static JobEstimate? MicroscopeCorpus(HookedTransformer model, IReadOnlyList<string> shardTexts, bool includeBos, bool merges, int sampleRows = 3000, double fraction = PilotFraction)
    {
        if (JobSizer.PilotSizes(shardTexts.Count, fraction, 8) is not var (small, largest)) return null;
        var tokenizer = model.Tokenizer ?? throw new MechanistException("microscope needs the model's tokenizer");
        var c = model.Config;
        double pointsPerText = shardTexts.Take(1000).Average(t => Math.Max(1, tokenizer.Encode(t).Length - (includeBos ? 0 : 1)));
        double Sampled(double n) => Math.Min(n * pointsPerText, sampleRows);
        // A sampled row: every depth's state (float64) and its hash; merging a chunk concatenates the sample with the chunk's rows.
        double rowBytes = 8.0 * (c.NLayers + 1) * c.DModel + 8;
        double Held(double n) => 2 * Sampled(n) * rowBytes;
        return WithTemp(dir =>
        {
            int run = 0;
            var estimate = JobSizer.Estimate("microscope --out", "texts", shardTexts.Count, small, largest,
                s => MicroscopeShards.Run(model, () => shardTexts.Take((int)s), 0, 1, Path.Combine(dir, $"pilot{run++}"), includeBos, sampleRows),
                Held, new[] { "--shard i/N (fewer texts a job)", "--text-file/--corpus (fewer texts)" });
            if (!merges) return estimate;
            // The merged report (the job's last step) reads the shard's sums and its sample, and TwoNN's pairwise distances over the sample's
            // distinct points at every depth: merged here from the largest pilot's folder, whose sample is the job's size once it is full.
            // A smaller sample is scaled up (the distances' time by its square; their memory, a block of rows at a time, and the rest linearly).
            var merge = JobSizer.Measure(1, () => MicroscopeShards.Merge(model, Path.Combine(dir, $"pilot{run - 1}")));
            double ratio = Sampled(shardTexts.Count) / Math.Max(1, Sampled(estimate.Pilots[^1].Units));
            double mergeBytes = estimate.ResidentBytes + (merge.PeakBytes - estimate.ResidentBytes) * ratio;
            return estimate with { Seconds = estimate.Seconds + merge.Seconds * ratio * ratio, PeakBytes = Math.Max(estimate.PeakBytes, (long)mergeBytes) };
        });
    }

    /// <summary>TwoNN at every depth of <paramref name="model"/> over <paramref name="points"/> points, timed once on random points (the cost is the shapes').</summary>
    static double TimeTwoNN(HookedTransformer model, double points)
    {
        using var generator = new Generator(0);
        using var x = randn(new[] { (long)Math.Max(3, points), model.Config.DModel }, generator: generator);
        Geometry.TwoNN(x);     // once untimed: the first call's allocations
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Geometry.TwoNN(x);
        return clock.Elapsed.TotalSeconds * (model.Config.NLayers + 1);
    }

    static T WithTemp<T>(Func<string, T> estimate)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"mechanist-sizer-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try { return estimate(dir); }
        finally { try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { } }
    }
}
