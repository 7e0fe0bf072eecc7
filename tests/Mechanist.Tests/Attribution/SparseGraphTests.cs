using System.Text.Json;
using Mechanist.Attribution;
using Mechanist.IO;
using Mechanist.Tests.Cli;
using static TorchSharp.torch;

namespace Mechanist.Tests.Attribution;

/// <summary>Sparse edges, per-row caps, selection thresholds and the graph index, by hand and against the golden graphs.</summary>
public class SparseGraphTests
{
    [Fact]
    public void CumulativeThresholdIsTheSortedDefinition()
    {
        // By hand: 5, 3, 2 of 10 → shares 0.5, 0.8, 1.0; 80 % is reached at 3, 50 % at 5, 81 % at 2.
        Assert.Equal(3, Selection.CumulativeThreshold(new double[] { 0, 2, 5, 0, 3 }, 0.8));
        Assert.Equal(5, Selection.CumulativeThreshold(new double[] { 0, 2, 5, 0, 3 }, 0.5));
        Assert.Equal(2, Selection.CumulativeThreshold(new double[] { 0, 2, 5, 0, 3 }, 0.81));
        // Ties: 4, 4, 1, 1 of 10 → 0.4, 0.8, 0.9, 1.0.
        Assert.Equal(4, Selection.CumulativeThreshold(new double[] { 1, 4, 1, 4 }, 0.8));
        Assert.Equal(1, Selection.CumulativeThreshold(new double[] { 1, 4, 1, 4 }, 0.85));
        // Random arrays (with repeated values) against sorting them.
        var rng = new Random(3);
        for (int trial = 0; trial < 200; trial++)
        {
            var values = Enumerable.Range(0, rng.Next(1, 300)).Select(_ => rng.Next(4) == 0 ? 0.0 : Math.Round(rng.NextDouble() * 20) / 4).ToArray();
            double fraction = rng.NextDouble();
            var sorted = values.OrderByDescending(v => v).ToArray();
            double total = sorted.Sum(), running = 0, expected = sorted[^1];
            foreach (var v in sorted) { running += v; if (running / total >= fraction) { expected = v; break; } }
            Assert.Equal(expected, Selection.CumulativeThreshold((double[])values.Clone(), fraction));
        }
    }

    [Fact]
    public void RowsSetFromColumnRunsAndBuiltOverKeptNodesAreTheDenseRowsSelected()
    {
        // Rows of a 9-node graph written out by hand: a row set from runs of columns equals the same row set densely, and the
        // graph built over the kept nodes is the whole graph with the other nodes' rows and columns removed.
        float[][] dense =
        {
            new float[] { 0, 1, 0, 2, 0, 0, 3, 0, 0 },
            new float[] { 4, 0, 0, 0, 5, 0, 0, 0, 6 },
            new float[] { 0, 0, 0, 0, 0, 0, 0, 0, 0 },
            new float[] { 0, 0, 7, 0, 0, 8, 0, 9, 0 },
        };
        var byRuns = new SparseAdjacency.Builder(9);
        var runs = new[] { (0, 2), (3, 2), (6, 3) };   // columns 2 and 5 lie outside every run: they must be zero in the row
        for (int r = 0; r < dense.Length; r++)
        {
            if (r == 3) { byRuns.SetRow(r, dense[r]); continue; }
            var values = runs.SelectMany(x => dense[r].Skip(x.Item1).Take(x.Item2)).ToArray();
            byRuns.SetRow(r, values, runs);
        }
        var whole = byRuns.Build();
        Assert.Equal(new[] { 1, 3, 6 }, Enumerable.Range(0, 3).Select(e => whole.Column[e]).ToArray());   // row 0: columns 1, 3, 6
        Assert.Equal(new[] { 1f, 2f, 3f, 4f, 5f, 6f, 7f, 8f, 9f }, whole.Value);
        var keep = new[] { 0, 3, 5, 6, 8 };
        var kept = byRuns.Build(keep);
        // By hand: rows 0 and 3 (new 0 and 1) keep the columns among {0, 3, 5, 6, 8} (new 0..4): row 0 -> (3:2, 6:3), row 3 -> (5:8).
        Assert.Equal(5, kept.Size);
        Assert.Equal(new long[] { 0, 2, 3, 3, 3, 3 }, kept.RowStart);
        Assert.Equal(new[] { 1, 3, 2 }, kept.Column);
        Assert.Equal(new[] { 2f, 3f, 8f }, kept.Value);
        Assert.Throws<ArgumentException>(() => byRuns.Build(new[] { 3, 0 }));
        Assert.Throws<ArgumentException>(() => byRuns.SetRow(0, new float[3], new[] { (4, 2), (3, 1) }));
    }

