using System.Globalization;
using System.Text.Json;
using Mechanist.IO;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries.Evaluation;

/// <summary>
/// How synthetic activations with known features are made. Every sample is x = Σ_i c_i · u_i + noise, with u_i random unit
/// directions in R^d and c_i ≥ 0 the true code; all draws come from <paramref name="Seed"/>.
/// </summary>
/// <param name="DModel">d: the width of the activations.</param>
/// <param name="Features">True features (parents and children included).</param>
/// <param name="MeanActive">Expected true features per sample (L0 of the true codes), before any firing probability is clipped at 1.</param>
/// <param name="FrequencyExponent">Firing frequencies follow a power law p_i ∝ (i + 1)^−α over the feature index (0: all equal).</param>
/// <param name="MagnitudeMean">Mean magnitude of a firing feature.</param>
/// <param name="MagnitudeStd">Spread of the magnitudes: |mean + std · N(0, 1)| (folded, so a firing feature is never exactly zero).</param>
/// <param name="Correlation">ρ of a one-factor Gaussian copula over the independent features' firing (0: independent).</param>
/// <param name="Parents">Hierarchy: the first this many features are parents, each with <paramref name="ChildrenPerParent"/> children (the features after them).</param>
/// <param name="ChildrenPerParent">Children of each parent. A child fires only with its parent, and at most one child of a parent fires.</param>
/// <param name="ChildProbability">When a parent fires, the chance that one of its children (uniformly chosen) fires with it.</param>
/// <param name="Noise">Gaussian noise of expected norm <paramref name="Noise"/> added to every sample.</param>
/// <param name="Seed">Seed of the directions and the samples.</param>
public sealed record SyntheticConfig(int DModel = 64, int Features = 256, double MeanActive = 6, double FrequencyExponent = 0.5,
    double MagnitudeMean = 1.0, double MagnitudeStd = 0.2, double Correlation = 0.0, int Parents = 0, int ChildrenPerParent = 0,
    double ChildProbability = 0.5, double Noise = 0.0, long Seed = 0)
{
    /// <summary>Checks the parameters, naming the first that is out of range.</summary>
    public void Check()
    {
        if (DModel < 1) throw new MechanistException("d_model must be at least 1");
        if (Features < 1) throw new MechanistException("the number of true features must be at least 1");
        if (MeanActive <= 0) throw new MechanistException("the mean number of active features must be positive");
        if (FrequencyExponent < 0) throw new MechanistException("the frequency exponent must not be negative");
        if (MagnitudeMean < 0 || MagnitudeStd < 0) throw new MechanistException("magnitudes: mean and spread must not be negative");
        if (Correlation is < 0 or >= 1) throw new MechanistException("the correlation must be in [0, 1)");
        if (Parents < 0 || ChildrenPerParent < 0) throw new MechanistException("parents and children per parent must not be negative");
        if (Parents * (1L + ChildrenPerParent) > Features) throw new MechanistException($"{Parents} parents with {ChildrenPerParent} children each need {Parents * (1L + ChildrenPerParent)} features; there are {Features}");
        if (ChildProbability is < 0 or > 1) throw new MechanistException("the child probability must be in [0, 1]");
        if (Noise < 0) throw new MechanistException("the noise must not be negative");
    }

    /// <summary>The hierarchy's (parent, child) pairs: parent p has children Parents + p·C … Parents + (p + 1)·C − 1.</summary>
    public (int Parent, int Child)[] Hierarchy() =>
        Enumerable.Range(0, Parents).SelectMany(p => Enumerable.Range(0, ChildrenPerParent).Select(c => (p, Parents + p * ChildrenPerParent + c))).ToArray();

    /// <summary>Each feature's firing probability: children's is the conditional one times their parent's.</summary>
    public double[] FiringProbabilities()
    {
        var weights = Enumerable.Range(0, Features).Select(i => Math.Pow(i + 1, -FrequencyExponent)).ToArray();
        int firstIndependent = Parents * (1 + ChildrenPerParent);
        bool IsChild(int i) => i >= Parents && i < firstIndependent;
        // Scale so that the expected count (children counted through their parents) is MeanActive.
        double total = Enumerable.Range(0, Features).Where(i => !IsChild(i)).Sum(i => weights[i]) + ChildProbability * Enumerable.Range(0, Parents).Sum(i => weights[i]);
        var p = weights.Select(w => Math.Min(1.0, w * MeanActive / total)).ToArray();
        for (int parent = 0; parent < Parents; parent++)
            for (int c = 0; c < ChildrenPerParent; c++) p[Parents + parent * ChildrenPerParent + c] = p[parent] * ChildProbability / ChildrenPerParent;
        return p;
    }
}

