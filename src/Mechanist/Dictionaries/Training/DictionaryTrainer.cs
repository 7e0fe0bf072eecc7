using Mechanist.Tensors;
using Mechanist.Training;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Mechanist.Dictionaries.Training;

/// <summary>Hyper-parameters of dictionary training.</summary>
/// <param name="Kind">Dictionary kind.</param>
/// <param name="Activation">Activation and sparsity mechanism.</param>
/// <param name="Features">Features per layer.</param>
/// <param name="K">k of TopK / BatchTopK (active features per token and layer).</param>
/// <param name="Sparsity">λ: L1 coefficient (ReLU) or tanh-penalty coefficient (JumpReLU), reached after the warm-up.</param>
/// <param name="TanhScale">c of the tanh penalty λ·Σ tanh(c·‖W_dec,f‖·a_f).</param>
/// <param name="PreActivation">Coefficient of the pre-activation loss Σ ReLU(θ − pre)·‖W_dec,f‖ (JumpReLU; revives dead features).</param>
/// <param name="SparsityWarmup">Fraction of the steps over which λ rises linearly from 0.</param>
/// <param name="AuxK">Coefficient of the auxiliary loss that lets dead features reconstruct the residual (TopK kinds).</param>
/// <param name="DeadAfterTokens">A feature that has not fired in this many tokens is dead.</param>
/// <param name="Steps">Optimizer steps.</param>
/// <param name="BatchSize">Tokens per step.</param>
/// <param name="LearningRate">Peak learning rate (warm-up, then cosine decay to 10%).</param>
/// <param name="WarmupSteps">Learning-rate warm-up steps.</param>
/// <param name="Seed">Seed of initialisation and batch order.</param>
/// <param name="CheckpointEvery">Steps between checkpoints (0: only at the end).</param>
/// <param name="MatryoshkaWidths">Matryoshka: the nested prefix widths, ascending, ending at <paramref name="Features"/> (default: 1/16, 1/8, 1/4, 1/2 and all of them).</param>
public sealed record DictionaryTrainConfig(DictionaryKind Kind, TrainActivation Activation, int Features, int K = 16, double Sparsity = 1e-3,
    double TanhScale = 4.0, double PreActivation = 1e-4, double SparsityWarmup = 0.2, double AuxK = 1.0 / 32, long DeadAfterTokens = 200_000,
    int Steps = 3000, int BatchSize = 1024, double LearningRate = 1e-3, int WarmupSteps = 100, long Seed = 0, int CheckpointEvery = 500,
    IReadOnlyList<int>? MatryoshkaWidths = null)
{
    /// <summary>The Matryoshka prefix widths in use: the given ones (checked), or F/16, F/8, F/4, F/2, F without repeats.</summary>
    public int[] PrefixWidths()
    {
        if (MatryoshkaWidths is { Count: > 0 } given)
        {
            var w = given.ToArray();
            if (w[^1] != Features || w.Any(x => x < 1) || w.Zip(w.Skip(1)).Any(p => p.First >= p.Second))
                throw new MechanistException($"Matryoshka widths must rise strictly from at least 1 to the feature count {Features}: {string.Join(", ", w)}");
            return w;
        }
        return new[] { 16, 8, 4, 2, 1 }.Select(div => Math.Max(1, Features / div)).Distinct().ToArray();
    }
}

/// <summary>Progress of dictionary training.</summary>
/// <param name="Step">Steps done.</param>
/// <param name="Steps">Steps in all.</param>
/// <param name="Loss">Total loss of the step.</param>
/// <param name="Fvu">Fraction of variance unexplained, mean over layers.</param>
/// <param name="L0">Active features per token, mean over layers.</param>
/// <param name="DeadFraction">Share of features that have not fired recently.</param>
/// <param name="TokensPerSecond">Throughput.</param>
public readonly record struct DictionaryTrainProgress(int Step, int Steps, double Loss, double Fvu, double L0, double DeadFraction, double TokensPerSecond);

/// <summary>What training produced.</summary>
/// <param name="Dictionary">The dictionary in raw units (an SAE is a set of one layer: <c>Dictionary.Layer(0)</c>).</param>
/// <param name="Losses">Loss per step.</param>
/// <param name="Fvus">Mean FVU per step.</param>
/// <param name="TrainSeconds">Wall time of the optimisation.</param>
/// <param name="FlopsPerStep">The matrix products of one step, forward and backward, in FLOPs (<see cref="DictionaryTrainer.StepFlops"/>).</param>
/// <param name="StepsRun">Steps this process ran (fewer than the configured steps after a resume): the throughput's numerator.</param>
public sealed record DictionaryTrainResult(ICrossLayerDictionary Dictionary, double[] Losses, double[] Fvus, double TrainSeconds, double FlopsPerStep, int StepsRun);

