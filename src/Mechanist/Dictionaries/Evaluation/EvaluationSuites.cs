using System.Text;
using Mechanist.Dictionaries.Formats;
using Mechanist.IO;
using Mechanist.Models;
using Mechanist.Reporting;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Dictionaries.Evaluation;

/// <summary>The SAEBench-style suites of <c>dict eval --suite</c>.</summary>
public enum EvaluationSuite
{
    /// <summary>Reconstruction, sparsity, density and the model's loss with the dictionary spliced in.</summary>
    Core,
    /// <summary>Sparse probing on toy-world labels against a probe on the raw activations.</summary>
    Probing,
    /// <summary>Feature absorption on toy-world word categories.</summary>
    Absorption,
}

/// <summary>Features whose firing rate falls in one decade.</summary>
/// <param name="Range">The decade, as printed.</param>
/// <param name="Low">Lowest rate (exclusive; 0 for the dead bin, which holds exactly 0).</param>
/// <param name="High">Highest rate (inclusive).</param>
/// <param name="Features">Features in it.</param>
public sealed record DensityBin(string Range, double Low, double High, int Features);

/// <summary>What the core suite adds to the per-layer reconstruction metrics.</summary>
/// <param name="Layer">Dictionary layer.</param>
/// <param name="ExplainedVariance">1 − FVU.</param>
/// <param name="ReconstructionCosine">Mean cosine of each reconstruction with its target.</param>
/// <param name="L2Ratio">Mean ‖x̂‖ / ‖x‖ (below 1: shrinkage).</param>
/// <param name="Density">Histogram of the features' firing rates by decade (SAEBench's feature-density plot).</param>
public sealed record CoreLayer(int Layer, double ExplainedVariance, double ReconstructionCosine, double L2Ratio, DensityBin[] Density);

/// <summary>The core suite's report.</summary>
/// <param name="Suite">"core".</param>
/// <param name="Model">The model.</param>
/// <param name="Layers">Reconstruction, L0, dead and dense shares per layer.</param>
/// <param name="Extras">Explained variance, cosine, L2 ratio and density per layer.</param>
/// <param name="Splice">Loss recovered, KL and agreement with the dictionary spliced in.</param>
public sealed record CoreReport(string Suite, string Model, DictionaryLayerMetrics[] Layers, CoreLayer[] Extras, SpliceMetrics Splice);

/// <summary>Runs the suites on a model and writes their reports beside the dictionary.</summary>
public static class EvaluationSuites
{
    /// <summary>The suites' names.</summary>
    public static readonly NameTable<EvaluationSuite> Names = new("evaluation suite",
        new[] { (EvaluationSuite.Core, "core"), (EvaluationSuite.Probing, "probing"), (EvaluationSuite.Absorption, "absorption") });

    /// <summary>The core suite on held-out <paramref name="texts"/>.</summary>
    public static CoreReport Core(HookedTransformer model, DictionaryBundle bundle, IReadOnlyList<string> texts, long tokens)
    {
        var (inputs, targets) = bundle.HarvestHooks(model);
        using var held = ActivationHarvest.Collect(model, texts, inputs, targets, tokens);
        var (layers, extras) = Measure(bundle.Dictionary, held);
        var splice = DictionaryEvaluation.Spliced(model, texts, bundle.Splice(ErrorTerm.None), targets, tokens);
        return new CoreReport("core", model.Name, layers, extras, splice);
    }

    /// <summary>Decades of firing rate, from "dead" to (0.1, 1].</summary>
    static readonly (string Range, double Low, double High)[] Decades =
    {
        ("dead", 0, 0), ("≤1e-5", 0, 1e-5), ("1e-5–1e-4", 1e-5, 1e-4), ("1e-4–1e-3", 1e-4, 1e-3), ("1e-3–1e-2", 1e-3, 1e-2), ("1e-2–0.1", 1e-2, 0.1), ("0.1–1", 0.1, 1),
    };

    /// <summary>Explained variance, cosine, L2 ratio and firing-rate histogram of each layer of <paramref name="dictionary"/> on <paramref name="data"/>, with the layer metrics.</summary>
    public static (DictionaryLayerMetrics[] Layers, CoreLayer[] Extras) Measure(ICrossLayerDictionary dictionary, ActivationSet data)
    {
        var (metrics, cos, ratio, fires) = DictionaryEvaluation.Measure(dictionary, data);
        long n = data.Rows;
        var extras = metrics.Select(m =>
        {
            var rates = fires[m.Layer].Select(v => (double)v / n).ToArray();
            var bins = Decades.Select(d => new DensityBin(d.Range, d.Low, d.High,
                d.High == 0 ? rates.Count(x => x == 0) : rates.Count(x => x > d.Low && x <= d.High))).ToArray();
            return new CoreLayer(m.Layer, 1 - m.Fvu, cos[m.Layer] / n, ratio[m.Layer] / n, bins);
        }).ToArray();
        return (metrics, extras);
    }

