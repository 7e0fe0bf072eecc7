using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>What a patching grid varies over. The kebab-case names (resid, attn, mlp, heads, heads-pos, head-qkv) are the vocabulary of the CLI, the web and JSON.</summary>
public enum PatchTarget
{
    /// <summary>The residual stream entering each layer, per position (layer × position).</summary>
    Resid,
    /// <summary>Each attention output, per position.</summary>
    Attn,
    /// <summary>Each MLP output, per position.</summary>
    Mlp,
    /// <summary>Each head's output (hook_z) at every position (layer × head).</summary>
    Heads,
    /// <summary>Each head's output per position (layer·head × position).</summary>
    HeadsPos,
    /// <summary>Each head's query, key, value and pattern (layer·{q,k,v,pattern} × head).</summary>
    HeadQkv,
}

/// <summary>The patching vocabulary as words.</summary>
public static class PatchTargets
{
    /// <summary>Every target's name: resid, attn, mlp, heads, heads-pos, head-qkv.</summary>
    public static readonly string[] Names = Enum.GetValues<PatchTarget>().Select(Name).ToArray();

    /// <summary>The word of a target.</summary>
    public static string Name(PatchTarget target) => System.Text.Json.JsonNamingPolicy.KebabCaseLower.ConvertName(target.ToString());

    /// <summary>The target of a word; a clear error listing the words otherwise.</summary>
    public static PatchTarget Parse(string? name) =>
        Enum.GetValues<PatchTarget>().FirstOrDefault(t => Name(t) == name, (PatchTarget)(-1)) is var t && Enum.IsDefined(t) ? t
            : throw new MechanistException($"unknown patching target '{(name is { Length: > 40 } ? name[..40] + "…" : name)}' (use {string.Join(", ", Names)})");
}

/// <summary>How the grid is computed.</summary>
public enum PatchMethod
{
    /// <summary>One forward pass per cell.</summary>
    Exact,
    /// <summary>First-order (gradient) approximation from two forwards and one backward.</summary>
    Attribution,
}

/// <summary>A normalised patching grid: 1 = the clean behaviour restored, 0 = as corrupted.</summary>
/// <param name="Target">What was patched.</param>
/// <param name="Method">Exact or attribution.</param>
/// <param name="Metric">The metric's description.</param>
/// <param name="RowLabels">Row labels (layers, or layer·head).</param>
/// <param name="ColumnLabels">Column labels (positions or heads).</param>
/// <param name="Scores">[row][column] normalised scores.</param>
/// <param name="CleanMetric">Metric on the clean prompt.</param>
/// <param name="CorruptedMetric">Metric on the corrupted prompt.</param>
public sealed record PatchGrid(PatchTarget Target, PatchMethod Method, string Metric, string[] RowLabels, string[] ColumnLabels,
    double[][] Scores, double CleanMetric, double CorruptedMetric)
{
    /// <summary>The cell with the largest score.</summary>
    public (string Row, string Column, double Score) Max()
    {
        var best = (Row: RowLabels[0], Column: ColumnLabels[0], Score: double.NegativeInfinity);
        for (int r = 0; r < Scores.Length; r++)
            for (int c = 0; c < Scores[r].Length; c++)
                if (Scores[r][c] > best.Score) best = (RowLabels[r], ColumnLabels[c], Scores[r][c]);
        return best;
    }

    /// <summary>Pearson correlation with another grid of the same shape (e.g. attribution vs exact).</summary>
    public double CorrelationWith(PatchGrid other)
    {
        var a = Scores.SelectMany(r => r).ToArray(); var b = other.Scores.SelectMany(r => r).ToArray();
        if (a.Length != b.Length) throw new MechanistException("grids differ in shape");
        double ma = a.Average(), mb = b.Average();
        double cov = a.Zip(b).Sum(p => (p.First - ma) * (p.Second - mb));
        double va = Math.Sqrt(a.Sum(x => (x - ma) * (x - ma))), vb = Math.Sqrt(b.Sum(x => (x - mb) * (x - mb)));
        return va == 0 || vb == 0 ? double.NaN : cov / (va * vb);
    }
}