/// <summary>Trains a dictionary on collected activations (see <see cref="ActivationHarvest"/>), with the shared <see cref="TrainingLoop"/>.</summary>
public static class DictionaryTrainer
{
    /// <summary>Trains on <paramref name="data"/>; <paramref name="checkpointDir"/> makes the run resumable.</summary>
    public static DictionaryTrainResult Train(ActivationSet data, DictionaryTrainConfig c, string? checkpointDir = null,
        IProgress<DictionaryTrainProgress>? progress = null, CancellationToken ct = default)
    {
        int layers = (int)data.Inputs.shape[1], dIn = (int)data.Inputs.shape[2], dOut = (int)data.Targets.shape[2];
        if (c.Features < 1 || c.Steps < 1 || c.BatchSize < 1) throw new MechanistException("features, steps and batch size must be positive");
        if (c.Activation is TrainActivation.TopK or TrainActivation.BatchTopK or TrainActivation.MatryoshkaBatchTopK && (c.K < 1 || c.K > c.Features)) throw new MechanistException($"k must be within 1..{c.Features}");
        bool matryoshka = c.Activation == TrainActivation.MatryoshkaBatchTopK;
        if (c.Activation == TrainActivation.Gated && c.Kind is DictionaryKind.Clt or DictionaryKind.SkipTranscoder)
            throw new MechanistException("gated dictionaries are trained as SAEs and per-layer transcoders (not CLTs or skip transcoders)");
        if (matryoshka && c.Kind == DictionaryKind.Clt) throw new MechanistException("Matryoshka prefixes are trained for SAEs and per-layer transcoders, not CLTs");
        int[] widths = matryoshka ? c.PrefixWidths() : Array.Empty<int>();
        if (c.Kind == DictionaryKind.Sae && dIn != dOut) throw new MechanistException("an SAE reconstructs what it reads: input and target widths differ");
        long n = data.Rows;
        if (n < c.BatchSize) throw new MechanistException($"{n} tokens of activations are fewer than one batch of {c.BatchSize}");

        // Normalise every layer's inputs and targets to mean norm √d (the scales are folded back on export).
        double[] inScale = Scales(data.Inputs, dIn), outScale = ReferenceEquals(data.Inputs, data.Targets) ? inScale : Scales(data.Targets, dOut);
        // Temporaries live in a dispose scope (which roots them): outside one, a GC may finalize a temporary mid-call.
        Tensor inS, outS, targetMean, targetVar;
        using (NewDisposeScope())
        {
            inS = tensor(inScale, ScalarType.Float32).view(1, -1, 1).DetachFromDisposeScope();
            outS = tensor(outScale, ScalarType.Float32).view(1, -1, 1).DetachFromDisposeScope();
            targetMean = (data.Targets.mean(new long[] { 0 }) * outS[0]).to(ScalarType.Float32).DetachFromDisposeScope();
            // Per-layer variance of the normalised targets: the MSE divided by it is the FVU.
            targetVar = DictionaryEvaluation.PerLayerVariance(data.Targets, targetMean, outS).to(ScalarType.Float32).DetachFromDisposeScope();
        }
        using var _inS = inS; using var _outS = outS; using var _targetMean = targetMean; using var _targetVar = targetVar;
        using var dict = new TrainableDictionary(c.Kind, c.Activation, layers, dIn, dOut, c.Features, c.K, targetMean, c.Seed);
        using var optimizer = new AdamW(dict.Parameters, beta1: 0.9, beta2: 0.999);
        using var sinceFired = zeros(layers, c.Features, dtype: ScalarType.Int64);
        var fvus = new List<double>();
        double lastFvu = 0, lastL0 = 0;
        var sw = System.Diagnostics.Stopwatch.StartNew();

        (int Epoch, Tensor? Order) shuffled = (-1, null);
        int stepsRun = 0;
        Tensor Loss(int step)
        {
            stepsRun++;
            // Batches in a seeded random order per pass over the data, so a resumed run sees the same batches.
            long perEpoch = n / c.BatchSize;
            int epoch = (int)(step / perEpoch); long offset = step % perEpoch * c.BatchSize;
            if (shuffled.Epoch != epoch)
            {
                shuffled.Order?.Dispose();
                using var generator = new Generator((ulong)(c.Seed * 1_000_003 + epoch));
                shuffled = (epoch, randperm(n, generator: generator).DetachFromDisposeScope());
            }
            var rows = shuffled.Order!.narrow(0, offset, c.BatchSize);
            var x = data.Inputs.index_select(0, rows) * inS;
            var y = ReferenceEquals(data.Inputs, data.Targets) ? x : data.Targets.index_select(0, rows) * outS;
            Tensor pre; Tensor? acts = null, topKRecon = null;
            if (c.Activation == TrainActivation.TopK) (topKRecon, pre) = dict.TopKCode(x);                // the written-out step
            else if (c.Activation == TrainActivation.Gated) (acts, pre) = dict.GatedActivations(x);   // pre: the gate's
            else { pre = dict.PreActivations(x); acts = dict.Activate(pre, training: true); }
            Tensor recon, fvu, loss;
            if (matryoshka)
            {
                // Every nested prefix reconstructs the target; the loss sums their FVUs (the full width's is the reported one).
                var prefixes = dict.PrefixDecodes(acts!, x, widths);
                recon = prefixes[^1];
                loss = zeros(1).sum();
                foreach (var r in prefixes) loss = loss.Add(((r - y).Square().sum(-1).mean(new long[] { 0 }) / targetVar).sum());
                fvu = (recon - y).Square().sum(-1).mean(new long[] { 0 }) / targetVar;
            }
            else
            {
                recon = topKRecon ?? dict.Decode(acts!, x);
                fvu = (recon - y).Square().sum(-1).mean(new long[] { 0 }) / targetVar;   // [L]
                loss = fvu.sum();
            }
            double warm = Math.Min(1.0, (step + 1) / Math.Max(1.0, c.SparsityWarmup * c.Steps));
            // Decoder norms weigh the penalties; TopK kinds have none (and skip computing them).
            var norms = c.Activation is TrainActivation.ReLU or TrainActivation.Gated or TrainActivation.JumpReLU ? dict.DecoderNorms().unsqueeze(0) : null; // [1, L, f]
            switch (c.Activation)
            {
                case TrainActivation.ReLU:
                    loss = loss.Add((acts! * norms!).sum(new long[] { 1, 2 }).mean().Mul(c.Sparsity * warm));
                    break;
                case TrainActivation.Gated:
                {
                    // The gate gets its gradient from an L1 on ReLU(gate) (decoder-norm weighted) and from the auxiliary loss: ReLU(gate)
                    // must itself reconstruct the target through a frozen copy of the decoder (Rajamanoharan et al., 2024).
                    var gateActs = F.relu(pre);
                    loss = loss.Add((gateActs * norms!).sum(new long[] { 1, 2 }).mean().Mul(c.Sparsity * warm));
                    var aux = einsum("blf,lfd->bld", gateActs, dict.WDec!.detach()).Add(dict.BDec.detach());
                    loss = loss.Add(((aux - y).Square().sum(-1).mean(new long[] { 0 }) / targetVar).sum());
                    break;
                }
                case TrainActivation.JumpReLU:
                    loss = loss.Add((acts!.Mul(c.TanhScale) * norms!).tanh().sum(new long[] { 1, 2 }).mean().Mul(c.Sparsity * warm));
                    loss = loss.Add((F.relu(dict.LogThreshold!.exp().unsqueeze(0) - pre) * norms!).sum(new long[] { 1, 2 }).mean().Mul(c.PreActivation));
                    break;
                default:
                    loss = loss.Add(AuxLoss(dict, pre, y - recon.detach(), sinceFired, c).Mul(c.AuxK));
                    break;
            }
            using (no_grad())
            {
                // Activations are never negative: a feature fired when its largest activation over the batch is positive. One read of
                // the activations each (they are the step's largest tensor).
                var (fired, active) = acts is null ? dict.TopKActivity() : (acts.amax(new long[] { 0 }).Gt(0), acts.count_nonzero());   // [L, f], []
                sinceFired.AddInPlace((long)c.BatchSize).MaskedFillInPlace(fired, 0L);
                lastFvu = fvu.mean().item<float>();
                lastL0 = (double)active.item<long>() / ((long)c.BatchSize * layers);
                fvus.Add(lastFvu);
            }
            return loss;
        }

        var relay = progress is null ? null : new SyncProgress<TrainProgress>(p =>
        {
            double dead; using (var d = sinceFired.Gt(c.DeadAfterTokens).to(ScalarType.Float32).mean()) dead = d.item<float>();
            progress.Report(new DictionaryTrainProgress(p.Step, p.Steps, p.Loss, lastFvu, lastL0, dead, p.TokensPerSecond));
        });
        var schedule = new LearningRateSchedule.WarmupCosine(c.LearningRate, Math.Min(c.WarmupSteps, c.Steps), c.Steps);
        var losses = TrainingLoop.Run(optimizer, Loss, new TrainingLoopOptions(c.Steps, schedule, GradClip: 1.0, TokensPerStep: c.BatchSize,
            CheckpointDir: checkpointDir, CheckpointEvery: c.CheckpointEvery,
            ExtraState: dict.BatchThreshold is { } bt ? new[] { sinceFired, bt } : new[] { sinceFired }), relay, ct);
        double seconds = sw.Elapsed.TotalSeconds;
        shuffled.Order?.Dispose();
        return new DictionaryTrainResult(dict.Export(inScale, outScale), losses.ToArray(), fvus.ToArray(), seconds, StepFlops(c, layers, dIn, dOut), stepsRun);
    }