    /// <summary>
    /// The probing suite: the toy world's tasks read at the dictionary's input of each layer in <paramref name="layers"/> (all when
    /// null), 20 % of each class held out.
    /// </summary>
    public static SparseProbingReport Probing(HookedTransformer model, DictionaryBundle bundle, int[]? layers, int seed, int[]? ks = null)
    {
        ks ??= SparseProbing.DefaultKs;
        var d = bundle.Dictionary;
        var chosen = Layers(d, layers);
        var tasks = ToyProbeTasks.SparseProbing(seed);
        var items = tasks.SelectMany(t => t.Positives.Concat(t.Negatives)).ToArray();
        var (inputs, _) = bundle.HarvestHooks(model);
        using var acts = ProbeActivations.Collect(model, items, inputs);
        var results = new List<SparseProbeResult>();
        int offset = 0;
        foreach (var t in tasks)
        {
            int count = t.Positives.Length + t.Negatives.Length;
            var labels = Enumerable.Range(0, count).Select(i => i < t.Positives.Length).ToArray();
            var isTest = SparseProbing.Split(labels, 0.2, seed);
            foreach (int l in chosen)
            {
                using var scope = NewDisposeScope();
                var raw = acts.narrow(0, offset, count).select(1, l);
                results.Add(SparseProbing.Probe(t.Name, t.Description, l, raw, d.Encode(l, raw), labels, isTest, ks));
            }
            offset += count;
        }
        var summary = chosen.Select(l =>
        {
            var at = results.Where(r => r.Layer == l).ToArray();
            return new SparseProbingLayer(l, at.Average(r => r.RawAccuracy), ks.Select((_, i) => at.Average(r => r.Sparse[i].Accuracy)).ToArray());
        }).ToArray();
        return new SparseProbingReport("probing", model.Name, ks, seed, results.ToArray(), summary);
    }

    /// <summary>
    /// The absorption suite: every categorised word of 1,500 toy-corpus lines read where the dictionary writes, a fifth of each
    /// category's words held out. Needs latents that write only to their own layer (an SAE or transcoders; not a CLT).
    /// </summary>
    public static AbsorptionReport Absorption(HookedTransformer model, DictionaryBundle bundle, int[]? layers, int seed, AbsorptionOptions? options = null)
    {
        options ??= new AbsorptionOptions();
        var d = bundle.Dictionary;
        var chosen = Layers(d, layers);
        foreach (int l in chosen)
            if (d.Layer(l) is null) throw new MechanistException("absorption needs latents that write only to their own layer (an SAE or transcoders): a cross-layer transcoder's features write to every later layer");
        var readings = ToyProbeTasks.WordsInContext(ToyProbeTasks.ContextLines(1500, seed));
        var (inputs, targets) = bundle.HarvestHooks(model);
        using var input = ProbeActivations.Collect(model, readings.Select(r => r.Item).ToArray(), inputs);
        using var written = inputs.SequenceEqual(targets) ? input.alias() : ProbeActivations.Collect(model, readings.Select(r => r.Item).ToArray(), targets);
        var words = readings.Select(r => r.Item.Word).ToArray();
        var categories = readings.Select(r => r.Category).ToArray();
        var held = FeatureAbsorption.HeldOutWords(readings.Select(r => (r.Category, r.Item.Word)), 0.2, seed);
        var results = new List<AbsorptionCategoryResult>();
        foreach (int l in chosen)
        {
            using var scope = NewDisposeScope();
            var latents = d.Encode(l, input.select(1, l));
            var decoder = d.DecoderRows(l, l, SafeOps.Arange(d.DDict));
            foreach (var (category, _) in ToyProbeTasks.Categories)
                results.Add(FeatureAbsorption.Category(category, l, written.select(1, l), latents, decoder, categories, words, held, options));
        }
        return new AbsorptionReport("absorption", model.Name, seed, options, results.ToArray(), FeatureAbsorption.Summarise(results));
    }

    static int[] Layers(ICrossLayerDictionary d, int[]? layers)
    {
        var chosen = layers ?? Enumerable.Range(0, d.NLayers).ToArray();
        foreach (int l in chosen)
            if (l < 0 || l >= d.NLayers) throw new MechanistException($"--layer {l} is out of range: the dictionary has {d.NLayers} layer(s) (0–{d.NLayers - 1})");
        return chosen;
    }

    /// <summary>The card section of a report (markdown: a sentence and a table).</summary>
    public static string Markdown(object report) => report switch
    {
        CoreReport c => CoreMarkdown(c),
        SparseProbingReport p => ProbingMarkdown(p),
        AbsorptionReport a => AbsorptionMarkdown(a),
        _ => throw new ArgumentException($"not a suite report: {report.GetType().Name}"),
    };