/// <summary>
/// Activation patching between a clean and a corrupted prompt of the same length: run the corrupted
/// prompt with one activation taken from the clean run, and see how much of the clean behaviour
/// returns. Attribution patching approximates the same grid with gradients.
/// </summary>
public static partial class ActivationPatching
{
    /// <summary>Computes a patching grid; <paramref name="ct"/> is checked before every patched run (a grid is one forward per cell).</summary>
    public static PatchGrid Run(HookedTransformer model, Tensor clean, Tensor corrupted, PatchMetric metric, PatchTarget target, PatchMethod method = PatchMethod.Exact,
        CancellationToken ct = default)
    {
        if (clean.shape[0] != 1 || corrupted.shape[0] != 1) throw new MechanistException("patching takes one clean and one corrupted prompt");
        if (clean.shape[1] != corrupted.shape[1])
            throw new MechanistException($"the clean prompt has {clean.shape[1]} tokens and the corrupted one {corrupted.shape[1]}; patching needs equal lengths (pick words that are one token each)");
        var cells = Cells(model, target, (int)clean.shape[1]);
        using var scope = NewDisposeScope();
        var names = cells.Select(c => c.Hook).ToHashSet();
        var (cleanLogits, cleanCache) = model.RunWithCache(clean, names.Contains);
        using var _cc = cleanCache;
        double cleanMetric = metric.Compute(cleanLogits).item<float>();
        double corruptedMetric = metric.Compute(model.Run(corrupted)).item<float>();
        double denominator = cleanMetric - corruptedMetric;
        if (Math.Abs(denominator) < 1e-9) throw new MechanistException("the clean and corrupted prompts give the same metric: nothing to patch");

        var (rows, cols) = Labels(model, target, clean);
        var scores = rows.Select(_ => new double[cols.Length]).ToArray();
        if (method == PatchMethod.Exact)
        {
            foreach (var cell in cells)
            {
                ct.ThrowIfCancellationRequested();
                using var cellScope = NewDisposeScope();
                var source = cleanCache[cell.Hook];
                var hook = new ForwardHookSpec(cell.Hook, (x, _) => cell.Patch(x, source));
                double m = metric.Compute(model.RunWithHooks(corrupted, new[] { hook })).item<float>();
                scores[cell.Row][cell.Column] = (m - corruptedMetric) / denominator;
            }
        }
        else
        {
            var (_, corruptCache) = model.RunWithCacheAndGrad(corrupted, metric.Compute, names.Contains);
            using var _kc = corruptCache;
            foreach (var cell in cells)
            {
                using var cellScope = NewDisposeScope();
                var delta = cleanCache[cell.Hook] - corruptCache[cell.Hook];
                var grad = corruptCache[cell.Hook + "_grad"];
                var mask = cell.Patch(zeros_like(delta), ones_like(delta));
                double estimate = (delta * grad * mask).sum().item<float>();
                scores[cell.Row][cell.Column] = estimate / denominator;
            }
        }
        return new PatchGrid(target, method, metric.Describe, rows, cols, scores, cleanMetric, corruptedMetric);
    }

    /// <summary>One cell: which hook, where in the grid, and how to splice the clean value into the activation.</summary>
    sealed record Cell(string Hook, int Row, int Column, Func<Tensor, Tensor, Tensor> Patch);

    static Tensor SpliceAt(Tensor x, Tensor source, int dim, int index)
    {
        var result = x.clone();
        result.index_copy_(dim, tensor(new long[] { index }, device: x.device), source.index_select(dim, tensor(new long[] { index }, device: x.device)));
        return result;
    }

