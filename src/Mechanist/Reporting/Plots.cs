using Mechanist.IO;

namespace Mechanist.Reporting;

/// <summary>PNG charts (ScottPlot), written atomically.</summary>
public static class Plots
{
    /// <summary>A training loss curve with a moving average.</summary>
    public static void LossCurve(IReadOnlyList<double> losses, string path, string title, string yLabel = "cross-entropy (nats/token)")
    {
        var plot = new ScottPlot.Plot();
        var xs = Enumerable.Range(1, losses.Count).Select(i => (double)i).ToArray();
        var raw = plot.Add.Scatter(xs, losses.ToArray());
        raw.MarkerSize = 0; raw.LineWidth = 1; raw.Color = ScottPlot.Colors.LightGray; raw.LegendText = "loss";
        int window = Math.Max(1, losses.Count / 50);
        var smooth = losses.Select((_, i) => losses.Skip(Math.Max(0, i - window + 1)).Take(Math.Min(window, i + 1)).Average()).ToArray();
        var avg = plot.Add.Scatter(xs, smooth);
        avg.MarkerSize = 0; avg.LineWidth = 2; avg.LegendText = $"moving average ({window} steps)";
        plot.Title(title);
        plot.XLabel("step"); plot.YLabel(yLabel);
        plot.ShowLegend();
        Save(plot, path, 800, 450);
    }

    /// <summary>A heatmap of values [rows][columns] with labelled axes.</summary>
    public static void Heatmap(double[][] values, string[] rowLabels, string[] columnLabels, string path, string title, string colorbarLabel)
    {
        var plot = new ScottPlot.Plot();
        int rows = values.Length, cols = values[0].Length;
        var data = new double[rows, cols];
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) data[r, c] = values[r][c];
        var hm = plot.Add.Heatmap(data);
        hm.Colormap = new ScottPlot.Colormaps.Viridis();
        plot.Add.ColorBar(hm).Label = colorbarLabel;
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, cols).Select(i => (double)i).ToArray(), columnLabels);
        plot.Axes.Bottom.TickLabelStyle.Rotation = 60;
        plot.Axes.Bottom.TickLabelStyle.Alignment = ScottPlot.Alignment.MiddleLeft;
        plot.Axes.Left.SetTicks(Enumerable.Range(0, rows).Select(i => (double)(rows - 1 - i)).ToArray(), rowLabels);
        plot.Title(title);
        Save(plot, path, Math.Max(600, 40 * cols + 200), Math.Max(400, 28 * rows + 200));
    }

    /// <summary>Lines per layer (e.g. linearity, intrinsic dimension).</summary>
    public static void Curves(IReadOnlyDictionary<string, double[]> series, string path, string title, string xLabel, string yLabel)
    {
        var plot = new ScottPlot.Plot();
        foreach (var (name, ys) in series)
        {
            var line = plot.Add.Scatter(Enumerable.Range(0, ys.Length).Select(i => (double)i).ToArray(), ys);
            line.LegendText = name;
        }
        plot.Title(title); plot.XLabel(xLabel); plot.YLabel(yLabel);
        plot.ShowLegend();
        Save(plot, path, 800, 450);
    }

    /// <summary>A node of <see cref="LayeredGraph"/>: position on the grid, label (may be empty), marker size, and its kind's colour index.</summary>
    public sealed record GraphMarker(double X, double Y, string Label, double Size, int Kind);

    /// <summary>
    /// A layered graph (attribution graphs): markers on an x = position, y = layer grid, edges as lines blue for positive and red
    /// for negative weights, their opacity and width by |weight| relative to the largest.
    /// </summary>
    public static void LayeredGraph(IReadOnlyList<GraphMarker> nodes, IReadOnlyList<(int From, int To, double Weight)> edges, string[] xLabels, (double Y, string Label)[] yLabels,
        string path, string title)
    {
        var plot = new ScottPlot.Plot();
        double max = edges.Count == 0 ? 1 : edges.Max(e => Math.Abs(e.Weight));
        foreach (var (from, to, w) in edges.OrderBy(e => Math.Abs(e.Weight)))
        {
            double strength = Math.Abs(w) / max;
            var line = plot.Add.Line(nodes[from].X, nodes[from].Y, nodes[to].X, nodes[to].Y);
            line.LineWidth = (float)(0.5 + 3.5 * strength);
            line.Color = (w >= 0 ? ScottPlot.Colors.SteelBlue : ScottPlot.Colors.Crimson).WithAlpha(0.15 + 0.75 * strength);
        }
        var palette = new[] { ScottPlot.Colors.DarkOrange, ScottPlot.Colors.Gray, ScottPlot.Colors.SeaGreen, ScottPlot.Colors.MediumPurple };
        foreach (var n in nodes)
        {
            var m = plot.Add.Marker(n.X, n.Y);
            m.MarkerSize = (float)n.Size; m.Color = palette[n.Kind % palette.Length];
            if (n.Label.Length > 0)
            {
                var t = plot.Add.Text(n.Label, n.X, n.Y + 0.18);
                t.LabelFontSize = 11; t.LabelAlignment = ScottPlot.Alignment.LowerCenter;
            }
        }
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, xLabels.Length).Select(i => (double)i).ToArray(), xLabels);
        plot.Axes.Left.SetTicks(yLabels.Select(y => y.Y).ToArray(), yLabels.Select(y => y.Label).ToArray());
        plot.Title(title);
        Save(plot, path, Math.Max(900, 110 * xLabels.Length), 650);
    }

    static void Save(ScottPlot.Plot plot, string path, int width, int height)
    {
        var bytes = plot.GetImageBytes(width, height, ScottPlot.ImageFormat.Png);
        AtomicFile.Write(path, s => s.Write(bytes));
    }
}