    static string CoreMarkdown(CoreReport c)
    {
        var sb = new StringBuilder();
        var s = c.Splice;
        sb.AppendLine($"Core (on {c.Model}, {s.Tokens:N0} held-out tokens): loss recovered **{s.LossRecovered:P1}** ({s.CleanLoss:F3} clean, {s.SplicedLoss:F3} spliced, {s.ZeroAblatedLoss:F3} zero-ablated), KL {s.Kl:F4}, top-1 agreement {s.TopTokenAgreement:P1}.");
        sb.AppendLine();
        sb.AppendLine("| layer | L0 | explained variance | cosine | ‖x̂‖/‖x‖ | dead | dense (>10 %) | firing-rate histogram (" + string.Join(" / ", Decades.Select(d => d.Range)) + ") |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var (m, e) in c.Layers.Zip(c.Extras))
            sb.AppendLine($"| {m.Layer} | {m.L0:F1} | {e.ExplainedVariance:F4} | {e.ReconstructionCosine:F4} | {e.L2Ratio:F3} | {m.DeadFraction:P1} | {m.DenseFraction:P1} | {string.Join(" / ", e.Density.Select(b => b.Features))} |");
        return sb.ToString();
    }

    static string ProbingMarkdown(SparseProbingReport p)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"Sparse probing (on {p.Model}, toy-world tasks, seed {p.Seed}): held-out accuracy of a logistic probe on the raw activations vs on the best k latents (0.5 is chance).");
        sb.AppendLine();
        sb.AppendLine("| layer | task | raw | " + string.Join(" | ", p.Ks.Select(k => $"k = {k}")) + " | top latents |");
        sb.AppendLine("|---|---|---|" + string.Concat(p.Ks.Select(_ => "---|")) + "---|");
        foreach (var r in p.Tasks)
            sb.AppendLine($"| {r.Layer} | {r.Task} | {r.RawAccuracy:F3} | " + string.Join(" | ", r.Sparse.Select(s => s.Accuracy.ToString("F3"))) + $" | {string.Join(", ", r.Sparse[^1].Latents)} |");
        foreach (var l in p.Layers)
            sb.AppendLine($"| {l.Layer} | **mean** | **{l.RawAccuracy:F3}** | " + string.Join(" | ", l.SparseAccuracy.Select(a => $"**{a:F3}**")) + " | |");
        return sb.ToString();
    }

    static string AbsorptionMarkdown(AbsorptionReport a)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"Absorption (on {a.Model}, toy-world word categories in place of first letters, seed {a.Seed}): on held-out words the raw probe recognises, the share of the category's probe projection other latents carry (fraction) and how often one other latent takes it over entirely (full).");
        sb.AppendLine();
        sb.AppendLine("| layer | category | probe F1 | main latents | scored | absorption fraction | full absorption | top absorbers |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var c in a.Categories)
            sb.AppendLine(c.Skipped is { } why
                ? $"| {c.Layer} | {c.Category} | {(double.IsNaN(c.ProbeF1) ? "–" : c.ProbeF1.ToString("F2"))} | – | – | – | – | not scored: {why} |"
                : $"| {c.Layer} | {c.Category} | {c.ProbeF1:F2} | {string.Join(", ", c.MainLatents)} | {c.ProbeTruePositives} | {c.MeanAbsorptionFraction:F3} | {c.FullAbsorptionRate:F3} | " +
                  string.Join("; ", c.Absorbers.Take(3).Select(x => $"{x.Latent} ({string.Join(", ", x.Words.Take(3))})")) + " |");
        foreach (var l in a.Layers)
            sb.AppendLine(l.Categories == 0
                ? $"| {l.Layer} | **no category scored** (the model's activations here do not separate them linearly) | | | | | | |"
                : $"| {l.Layer} | **mean of {l.Categories}** | | {l.MeanMainLatents:F1} | | **{l.MeanAbsorptionFraction:F3}** | **{l.MeanFullAbsorption:F3}** | |");
        return sb.ToString();
    }

    /// <summary>
    /// Writes <c>eval/SUITE.json</c> in <paramref name="dir"/> and puts the report's section in its README.md (replacing the suite's
    /// earlier section; a card is started when there is none), each file atomically.
    /// </summary>
    public static void Save(string dir, EvaluationSuite suite, object report)
    {
        if (!Directory.Exists(dir)) throw new MechanistException($"{dir}: no such folder to write the report in");
        string name = Names.Name(suite);
        Directory.CreateDirectory(Path.Combine(dir, "eval"));
        AtomicFile.WriteText(Path.Combine(dir, "eval", $"{name}.json"), JsonFormat.Serialize(report) + "\n");
        string card = Path.Combine(dir, "README.md");
        string text = File.Exists(card) ? File.ReadAllText(card) : "# Dictionary card\n";
        string begin = $"<!-- mechanist eval {name} -->", end = $"<!-- /mechanist eval {name} -->";
        int from = text.IndexOf(begin, StringComparison.Ordinal), to = text.IndexOf(end, StringComparison.Ordinal);
        if (from >= 0 && to > from) text = text[..from].TrimEnd() + "\n" + text[(to + end.Length)..].TrimStart('\n');
        var section = $"{begin}\n## Evaluation: {name}\n\n{Markdown(report)}\nFull report: [eval/{name}.json](eval/{name}.json)\n{end}\n";
        AtomicFile.WriteText(card, text.TrimEnd() + "\n\n" + section);
    }
}