    [Fact]
    public void RowCapKeepsTheLargestEdgesAndCountsTheRest()
    {
        var b = new SparseAdjacency.Builder(5, maxPerRow: 2);
        b.SetRow(0, new float[] { 0, -4, 1, 3, 0.5f });
        b.SetRow(2, new float[] { 0, 0, 0, 2, 0 });
        var a = b.Build();
        Assert.Equal(new long[] { 0, 2, 2, 3, 3, 3 }, a.RowStart);
        Assert.Equal(new[] { 1, 3, 3 }, a.Column);
        Assert.Equal(new[] { -4f, 3f, 2f }, a.Value);
        Assert.Equal(1.5, a.DroppedAbs[0], 6);
        // Normalised by the whole row's |sum| 8.5, dropped edges included.
        var normalized = Pruning.Normalize(a);
        Assert.Equal(4 / 8.5, normalized[0], 12);
        Assert.Equal(3 / 8.5, normalized[1], 12);
        Assert.Equal(1.0, normalized[2], 12);
    }

    [Theory]
    [InlineData("llama_clt_jumprelu")]
    [InlineData("gpt2_plt_relu")]
    public void CappedGraphsKeepEachRowsLargestGoldenEdges(string name)
    {
        using var c = new AttributionGoldenTests.Case(name);
        var (reference, rm) = (c.Reference, c.Rm);
        using var scope = NewDisposeScope();
        const int cap = 6;
        var graph = Attributor.Attribute(rm, new AttributionOptions(MaxEdgesPerRow: cap));
        var expected = reference.Read("adjacency").to(ScalarType.Float32).data<float>().ToArray();
        int n = graph.Nodes.Length;
        double max = expected.Max(Math.Abs);
        for (int r = 0; r < n; r++)
        {
            var row = expected.Skip(r * n).Take(n).Select((v, c) => (v, c)).Where(x => x.v != 0).OrderByDescending(x => Math.Abs(x.v)).ToList();
            var kept = Enumerable.Range((int)graph.Edges.RowStart[r], (int)(graph.Edges.RowStart[r + 1] - graph.Edges.RowStart[r])).ToList();
            Assert.Equal(Math.Min(cap, row.Count), kept.Count);
            // Every kept edge is at least as large as every dropped one (ties within the tolerance may swap).
            double smallestKept = kept.Count == 0 ? double.PositiveInfinity : kept.Min(e => Math.Abs(graph.Edges.Value[e]));
            double largestDropped = row.Count > cap ? Math.Abs(row[cap].v) : 0;
            Assert.True(smallestKept >= largestDropped - 1e-5 * max, $"{name} row {r}: kept {smallestKept} < dropped {largestDropped}");
            foreach (int e in kept) Assert.Equal(expected[r * n + graph.Edges.Column[e]], graph.Edges.Value[e], 1e-5 * max);
            Assert.Equal(row.Skip(cap).Sum(x => Math.Abs(x.v)), graph.Edges.DroppedAbs[r], 1e-4 * max);
        }
    }

    [Fact]
    public void TraceKeepsAGraphIndexForTheFrontend()
    {
        using var dir = new TempDir();
        string[] common = { "trace", "--prompt", "The capital of the state containing Dallas is", "--max-feature-nodes", "20" };
        Assert.Equal(0, CliRunner.Run(common.Concat(new[] { "--out", dir.File("dallas.json") }).ToArray()).Code);
        Assert.Equal(0, CliRunner.Run("trace", "--prompt", "The capital of Texas is", "--max-feature-nodes", "20", "--out", dir.File("texas.json")).Code);
        Assert.Equal(0, CliRunner.Run(common.Concat(new[] { "--out", dir.File("dallas.json"), "--node-threshold", "0.7" }).ToArray()).Code);
        var graphs = JsonDocument.Parse(File.ReadAllText(dir.File("graph-metadata.json"))).RootElement.GetProperty("graphs").EnumerateArray().ToList();
        Assert.Equal(new[] { "texas", "dallas" }, graphs.Select(g => g.GetProperty("slug").GetString()));
        Assert.Equal(0.7, graphs[1].GetProperty("node_threshold").GetDouble());
        Assert.Equal("The capital of Texas is", string.Join(" ", graphs[0].GetProperty("prompt_tokens").EnumerateArray().Select(t => t.GetString()).Skip(1)));
        // A broken index is named, and left as it was.
        File.WriteAllText(dir.File("graph-metadata.json"), "{ not json");
        var (code, _, err) = CliRunner.Run(common.Concat(new[] { "--out", dir.File("again.json") }).ToArray());
        Assert.Equal(2, code);
        Assert.Contains("graph-metadata.json: not JSON", err);
        Assert.Equal("{ not json", File.ReadAllText(dir.File("graph-metadata.json")));
        Assert.False(File.Exists(dir.File("again.json")));
    }
}