    static Tensor SpliceAt2(Tensor x, Tensor source, int dim1, int index1, int dim2, int index2)
    {
        var mask = zeros_like(x, dtype: ScalarType.Bool);
        var shape = Enumerable.Repeat(1L, (int)x.dim()).ToArray();
        var sel1 = zeros(x.shape[dim1], dtype: ScalarType.Bool, device: x.device); sel1[index1] = true;
        var sel2 = zeros(x.shape[dim2], dtype: ScalarType.Bool, device: x.device); sel2[index2] = true;
        var s1 = (long[])shape.Clone(); s1[dim1] = x.shape[dim1];
        var s2 = (long[])shape.Clone(); s2[dim2] = x.shape[dim2];
        mask = sel1.view(s1).logical_and(sel2.view(s2)).expand(x.shape);
        return where(mask, source, x);
    }

    static List<Cell> Cells(HookedTransformer model, PatchTarget target, int positions)
    {
        var cfg = model.Config;
        var cells = new List<Cell>();
        for (int l = 0; l < cfg.NLayers; l++)
        {
            int layer = l;
            switch (target)
            {
                case PatchTarget.Resid or PatchTarget.Attn or PatchTarget.Mlp:
                    var kind = target switch { PatchTarget.Resid => HookKind.ResidPre, PatchTarget.Attn => HookKind.AttnOut, _ => HookKind.MlpOut };
                    string name = model.HookPoints.Name(kind, l);
                    for (int p = 0; p < positions; p++) { int pos = p; cells.Add(new Cell(name, l, p, (x, s) => SpliceAt(x, s, 1, pos))); }
                    break;
                case PatchTarget.Heads:
                    for (int h = 0; h < cfg.NHeads; h++) { int head = h; cells.Add(new Cell(model.HookPoints.Name(HookKind.Z, l), l, h, (x, s) => SpliceAt(x, s, 2, head))); }
                    break;
                case PatchTarget.HeadsPos:
                    for (int h = 0; h < cfg.NHeads; h++)
                        for (int p = 0; p < positions; p++)
                        {
                            int head = h, pos = p;
                            cells.Add(new Cell(model.HookPoints.Name(HookKind.Z, l), l * cfg.NHeads + h, p, (x, s) => SpliceAt2(x, s, 1, pos, 2, head)));
                        }
                    break;
                case PatchTarget.HeadQkv:
                    HookKind[] kinds = { HookKind.Q, HookKind.K, HookKind.V, HookKind.Pattern };
                    for (int k = 0; k < kinds.Length; k++)
                        for (int h = 0; h < cfg.NHeads; h++)
                        {
                            int head = h;
                            // q/pattern index query heads; k/v index kv heads (GQA): patch the kv head this query head reads.
                            int dim = kinds[k] == HookKind.Pattern ? 1 : 2;
                            int index = kinds[k] is HookKind.K or HookKind.V ? h / cfg.HeadsPerKvHead : h;
                            cells.Add(new Cell(model.HookPoints.Name(kinds[k], l), l * 4 + k, h, (x, s) => SpliceAt(x, s, dim, index)));
                        }
                    break;
            }
        }
        return cells;
    }

    static (string[] Rows, string[] Columns) Labels(HookedTransformer model, PatchTarget target, Tensor tokens)
    {
        var cfg = model.Config;
        var positions = TokenText.Of(model, tokens[0].cpu().data<long>().ToArray()).Select((t, i) => $"{i}:{t}").ToArray();
        var heads = Enumerable.Range(0, cfg.NHeads).Select(h => $"H{h}").ToArray();
        var layers = Enumerable.Range(0, cfg.NLayers).Select(l => $"L{l}").ToArray();
        return target switch
        {
            PatchTarget.Heads => (layers, heads),
            PatchTarget.HeadsPos => (Enumerable.Range(0, cfg.NLayers).SelectMany(l => heads.Select(h => $"L{l}{h}")).ToArray(), positions),
            PatchTarget.HeadQkv => (Enumerable.Range(0, cfg.NLayers).SelectMany(l => new[] { "q", "k", "v", "pattern" }.Select(k => $"L{l} {k}")).ToArray(), heads),
            _ => (layers, positions),
        };
    }
}

/// <summary>One patching experiment: its grids (exact, attribution or both) and, for both, their correlation.</summary>
/// <param name="Grids">The grids, exact first.</param>
/// <param name="Correlation">Pearson correlation of attribution with exact patching, when both ran.</param>
public sealed record PatchingReport(PatchGrid[] Grids, double? Correlation);