    /// <summary>
    /// The matrix products one step needs, in FLOPs (2 per multiply-add): the decoder's forward, input gradient and weight gradient (3x its
    /// products), the encoder's and the skip's forward and weight gradient (2x: their inputs are data, with no gradient to compute); a gated
    /// SAE's two encoders and its auxiliary decode. TopK's auxiliary loss (only while features are dead) is not counted.
    /// </summary>
    public static double StepFlops(DictionaryTrainConfig c, int layers, int dIn, int dOut)
    {
        double decoder = c.Kind == DictionaryKind.Clt ? (double)c.Features * dOut * layers * (layers + 1) / 2 : (double)c.Features * dOut * layers;
        double encoder = (double)c.Features * dIn * layers * (c.Activation == TrainActivation.Gated ? 2 : 1);
        double skip = c.Kind == DictionaryKind.SkipTranscoder ? (double)dIn * dOut * layers : 0;
        // A gated SAE's auxiliary reconstruction runs its gate through the frozen decoder: forward and input gradient.
        double gatedAux = c.Activation == TrainActivation.Gated ? 2 * decoder : 0;
        return 2.0 * c.BatchSize * (3 * decoder + 2 * encoder + 2 * skip + gatedAux);
    }

    static double[] Scales(Tensor rows, int d)
    {
        using var scope = NewDisposeScope();
        var meanNorm = rows.norm(-1).mean(new long[] { 0 }); // [L]
        return meanNorm.to(ScalarType.Float64).data<double>().Select(m => m > 0 ? Math.Sqrt(d) / m : 1.0).ToArray();
    }

