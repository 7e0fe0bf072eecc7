using Mechanist.Tensors;
using Mechanist.Reporting;
using System.CommandLine;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Mechanist.Analysis;
using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Training;
using Mechanist.IO;
using Mechanist.Microscope;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Cli.Bench;

/// <summary>The suites: rows measured on random and built-in models, and the PyTorch peer.</summary>
public sealed partial class BenchCommand
{
    static List<Row> Measure(string dir, int repeats, int fileMb, CliContext ctx, GemmRates gemm, out Dictionary<string, string> summary)
    {
        var rows = new List<Row>();
        summary = new Dictionary<string, string>();
        var cfg = RandomModels.Gpt2SmallConfig();
        using (var random = RandomModels.Create(cfg, seed: 0)) HfCheckpointWriter.Write(random, dir);
        var sw = Stopwatch.StartNew();
        var model = HookedTransformer.Load(dir);
        rows.Add(new Row("load", sw.Elapsed.TotalMilliseconds, sw.Elapsed.TotalMilliseconds, Note: "safetensors mmap + fp32 weights"));
        using var _m = model;
        ctx.Err.WriteLine($"random GPT-2 small: {model.Weights.ParameterCount:N0} parameters, {get_num_threads()} threads");

        using var gen = new Generator(0);
        foreach (var (b, t) in new[] { (1, 128), (8, 128), (1, 1024) })
        {
            using var tokens = randint(0, cfg.VocabSize, new long[] { b, t }, generator: gen);
            var row = Time($"forward {b}x{t}", repeats, () => model.Run(tokens).Dispose());
            rows.Add(row with { Note = $"{b * t / (row.MedianMs / 1000):N0} tokens/s" });
            if (b == 1)
            {
                var cached = Time($"forward {b}x{t} + full cache", repeats, () => { var (l, c) = model.RunWithCache(tokens); l.Dispose(); c.Dispose(); });
                rows.Add(cached with { Note = $"{cached.MedianMs / row.MedianMs:F2}x plain forward, {model.HookPoints.Firing(false).Count()} hook points" });
                if (t == 1024)
                {
                    var patterns = Time($"forward {b}x{t} + full cache, every pattern read", repeats, () =>
                    {
                        var (l, c) = model.RunWithCache(tokens);
                        for (int layer = 0; layer < cfg.NLayers; layer++) _ = c[Hooks.HookKind.Pattern, layer];
                        l.Dispose(); c.Dispose();
                    });
                    rows.Add(patterns with { Note = $"{patterns.MedianMs / row.MedianMs:F2}x plain forward (scores and patterns are rebuilt from cached q/k on first read)" });
                }
            }
            if (b == 1 && t == 128)
            {
                var hooks = Enumerable.Range(0, 1000).Select(_ => new Hooks.ForwardHookSpec(model.HookPoints.Name(Hooks.HookKind.ResidPost, 5), (x, _) => null)).ToList();
                var hooked = Time("forward 1x128 + 1000 no-op hooks", repeats, () => model.RunWithHooks(tokens, hooks).Dispose());
                rows.Add(hooked with { Note = $"{(hooked.MedianMs - row.MedianMs) * 1000 / 1000:F1} µs per active hook (each is matched at all {model.HookPoints.Firing(false).Count()} hook points)" });
            }
            if (b == 1 && t == 1024)
            {
                // Forward FLOPs per token: the linear layers and the dense attention scores and mixing.
                double d = cfg.DModel, l = cfg.NLayers, perToken = 2 * l * (4 * d * d + 2 * d * cfg.DMlp) + 2 * d * cfg.VocabSize + 4 * l * t * d;
                double achieved = perToken * t / (row.MedianMs / 1000);
                double peak = GemmPeak(repeats);
                gemm.Own = peak;
                summary["GEMM peak (libtorch fp32, 1024x768 @ 768x3072)"] = $"{peak / 1e9:F1} GFLOP/s";
                summary["MKL kernels"] = Mechanist.Runtime.MklDispatch.Status;
                summary["tensor memory"] = Mechanist.Runtime.NativeHeap.Status;
                summary["forward 1x1024 achieved"] = $"{achieved / 1e9:F1} GFLOP/s = {achieved / peak:P0} of GEMM peak";
            }
        }
        string llamaDir = dir + "-llama";
        {
            using (var random = RandomModels.Create(RandomModels.LlamaSmallConfig(), seed: 0)) HfCheckpointWriter.Write(random, llamaDir);
            using var llama = HookedTransformer.Load(llamaDir);
            ctx.Err.WriteLine($"random Llama-style model: {llama.Weights.ParameterCount:N0} parameters");
            foreach (int t in new[] { 128, 1024 })
            {
                using var tokens = randint(0, llama.Config.VocabSize, new long[] { 1, t }, generator: gen);
                var row = Time($"llama forward 1x{t}", repeats, () => llama.Run(tokens).Dispose());
                rows.Add(row with { Note = $"{t / (row.MedianMs / 1000):N0} tokens/s, GQA 12/4, SwiGLU, rotary" });
            }
        }

        var prompt = new long[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
        var genRow = Time("generate 64 tokens (KV cache)", Math.Max(1, repeats / 2),
            () => model.Generate(prompt, new GenerateOptions { MaxNewTokens = 64, StopTokens = Array.Empty<int>() }));
        rows.Add(genRow with { Note = $"{64 / (genRow.MedianMs / 1000):F1} tokens/s" });

        if (BuiltInModels.Find("toy-4l") is { } toyDir)
        {
            using var toy = HookedTransformer.Load(toyDir);
            using var clean = toy.ToTokens("When Mary and John went to the store, John gave a drink to");
            using var corrupt = toy.ToTokens("When Mary and John went to the store, Mary gave a drink to");
            var metric = new PatchMetric.LogitDiff(TokenText.AnswerId(toy, " Mary"), TokenText.AnswerId(toy, " John"));
            rows.Add(Time("toy-4l: logit lens", repeats, () => LogitLens.Run(toy, clean)) with { Note = "15 tokens, top-5 per cell" });
            rows.Add(Time("toy-4l: patching grid (resid, exact)", repeats, () => ActivationPatching.Run(toy, clean, corrupt, metric, PatchTarget.Resid)) with { Note = "4 layers x 15 positions = 60 runs" });
            rows.Add(Time("toy-4l: attribution patching (resid)", repeats, () => ActivationPatching.Run(toy, clean, corrupt, metric, PatchTarget.Resid, PatchMethod.Attribution)));
            var texts = new Toy.ToyCorpus(7).Lines(100).ToList();
            rows.Add(Time("toy-4l: microscope, 100 texts (no contextuality)", 1, () => MicroscopeRunner.Run(toy, texts, new MicroscopeOptions(PerTextViews: 0))));
            rows.AddRange(DictionaryRows(toy, repeats));
        }
        if (fileMb > 0) rows.Add(OpenLargeFile(fileMb));
        summary["peak RSS"] = $"{PeakRssMb():F0} MB";
        return rows;
    }

    /// <summary>Harvesting throughput and CLT training speed on toy-4l, against the GEMM peak measured here.</summary>
    static IEnumerable<Row> DictionaryRows(HookedTransformer toy, int repeats)
    {
        var (inputs, targets) = DictionaryJob.Hooks(toy, DictionaryKind.Clt, TranscoderInput.Resid, null);
        var texts = new Toy.ToyCorpus(11).Lines(8000).ToList();
        var sw = Stopwatch.StartNew();
        using var acts = ActivationHarvest.Collect(toy, texts, inputs, targets, 50_000);
        double harvestMs = sw.Elapsed.TotalMilliseconds;
        yield return new Row("toy-4l: harvest resid_mid + mlp_out, 4 layers", harvestMs, harvestMs,
            Note: $"{acts.Rows / (harvestMs / 1000):N0} tokens/s ({acts.Rows:N0} tokens, 8 activations of 128 floats each)");
        // A short run first (compiles the step's code, touches its buffers), then the step's median over a run's steps (each timed by
        // the loop's progress report; the first two skipped), as every row here reports a median.
        const int steps = 30, batch = 1024;
        var config = new DictionaryTrainConfig(DictionaryKind.Clt, TrainActivation.TopK, 1024, 16, Steps: steps, BatchSize: batch, WarmupSteps: 1);
        DictionaryTrainer.Train(acts, config with { Steps = 3 }).Dictionary.Dispose();
        double peakBefore = GemmPeak(repeats);
        var stamps = new List<double>();
        var clock = Stopwatch.StartNew();
        var result = DictionaryTrainer.Train(acts, config, progress: new Training.SyncProgress<DictionaryTrainProgress>(_ => stamps.Add(clock.Elapsed.TotalMilliseconds)));
        result.Dictionary.Dispose();
        var stepTimes = stamps.Zip(stamps.Skip(1), (a, b) => b - a).Skip(1).OrderBy(t => t).ToList();
        double stepMs = stepTimes[stepTimes.Count / 2], rate = result.FlopsPerStep / (stepMs / 1000);
        // The peak is the better of two sets, before and after the steps: one timed in a slow spell of the machine would flatter the step.
        double peak = Math.Max(peakBefore, GemmPeak(repeats));
        yield return new Row("toy-4l: CLT training step (4 layers, 1024 features/layer, top-16)", stepMs, stepTimes[0],
            Note: $"{batch / (stepMs / 1000):N0} tokens/s; {rate / 1e9:F1} GFLOP/s = {rate / peak:P0} of the GEMM peak measured in this run ({peak / 1e9:F0} GFLOP/s); median of {stepTimes.Count} steps (fastest {stepTimes[0]:F0} ms, mean {stepTimes.Average():F0} ms)");
        foreach (var row in SyntheticDictionaryRows(peak)) yield return row;
    }

    /// <summary>
    /// Every SAE kind on one synthetic setting with a hierarchy (256 true features in d = 64, L0 ≈ 6, 16 parents with 4 children each):
    /// recovery (MCC, F1 at cosine 0.9), explained variance, L0, absorption, dead latents, shrinkage, and the training rate against the GEMM peak.
    /// </summary>
    static IEnumerable<Row> SyntheticDictionaryRows(double peak)
    {
        var config = new Dictionaries.Evaluation.SyntheticConfig(Parents: 16, ChildrenPerParent: 4, ChildProbability: 0.6, Seed: 0);
        using var train = Dictionaries.Evaluation.SyntheticData.Generate(config, 100_000, sampleSeed: 1);
        using var truth = Dictionaries.Evaluation.SyntheticData.Generate(config, 20_000, sampleSeed: 2);
        var rows = train.Activations.unsqueeze(1);
        using var data = new ActivationSet(rows, rows, 0);
        // L1 and tanh penalties were set so that their L0 lands near the true 6 (ReLU's L1 cannot get there without shrinking; the
        // gated SAE's gate L1 at 0.1 stops at L0 ≈ 30: stronger penalties cost it most of its reconstruction at this training budget).
        var kinds = new (string Name, TrainActivation Activation, double Sparsity)[]
        {
            ("ReLU (L1 0.1)", TrainActivation.ReLU, 0.1), ("TopK (k 6)", TrainActivation.TopK, 0), ("BatchTopK (k 6)", TrainActivation.BatchTopK, 0),
            ("JumpReLU (tanh 0.006)", TrainActivation.JumpReLU, 0.006), ("Matryoshka BatchTopK (k 6)", TrainActivation.MatryoshkaBatchTopK, 0),
            ("gated (L1 0.1)", TrainActivation.Gated, 0.1),
        };
        foreach (var (name, activation, sparsity) in kinds)
        {
            const int steps = 2000, batch = 512;
            var result = DictionaryTrainer.Train(data, new DictionaryTrainConfig(DictionaryKind.Sae, activation, 256, 6, sparsity, Steps: steps, BatchSize: batch, LearningRate: 3e-3));
            using var dictionary = result.Dictionary;
            var g = Dictionaries.Evaluation.GroundTruthEvaluation.Evaluate(dictionary, truth);
            double ms = result.TrainSeconds * 1000, flops = result.FlopsPerStep * steps / result.TrainSeconds;
            yield return new Row($"synthetic hierarchy: {name} SAE, 256 latents", ms, ms,
                Note: $"MCC {g.Mcc:F3}, F1 {g.F1:F3} (recall {g.Recall:P0}), explained variance {g.ExplainedVariance:F3}, L0 {g.L0:F1} (true {g.TrueL0:F1}), " +
                      $"absorption {g.MeanAbsorption:F3}, dead {g.DeadFraction:P0}, shrinkage {g.Shrinkage:F2}; {steps * batch / result.TrainSeconds:N0} vectors/s, " +
                      $"{flops / 1e9:F1} GFLOP/s = {flops / peak:P0} of the GEMM peak");
        }
    }

    /// <summary>The Mixtral-shaped model at 1x128: tokens/s with top-2 routing and with every expert run, and the share of expert FLOPs spent.</summary>
    static IEnumerable<Row> MoeRows(int repeats)
    {
        var cfg = RandomModels.MixtralShapedConfig();
        using var model = RandomModels.Create(cfg, seed: 0);
        using var generator = new Generator(1);
        using var tokens = randint(0, cfg.VocabSize, new long[] { 1, 128 }, generator: generator);
        long routed = 0;
        using (model.Hooks(new Hooks.ForwardHookSpec(Hooks.HookFilter.Where(n => n.EndsWith("mlp.hook_expert_indices")), (t, _) =>
        {
            // Each (token, slot) is one distinct (token, expert) pair: one expert row computed.
            routed += t.numel();
            return t;
        })))
        using (no_grad()) model.Run(tokens).Dispose();
        double spent = routed / (double)(128L * cfg.NLayers * cfg.Moe!.Experts);
        var topK = Time("Mixtral-shaped (8 experts, top-2): forward 1x128", repeats, () => model.Run(tokens).Dispose());
        yield return topK with
        {
            Note = $"{model.Weights.ParameterCount / 1e9:F2}B parameters; {128 / (topK.MedianMs / 1000):N0} tokens/s; expert FLOPs spent {spent:P0} of computing every expert " +
                $"({routed:N0} expert rows of {128L * cfg.NLayers * cfg.Moe.Experts:N0})",
        };
        // The same weights with every expert on every token (not disposed: the weights belong to the first model).
        var dense = new HookedTransformer(cfg with { Moe = cfg.Moe with { TopK = cfg.Moe.Experts } }, model.Weights, null, "all-experts");
        var all = Time("same weights, every expert on every token: forward 1x128", repeats, () => dense.Run(tokens).Dispose());
        yield return all with { Note = $"{128 / (all.MedianMs / 1000):N0} tokens/s; top-2 takes {topK.MedianMs / all.MedianMs:P0} of this time" };
    }

    /// <summary>
    /// Feature-store builds at two corpus sizes: throughput, peak memory and the store's size, against the forward plus the
    /// dictionary's encode alone over the same texts in the same batches (what any build must spend).
    /// </summary>
    static IEnumerable<Row> FeatureRows(string dir)
    {
        using var toy = HookedTransformer.Load(BuiltInModels.DefaultPath());
        string clt = BuiltInModels.RequireTranscoders(null);
        foreach (int texts in new[] { 5_000, 20_000 })
        {
            using var source = Features.FeatureSource.Load(toy, clt);
            var encoded = new Toy.ToyCorpus(1000).Lines(texts).Select((t, i) => ((long)i, toy.Tokenizer!.Encode(t).Take(toy.Config.NCtx).Select(x => (long)x).ToArray())).ToList();
            long floorTokens = 0;
            var floorWatch = Stopwatch.StartNew();
            foreach (var batch in encoded.Chunk(new Features.FeatureBuildOptions(new Features.FeatureSketchSettings()).BatchTexts))
                foreach (var group in Features.FeatureBuild.SimilarLengths(batch.ToList(), Features.FeatureBuild.PaddedTokensPerForward))
                {
                    using var scope = NewDisposeScope();
                    int width = group.Max(g => g.Item2.Length);
                    var ids = new long[group.Count * width]; var mask = new long[group.Count * width]; var keep = new bool[group.Count * width];
                    for (int b = 0; b < group.Count; b++)
                        for (int p = 0; p < group[b].Item2.Length; p++) { ids[b * width + p] = group[b].Item2[p]; mask[b * width + p] = 1; keep[b * width + p] = p > 0; }
                    var (_, cache) = toy.RunWithCache(tensor(ids, new long[] { group.Count, width }), source.InputHooks.Contains,
                        new RunOptions { AttentionMask = tensor(mask, new long[] { group.Count, width }) });
                    using (cache)
                    {
                        var kept = tensor(keep);
                        for (int li = 0; li < source.Layers.Length; li++) source.Encode(li, cache[source.InputHooks[li]].reshape(group.Count * width, -1)[kept]);
                    }
                    floorTokens += keep.Count(k => k);
                }
            double floorRate = floorTokens / floorWatch.Elapsed.TotalSeconds;
            yield return new Row($"toy-4l CLT: forward + encode alone, {texts:N0} texts", floorWatch.Elapsed.TotalMilliseconds, floorWatch.Elapsed.TotalMilliseconds,
                Note: $"{floorTokens:N0} tokens, {floorRate:N0} tokens/s (the same batches as the build; nothing kept)");
            string outDir = Path.Combine(dir, $"features-{texts}");
            GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
            ResetPeakRss();
            double before = RssMb();
            var sw = Stopwatch.StartNew();
            var info = Features.FeatureBuild.Run(toy, source, clt, () => new Toy.ToyCorpus(1000).Lines(texts), new Features.FeatureBuildOptions(new Features.FeatureSketchSettings()), outDir);
            double ms = sw.Elapsed.TotalMilliseconds, peak = PeakRssMb();
            long bytes = new FileInfo(Path.Combine(outDir, Features.FeatureBuild.ShardName(0, 1))).Length;
            yield return new Row($"toy-4l CLT: features build, {texts:N0} texts", ms, ms,
                Note: $"{info.Tokens:N0} tokens, {info.Tokens / (ms / 1000):N0} tokens/s (**{info.Tokens / (ms / 1000) / floorRate:P0} of forward + encode**); peak RSS {peak:N0} MB ({peak - before:+#,0;-#,0} MB over the loaded model); store {bytes / 1e6:F0} MB");
        }
    }

    /// <summary>
    /// Greedy T5 generation on a random t5-small-shaped checkpoint (d 512, 6 + 6 layers, 8 heads, d_ff 2,048, vocabulary 32,128):
    /// decoding with the kept self- and cross-attention keys and values against rerunning the decoder over the whole prefix each
    /// step (the same tokens both ways).
    /// </summary>
    static IEnumerable<Row> T5GenerationRows(string dir)
    {
        string folder = Path.Combine(dir, "t5-small-shaped");
        Directory.CreateDirectory(folder);
        const int d = 512, dkv = 64, heads = 8, dff = 2048, layers = 6, vocab = 32128, newTokens = 128;
        using (var scope = NewDisposeScope())
        {
            manual_seed(0);
            var w = new Dictionary<string, Tensor> { ["shared.weight"] = randn(vocab, d) };
            Tensor Dense(long o, long i) => randn(o, i).Div(Math.Sqrt(i));
            foreach (var (stack, decoder) in new[] { ("encoder", false), ("decoder", true) })
            {
                for (int l = 0; l < layers; l++)
                {
                    string p = $"{stack}.block.{l}.layer.";
                    foreach (var sub in decoder ? new[] { "0.SelfAttention.", "1.EncDecAttention." } : new[] { "0.SelfAttention." })
                    {
                        foreach (var m in new[] { "q", "k", "v" }) w[p + sub + m + ".weight"] = Dense(heads * dkv, d);
                        w[p + sub + "o.weight"] = Dense(d, heads * dkv);
                    }
                    if (l == 0) w[p + "0.SelfAttention.relative_attention_bias.weight"] = randn(32, heads);
                    string ff = decoder ? "2." : "1.";
                    w[p + ff + "DenseReluDense.wi.weight"] = Dense(dff, d);
                    w[p + ff + "DenseReluDense.wo.weight"] = Dense(d, dff);
                    foreach (var norm in decoder ? new[] { "0.", "1.", "2." } : new[] { "0.", "1." }) w[p + norm + "layer_norm.weight"] = ones(d);
                }
                w[$"{stack}.final_layer_norm.weight"] = ones(d);
            }
            SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), w);
        }
        File.WriteAllText(Path.Combine(folder, "config.json"), JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["architectures"] = new[] { "T5ForConditionalGeneration" }, ["model_type"] = "t5", ["d_model"] = d, ["d_kv"] = dkv, ["num_heads"] = heads, ["d_ff"] = dff,
            ["num_layers"] = layers, ["num_decoder_layers"] = layers, ["vocab_size"] = vocab, ["relative_attention_num_buckets"] = 32,
            ["relative_attention_max_distance"] = 128, ["feed_forward_proj"] = "relu", ["layer_norm_epsilon"] = 1e-6, ["decoder_start_token_id"] = 0,
            ["eos_token_id"] = 1, ["pad_token_id"] = 0, ["tie_word_embeddings"] = true,
        }));
        using var t5 = HookedEncoderDecoder.Load(folder);
        using var input = tensor(Enumerable.Range(10, 32).Select(i => (long)i).ToArray(), new long[] { 1, 32 });
        long[]? cachedIds = null, rerunIds = null;
        var cached = Time($"t5-small-shaped: generate {newTokens} tokens (KV cache)", 1, () => cachedIds = t5.Generate(input, newTokens, stopAtEos: false).Ids);
        var rerun = Time($"t5-small-shaped: generate {newTokens} tokens (decoder rerun each step)", 1, () => rerunIds = t5.Generate(input, newTokens, stopAtEos: false, useCache: false).Ids);
        string same = cachedIds!.SequenceEqual(rerunIds!) ? "the same tokens" : "DIFFERENT tokens";
        yield return cached with { Note = $"{newTokens / (cached.MedianMs / 1000):F1} tokens/s after a 32-token input; {rerun.MedianMs / cached.MedianMs:F1}x faster than rerunning the decoder, {same}" };
        yield return rerun with { Note = $"{newTokens / (rerun.MedianMs / 1000):F1} tokens/s" };
    }

    /// <summary>
    /// Billion-parameter models: random checkpoints of Llama-3.2-1B's and Gemma-2-2B's shapes written in bf16 as sharded
    /// Hugging Face folders, then per model: load time and memory (peak RSS of the load against the weights' bytes),
    /// forward 1x128 in bf16 and fp32 (when twice the fp32 weights fit in the memory available), a full cache's bytes,
    /// and KV-cache generation.
    /// </summary>
    static IEnumerable<Row> LargeModelRows(string dir, int repeats, CliContext ctx, Dictionary<string, string> summary)
    {
        foreach (var spec in new[] { RandomCheckpoint.Llama32_1B(), RandomCheckpoint.Gemma2_2B() })
        {
            string folder = Path.Combine(dir, spec.Name);
            long weightBytes = spec.Parameters * 2;
            var sw = Stopwatch.StartNew();
            RandomCheckpoint.Write(spec, folder);
            ctx.Err.WriteLine($"{spec.Name}: {spec.Parameters / 1e9:F2} B parameters, {weightBytes / 1e9:F2} GB in bf16, written in {sw.Elapsed.TotalSeconds:F0} s");
            double? storedForwardMs = null;
            // bf16 kept in memory and widened to fp32 a layer at a time (what --dtype bfloat16 does on a CPU without bf16 matrix
            // instructions), bf16 computed in bf16 (what it would do otherwise), and fp32.
            foreach (var (tag, dtype, widen) in new[] { ("bf16", ScalarType.BFloat16, true), ("bf16 computed in bf16", ScalarType.BFloat16, false), ("fp32", ScalarType.Float32, false) })
            {
                long bytes = spec.Parameters * (dtype == ScalarType.BFloat16 ? 2 : 4);
                // Tensors left to finalizers (the checkpoint writer's, the previous model's) are freed before the baseline, or
                // their release during the load would hide the new weights in the RSS deltas; the heap's freed memory goes back to
                // the system before asking what is available.
                GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
                ReleaseFreedHeap();
                if (dtype == ScalarType.Float32 && MemAvailableBytes() < 2 * bytes)
                {
                    ctx.Err.WriteLine($"{spec.Name} {tag}: skipped ({bytes / 1e9:F1} GB of weights, {MemAvailableBytes() / 1e9:F1} GB available)");
                    continue;
                }
                double rssBefore = RssMb();
                ResetPeakRss();
                sw.Restart();
                using var model = HookedTransformer.Load(folder, new LoadOptions { DType = dtype, ComputeInFloat32 = widen });
                double loadMs = sw.Elapsed.TotalMilliseconds, peakLoad = PeakRssMb() - rssBefore, held = RssMb() - rssBefore;
                yield return new Row($"{spec.Name} {tag}: load", loadMs, loadMs,
                    Note: $"weights {bytes / 1e9:F2} GB; RSS +{held / 1e3:F2} GB after, peak +{peakLoad / 1e3:F2} GB during the load ({peakLoad * 1e6 / bytes:F2}x the weights)");
                using var gen = new Generator(1);
                using var tokens = randint(0, model.Config.VocabSize, new long[] { 1, 128 }, generator: gen);
                ResetPeakRss();
                var forward = Time($"{spec.Name} {tag}: forward 1x128", widen || dtype == ScalarType.Float32 ? repeats : 1, () => model.Run(tokens).Dispose());
                double forwardPeak = PeakRssMb() - rssBefore;
                string versus = storedForwardMs is { } ms ? $"; the bf16-stored forward takes **{ms / forward.MedianMs:F2}x** this" : "";
                if (widen) storedForwardMs = forward.MedianMs;
                yield return forward with { Note = $"{128 / (forward.MedianMs / 1000):F1} tokens/s; peak RSS +{forwardPeak / 1e3:F2} GB over the process before the load " +
                    $"(**{forwardPeak * 1e6 / (spec.Parameters * 2):F2}x the bf16 weights**){versus}" };
                if (dtype == ScalarType.BFloat16 && !widen) continue;
                ResetPeakRss();
                double rssCache = RssMb();
                long cacheBytes = 0;
                var cached = Time($"{spec.Name} {tag}: forward 1x128 + full cache", 1, () =>
                {
                    var (l, c) = model.RunWithCache(tokens);
                    cacheBytes = c.StoredBytes;
                    l.Dispose(); c.Dispose();
                });
                yield return cached with { Note = $"{cached.MedianMs / forward.MedianMs:F2}x plain forward; cache holds {cacheBytes / 1e6:F0} MB ({model.HookPoints.Firing(false).Count()} hook points), peak RSS +{(PeakRssMb() - rssCache) / 1e3:F2} GB over the loaded model" };
                if (widen)
                {
                    var prompt = Enumerable.Range(10, 16).Select(i => (long)i).ToArray();
                    const int newTokens = 16;
                    var generate = Time($"{spec.Name} {tag}: generate {newTokens} tokens (KV cache)", 1,
                        () => model.Generate(prompt, new GenerateOptions { MaxNewTokens = newTokens, StopTokens = Array.Empty<int>() }));
                    yield return generate with { Note = $"{newTokens / (generate.MedianMs / 1000):F2} tokens/s after a 16-token prompt" };
                }
            }
            Directory.Delete(folder, true);
        }
        summary["large-model peak RSS (whole run)"] = $"{PeakRssMb():F0} MB";
        summary["bf16 on this CPU"] = Mechanist.Runtime.CpuFeatures.BFloat16Summary;
    }

    /// <summary>
    /// Attribution graphs at research budgets: a GPT-2-small-shaped model (context widened to the longest prompt) with a random
    /// CLT of 12 × 8,192 features, top-64 per position, visiting <paramref name="visit"/> features (circuit-tracer's CLI default is
    /// 7,500; all active features where fewer) plus up to 5 logits. Per length: time, time per row, the floor per row and their
    /// ratio, peak RSS, and what a dense n × n adjacency would take. The floor of a row is the FLOPs of the linear map's
    /// vector–Jacobian product that the row needs (per layer up to the target's: the OV path, two d × d products per position up
    /// to the target's, the T × T mixing per head, and reading the active features' encoder rows there) at this run's GEMM peak.
    /// </summary>
    static IEnumerable<Row> AttributionScaleRows(int[] lengths, int visit, CliContext ctx, Dictionary<string, string> summary)
    {
        const int features = 8192, k = 64;
        var cfg = RandomModels.Gpt2SmallConfig() with { NCtx = Math.Max(1024, lengths.Max()) };
        using var model = RandomModels.Create(cfg, seed: 0);
        int L = cfg.NLayers, d = cfg.DModel;
        manual_seed(1);
        var clt = new Dictionaries.CrossLayerTranscoder(
            Enumerable.Range(0, L).Select(_ => randn(features, d).Div(Math.Sqrt(d))).ToArray(),
            Enumerable.Range(0, L).Select(_ => zeros(features)).ToArray(),
            Enumerable.Range(0, L).Select(i => randn(features, L - i, d).Mul(0.02f)).ToArray(),
            Enumerable.Range(0, L).Select(_ => zeros(d)).ToArray(), Dictionaries.DictionaryActivation.TopK, topK: k);
        using var _clt = clt;
        double peak = GemmPeak(5);
        summary["attribution GEMM peak (this run)"] = $"{peak / 1e9:F0} GFLOP/s";
        summary["tensor memory"] = Mechanist.Runtime.NativeHeap.Status;
        ctx.Err.WriteLine($"GPT-2-small-shaped model ({model.Weights.ParameterCount:N0} parameters, context {cfg.NCtx}), random CLT: {L} layers x {features} features, top-{k}; GEMM peak {peak / 1e9:F0} GFLOP/s");
        // The written-out backward holds no retained copies of the prompt: batches of 32 fit at every length here.
        const int Batch = 32;
        // One untimed short trace first, so that the first timed row does not pay for warming up (JIT, allocator, thread pool).
        using (var warmGenerator = new Generator(7UL))
        using (var warmTokens = randint(0, cfg.VocabSize, new long[] { 1, 32 }, generator: warmGenerator))
        using (var warm = Attribution.ReplacementModel.Build(model, clt, Dictionaries.TranscoderInput.Resid, warmTokens))
            Attribution.Attributor.Attribute(warm, new Attribution.AttributionOptions(MaxLogits: 5, BatchSize: Batch, MaxFeatureNodes: 16));
        foreach (int t in lengths)
        {
            // The peak is the best of the products timed so far, one set before each row: a set timed in one of the machine's slow
            // spells (on this VM, one read 147 GFLOP/s against 367) would make the floor too high and the ratio look better than it is.
            peak = Math.Max(peak, GemmPeak(5));
            summary["attribution GEMM peak (this run)"] = $"{peak / 1e9:F0} GFLOP/s";
            using var generator = new Generator((ulong)t);
            using var tokens = randint(0, cfg.VocabSize, new long[] { 1, t }, generator: generator);
            // Each run as a fresh `trace` would: the freed heap returned first, the replacement model built, the graph attributed and
            // pruned. Up to 128 tokens three runs, their median reported (the first of a process pays first touches of memory and
            // code paths the warm-up did not reach: its time is stated); at 512 tokens one run (43 s).
            int runs = t <= 128 ? 3 : 1;
            var times = new List<(double Ms, double BuildMs, double AttributeMs)>();
            double peakRss = 0;
            long active = 0;
            long[] cumulative = Array.Empty<long>();
            Attribution.AttributionGraph? graph = null;
            for (int run = 0; run < runs; run++)
            {
                GC.Collect();
                ReleaseFreedHeap();
                double rssBefore = RssMb();
                ResetPeakRss();
                var sw = Stopwatch.StartNew();
                using var rm = Attribution.ReplacementModel.Build(model, clt, Dictionaries.TranscoderInput.Resid, tokens);
                double runBuildMs = sw.Elapsed.TotalMilliseconds;
                var attribute = Stopwatch.StartNew();
                graph = Attribution.Attributor.Attribute(rm, new Attribution.AttributionOptions(MaxLogits: 5, BatchSize: Batch, MaxFeatureNodes: visit));
                double runAttributeMs = attribute.Elapsed.TotalMilliseconds;
                using var pruned = Attribution.Pruning.Prune(graph);
                times.Add((sw.Elapsed.TotalMilliseconds, runBuildMs, runAttributeMs));
                peakRss = Math.Max(peakRss, PeakRssMb() - rssBefore);
                if (run > 0) continue;
                // (Counted once, untimed.) Active features per (layer, position): what a row reads at each layer it reaches.
                active = rm.Activations.count_nonzero().item<long>();
                using (var activeAt = rm.Activations.Gt(0).sum(new long[] { -1 }).to(ScalarType.Int64))                // [L, T]
                using (var sums = activeAt.cumsum(1))
                    cumulative = sums.data<long>().ToArray();
            }
            var median = times.OrderBy(x => x.AttributeMs).ElementAt(times.Count / 2);
            double ms = median.Ms, buildMs = median.BuildMs, attributeMs = median.AttributeMs;
            var rowNodes = graph!.Nodes.Where(x => x.Kind is Attribution.NodeKind.Feature or Attribution.NodeKind.Logit).ToList();
            int visited = rowNodes.Count(x => x.Kind == Attribution.NodeKind.Feature);
            // A row for a feature at (layer ℓ, position p) runs back through attention layers 0..ℓ (it reads resid_mid of ℓ) over
            // positions ≤ p, and reads the MLP outputs of layers below ℓ; a logit row runs through all L layers from the last position.
            // Its feature columns: each active feature at a position ≤ p, once per layer it writes to that the row reads (a CLT's
            // feature of layer m writes to every layer from m up).
            double RowFlops(Attribution.GraphNode node)
            {
                bool logit = node.Kind == Attribution.NodeKind.Logit;
                int top = logit ? L - 1 : node.Layer, p = logit ? t - 1 : node.Position, lastRead = logit ? L - 1 : node.Layer - 1;
                double flops = 0;
                for (int m = 0; m <= top; m++)
                    flops += (p + 1) * 4.0 * d * d + 2.0 * (p + 1) * (p + 1) * d + 2.0 * d * cumulative[m * t + p] * Math.Max(0, lastRead - m + 1);
                return flops;
            }
            double floorPerRow = rowNodes.Average(RowFlops) / peak * 1000, perRow = attributeMs / rowNodes.Count;
            string howMany = runs == 1 ? "one run" : $"the median of {runs} runs, the first {times[0].AttributeMs / 1e3:F1} s (ratio {times[0].AttributeMs / rowNodes.Count / floorPerRow:F1})";
            long n = graph.Nodes.Length;
            yield return new Row($"attribution graph, {t} tokens", ms, ms,
                Note: $"{visited:N0} features visited of {active:N0} active, {rowNodes.Count:N0} rows (batches of {Batch}); attribution {attributeMs / 1e3:F1} s " +
                      $"({howMany}; replacement model {buildMs / 1e3:F1} s, pruning the rest): **{perRow:F0} ms per row, floor {floorPerRow:F1} ms, ratio {perRow / floorPerRow:F1}**; " +
                      $"{graph.Edges.Count:N0} edges = {graph.Edges.Bytes / 1e6:F0} MB sparse, dense n x n float32 {4.0 * n * n / 1e9:F2} GB ({n:N0} nodes); peak RSS +{peakRss / 1e3:F2} GB");
            if (t > 64) continue;
            // The same trace again as `trace --qk` runs it: the rows keep their hook_z gradients, then head loadings and QK terms.
            // Three runs as well (each as a fresh `trace` would: the freed heap returned first), the median reported.
            var qkOptions = new Attribution.GraphQkOptions(Batch: Batch);
            var qkRuns = new List<(double Total, double GraphMs, int Kept, long KeptBytes, int Loadings, int Scores)>();
            for (int run = 0; run < runs; run++)
            {
                GC.Collect();
                ReleaseFreedHeap();
                var both = Stopwatch.StartNew();
                using var rm2 = Attribution.ReplacementModel.Build(model, clt, Dictionaries.TranscoderInput.Resid, tokens);
                using var gradients = new Attribution.ZGradientCache(qkOptions.GradientBudgetMb * (1L << 20));
                var graph2 = Attribution.Attributor.Attribute(rm2, new Attribution.AttributionOptions(MaxLogits: 5, BatchSize: Batch, MaxFeatureNodes: visit, ZGradients: gradients));
                using var pruned2 = Attribution.Pruning.Prune(graph2);
                double graphMs = both.Elapsed.TotalMilliseconds;
                var attention = Attribution.GraphQk.Build(rm2, graph2, pruned2, pruned: true, qkOptions, gradients: gradients);
                qkRuns.Add((both.Elapsed.TotalMilliseconds, graphMs, gradients.Count, gradients.Bytes, attention.Loadings.Count, attention.Scores.Count));
            }
            var q = qkRuns.OrderBy(x => x.Total).ElementAt(qkRuns.Count / 2);
            yield return new Row($"attribution graph + head loadings and QK, {t} tokens", q.Total, q.Total,
                Note: $"{q.Total / ms:F2}x the graph alone ({(runs == 1 ? "one run" : $"the median of {runs} runs")}): the graph with its rows' hook_z gradients kept ({q.Kept:N0} rows, {q.KeptBytes / 1e6:F0} MB) {q.GraphMs / 1e3:F1} s, " +
                      $"then {q.Loadings:N0} cross-position edges split over heads and {q.Scores} attention scores decomposed, {(q.Total - q.GraphMs) / 1e3:F1} s");
        }
    }

    static double GemmPeak(int repeats)
    {
        using var a = randn(1024, 768); using var b = randn(768, 3072);
        var row = Time("gemm", Math.Max(5, repeats), () => matmul(a, b).Dispose());
        return 2.0 * 1024 * 768 * 3072 / (row.MinMs / 1000);
    }

    /// <summary>
    /// Runs the PyTorch peer on the same weights. OpenBLAS's kernel overrides (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, set on
    /// some machines because old OpenBLAS builds misbehave there) are unset together so OpenBLAS picks its own kernel; if that
    /// kernel's GEMM is not correct (checked against float64), the run is repeated with the overrides kept. The BLAS library,
    /// its kernel and both GEMM peaks go into the summary.
    /// </summary>
    static void AddPeer(List<Row> rows, Dictionary<string, string> summary, string script, string dir, int threads, int repeats, CliContext ctx, GemmRates gemm)
    {
        if (!File.Exists(script)) throw new MechanistException($"{script}: peer script not found");
        JsonDocument Run(bool unsetOverrides)
        {
            var psi = new ProcessStartInfo("/usr/bin/python3", new[] { script, dir, threads.ToString(), repeats.ToString(), dir + "-llama" })
            { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.Environment["OMP_NUM_THREADS"] = threads.ToString();
            psi.Environment["OPENBLAS_NUM_THREADS"] = threads.ToString();
            // The allocator Mechanist runs on (Runtime/NativeHeap): large blocks from glibc's heap, kept for reuse, rather than a
            // page fault per 4 KB of every fresh mapping (glibc reads these at the peer's start).
            psi.Environment["MALLOC_MMAP_MAX_"] = "0";
            psi.Environment["MALLOC_TRIM_THRESHOLD_"] = "2147483647";
            if (unsetOverrides) { psi.Environment.Remove("OPENBLAS_CORETYPE"); psi.Environment.Remove("OPENBLAS_L2_SIZE"); }
            using var p = Process.Start(psi) ?? throw new MechanistException("could not start /usr/bin/python3");
            var stdout = p.StandardOutput.ReadToEndAsync(); string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0) throw new MechanistException($"the PyTorch peer failed: {err.Trim().Split('\n').LastOrDefault()}");
            return JsonDocument.Parse(stdout.Result);
        }
        bool overridesSet = Environment.GetEnvironmentVariable("OPENBLAS_CORETYPE") != null || Environment.GetEnvironmentVariable("OPENBLAS_L2_SIZE") != null;
        var doc = Run(unsetOverrides: true);
        string config = overridesSet ? "OpenBLAS's own kernel choice (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for the peer)" : "OpenBLAS's own kernel choice";
        if (doc.RootElement.GetProperty("blas").GetProperty("gemm_relative_error").GetDouble() > 1e-4 && overridesSet)
        {
            ctx.Err.WriteLine("peer: OpenBLAS's own kernel gives wrong GEMM results here; rerunning with the machine's OPENBLAS_CORETYPE/L2_SIZE");
            doc.Dispose();
            doc = Run(unsetOverrides: false);
            config = "the machine's OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (the default kernel computed wrong results)";
        }
        using (doc)
        {
            var root = doc.RootElement;
            var blas = root.GetProperty("blas");
            double error = blas.GetProperty("gemm_relative_error").GetDouble();
            if (error > 1e-4) throw new MechanistException($"the peer's GEMM is wrong (relative error {error:G3} against float64): its timings would mean nothing");
            string libraries = string.Join("; ", blas.GetProperty("libraries").EnumerateArray().Select(l => string.Join(", ", l.EnumerateObject().Select(f => $"{f.Name} {f.Value}"))));
            ctx.Err.WriteLine($"peer: PyTorch {root.GetProperty("torch").GetString()}, {root.GetProperty("threads").GetInt32()} threads, BLAS: {libraries}");
            summary["peer BLAS"] = $"{(libraries.Length > 0 ? libraries : "none reported")}; configuration: {config}";
            summary["peer GEMM (PyTorch, same shapes)"] = $"{root.GetProperty("gemm_gflops").GetDouble():F1} GFLOP/s (PyTorch {root.GetProperty("torch").GetString()})";
            gemm.Peer = root.GetProperty("gemm_gflops").GetDouble() * 1e9;
            foreach (var peerRow in root.GetProperty("rows").EnumerateObject())
            {
                int i = rows.FindIndex(r => r.Name == peerRow.Name);
                if (i >= 0) rows[i] = rows[i] with { PeerMedianMs = peerRow.Value.GetProperty("median_ms").GetDouble() };
            }
        }
    }

}