/// <summary>Synthetic activations with the features that made them.</summary>
/// <param name="Config">How they were made.</param>
/// <param name="Activations">x [N, d] float32.</param>
/// <param name="Codes">The true codes [N, F] float32 (zero where a feature is silent).</param>
/// <param name="Directions">The true unit directions [F, d] float32.</param>
public sealed record SyntheticData(SyntheticConfig Config, Tensor Activations, Tensor Codes, Tensor Directions) : IDisposable
{
    /// <summary>The hierarchy's (parent, child) pairs.</summary>
    public (int Parent, int Child)[] Hierarchy => Config.Hierarchy();

    /// <summary>Samples.</summary>
    public long Rows => Activations.shape[0];

    /// <summary>Mean true features per sample (the true codes' L0).</summary>
    public double TrueL0()
    {
        using var scope = NewDisposeScope();
        return Codes.Gt(0).sum(1).to(ScalarType.Float64).mean().item<double>();
    }

    /// <summary>Makes <paramref name="rows"/> samples; the same config (seed included) gives the same directions, and <paramref name="sampleSeed"/> the samples.</summary>
    public static SyntheticData Generate(SyntheticConfig config, long rows, long sampleSeed = 1)
    {
        config.Check();
        if (rows < 1) throw new MechanistException("the number of samples must be at least 1");
        int F = config.Features, d = config.DModel, P = config.Parents, C = config.ChildrenPerParent;
        using var scope = NewDisposeScope();
        using var directionGen = new Generator((ulong)config.Seed);
        var directions = randn(new long[] { F, d }, generator: directionGen);
        directions = directions.div(directions.norm(1, keepdim: true));
        using var gen = new Generator((ulong)(config.Seed * 1_000_003 + sampleSeed));
        var p = tensor(config.FiringProbabilities().Select(v => (float)v).ToArray());
        int firstIndependent = P * (1 + C);
        // Parents and independent features fire by their own probability (through a one-factor copula when correlated).
        Tensor fires;
        if (config.Correlation > 0)
        {
            var shared = randn(new long[] { rows, 1 }, generator: gen);
            var own = randn(new long[] { rows, F }, generator: gen);
            var z = own.Mul(Math.Sqrt(1 - config.Correlation)).Add(shared.Mul(Math.Sqrt(config.Correlation)));
            fires = z.lt(special.ndtri(p.ClampMin(1e-12).ClampMax(1 - 1e-7)).unsqueeze(0));
        }
        else fires = rand(new long[] { rows, F }, generator: gen).lt(p.unsqueeze(0));
        if (P > 0 && C > 0)
        {
            // Children: silent unless their parent fires; then, with the child probability, exactly one of them (uniformly).
            var parentFires = fires.narrow(1, 0, P);                                                   // [N, P]
            var anyChild = rand(new long[] { rows, P }, generator: gen).Lt(config.ChildProbability).logical_and(parentFires);
            var which = randint(0, C, new long[] { rows, P }, generator: gen);                        // [N, P]
            var children = SafeOps.Arange(C).view(1, 1, C).eq(which.unsqueeze(-1)).logical_and(anyChild.unsqueeze(-1)).reshape(rows, P * C);
            fires = cat(new[] { fires.narrow(1, 0, P), children, fires.narrow(1, firstIndependent, F - firstIndependent) }, 1);
        }
        var magnitudes = randn(new long[] { rows, F }, generator: gen).Mul(config.MagnitudeStd).Add(config.MagnitudeMean).abs();
        var codes = magnitudes.mul(fires.to(ScalarType.Float32));
        var x = codes.matmul(directions);
        if (config.Noise > 0) x = x.Add(randn(new long[] { rows, d }, generator: gen).Mul(config.Noise / Math.Sqrt(d)));
        return new SyntheticData(config, x.MoveToOuterDisposeScope(), codes.MoveToOuterDisposeScope(), directions.MoveToOuterDisposeScope());
    }