/// <summary>Which grids a patching experiment computes.</summary>
public enum PatchMethods
{
    /// <summary>Exact patching only.</summary>
    Exact,
    /// <summary>Attribution patching only.</summary>
    Attribution,
    /// <summary>Both, with their correlation.</summary>
    Both,
}

/// <summary>Exact patching of residual points position by position, for any model that can run with a hook (an encoder-decoder's stacks).</summary>
public static partial class ActivationPatching
{
    /// <summary>
    /// One grid: for each hook point in <paramref name="hooks"/> (a row) and each position (a column), the corrupted run with that point's
    /// activation at that position taken from <paramref name="clean"/>; <paramref name="patchedMetric"/> runs the corrupted input with a hook and
    /// returns the metric. Scores are normalised so that the clean run is 1 and the corrupted run 0.
    /// </summary>
    public static PatchGrid PositionGrid(string metric, string[] hooks, string[] rowLabels, string[] columns, ActivationCache clean, Func<ForwardHookSpec, double> patchedMetric,
        double cleanMetric, double corruptedMetric, CancellationToken ct = default)
    {
        double span = cleanMetric - corruptedMetric;
        if (Math.Abs(span) < 1e-9) throw new MechanistException("the metric is the same on the clean and the corrupted input: nothing to patch");
        var scores = new double[hooks.Length][];
        for (int l = 0; l < hooks.Length; l++)
        {
            scores[l] = new double[columns.Length];
            var source = clean[hooks[l]];
            for (int p = 0; p < columns.Length; p++)
            {
                ct.ThrowIfCancellationRequested();
                using var step = NewDisposeScope();
                int at = p;
                var hook = new ForwardHookSpec(HookFilter.Named(hooks[l]), (x, _) => { var y = x.clone(); y[.., at] = source[.., at]; return y; });
                scores[l][p] = (patchedMetric(hook) - corruptedMetric) / span;
            }
        }
        return new PatchGrid(PatchTarget.Resid, PatchMethod.Exact, metric, rowLabels, columns, scores, cleanMetric, corruptedMetric);
    }
}

/// <summary>A patching experiment from words: what the CLI's <c>patch</c> and the web's patch view both run.</summary>
public static class PatchingExperiment
{
    /// <summary>
    /// Patches <paramref name="target"/> from the clean into the corrupted prompt [1, pos] and reports the grids. The metric reads the
    /// logits at <paramref name="position"/> (negative counts from the end); by default the last position, or for an encoder (a masked LM)
    /// the clean prompt's first mask token when it has one.
    /// </summary>
    public static PatchingReport Run(HookedTransformer model, Tensor clean, Tensor corrupted, string answer, string? wrong, string? metric,
        PatchTarget target, PatchMethods methods = PatchMethods.Exact, int? position = null, CancellationToken ct = default)
    {
        using var scope = NewDisposeScope();
        long a = TokenText.AnswerId(model, answer);
        long? w = string.IsNullOrEmpty(wrong) ? null : TokenText.AnswerId(model, wrong);
        int length = (int)clean.shape[1];
        int at = position ?? TokenText.DefaultPosition(model, clean[0].cpu().data<long>().ToArray());
        if (at < -length || at >= length) throw new MechanistException($"metric position {at} is outside the prompt's {length} tokens (0..{length - 1}, or negative from the end)");
        var m = PatchMetric.Create(metric, a, w, () => model.Run(clean), at);
        var grids = new List<PatchGrid>();
        if (methods != PatchMethods.Attribution) grids.Add(ActivationPatching.Run(model, clean, corrupted, m, target, PatchMethod.Exact, ct));
        if (methods != PatchMethods.Exact) grids.Add(ActivationPatching.Run(model, clean, corrupted, m, target, PatchMethod.Attribution, ct));
        return new PatchingReport(grids.ToArray(), grids.Count == 2 ? grids[0].CorrelationWith(grids[1]) : null);
    }
}