    /// <summary>
    /// AuxK (Gao et al., 2024): the top-k_aux pre-activations of dead features reconstruct the residual error through
    /// their own-layer decoders; the loss is the residual's unexplained share, so dead features get gradient.
    /// </summary>
    static Tensor AuxLoss(TrainableDictionary dict, Tensor pre, Tensor residual, Tensor sinceFired, DictionaryTrainConfig c)
    {
        var dead = sinceFired.Gt(c.DeadAfterTokens).unsqueeze(0);                     // [1, L, f]
        long deadCount = dead.sum().item<long>();
        if (deadCount == 0) return zeros(1).sum();
        int kAux = (int)Math.Min(Math.Min(2 * c.K, dict.Features), Math.Max(1, deadCount / dict.Layers));
        var masked = F.relu(pre).MaskedFill(dead.logical_not(), 0L);
        var acts = DictionaryActivations.Apply(DictionaryActivation.TopK, masked, k: kAux);
        var own = dict.Kind == DictionaryKind.Clt ? stack(dict.WDecCross!.Select(w => w.select(1, 0)).ToArray(), 0) : dict.WDec!; // [L, f, d]
        var auxRecon = einsum("blf,lfd->bld", acts, own);
        var err = (auxRecon - residual).Square().sum(-1).mean();
        return err / residual.Square().sum(-1).mean().ClampMin(1e-12);
    }
}