    /// <summary>Writes the activations alone (what <c>dict train --activations-file</c> reads): a float32 tensor <c>activations</c> [N, d].</summary>
    public void SaveActivations(string path) =>
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["activations"] = Activations }, new Dictionary<string, string> { ["mechanist_synthetic"] = Describe() });

    /// <summary>Writes the ground truth: <c>activations</c>, <c>codes</c>, <c>directions</c>, and the config (hierarchy included) in the metadata.</summary>
    public void SaveGroundTruth(string path) =>
        SafetensorsWriter.Write(path, new Dictionary<string, Tensor> { ["activations"] = Activations, ["codes"] = Codes, ["directions"] = Directions },
            new Dictionary<string, string> { ["mechanist_synthetic"] = Describe() });

    string Describe() => JsonSerializer.Serialize(Config);

    /// <summary>Reads a ground-truth file written by <see cref="SaveGroundTruth"/>, checking its shapes.</summary>
    public static SyntheticData LoadGroundTruth(string path)
    {
        if (!File.Exists(path)) throw new MechanistException($"{path}: ground-truth file not found");
        using var file = SafetensorsFile.Open(path);
        foreach (var name in new[] { "activations", "codes", "directions" })
            if (!file.Contains(name)) throw new MechanistException($"{path}: not a ground-truth file (no '{name}' tensor; write one with mechanist dict synth)");
        var config = file.Metadata.TryGetValue("mechanist_synthetic", out var json) ? JsonSerializer.Deserialize<SyntheticConfig>(json)
            ?? throw new MechanistException($"{path}: unreadable synthetic config") : throw new MechanistException($"{path}: no synthetic config in its metadata");
        var x = file.Read("activations").to(ScalarType.Float32); var codes = file.Read("codes").to(ScalarType.Float32); var dirs = file.Read("directions").to(ScalarType.Float32);
        if (x.dim() != 2 || codes.dim() != 2 || dirs.dim() != 2 || codes.shape[0] != x.shape[0] || dirs.shape[0] != codes.shape[1] || dirs.shape[1] != x.shape[1]
            || dirs.shape[0] != config.Features || dirs.shape[1] != config.DModel)
            throw new MechanistException($"{path}: shapes disagree (activations [{string.Join(", ", x.shape)}], codes [{string.Join(", ", codes.shape)}], directions [{string.Join(", ", dirs.shape)}])");
        return new SyntheticData(config, x, codes, dirs);
    }

    /// <summary>Reads the float32 tensor <c>activations</c> [N, d] of a safetensors file (a synthetic set, or activations from anywhere).</summary>
    public static Tensor ReadActivations(string path)
    {
        if (!File.Exists(path)) throw new MechanistException($"{path}: activations file not found");
        using var file = SafetensorsFile.Open(path);
        if (!file.Contains("activations")) throw new MechanistException($"{path}: no tensor named 'activations' (it holds {string.Join(", ", file.Names.Take(5))})");
        var shape = file.ShapeOf("activations");
        if (shape.Length != 2 || shape[0] < 1 || shape[1] < 1) throw new MechanistException($"{path}: 'activations' must be [N, d], not [{string.Join(", ", shape)}]");
        var x = file.Read("activations");
        if (x.dtype != ScalarType.Float32) { using (x) throw new MechanistException($"{path}: 'activations' must be float32, not {x.dtype}"); }
        using (var finite = x.isfinite().all()) if (!finite.item<bool>()) { x.Dispose(); throw new MechanistException($"{path}: 'activations' holds NaN or infinite values"); }
        return x;
    }

    /// <inheritdoc/>
    public void Dispose() { Activations.Dispose(); Codes.Dispose(); Directions.Dispose(); }
}
