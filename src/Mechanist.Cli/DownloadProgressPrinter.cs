using Mechanist.IO.Hub;

namespace Mechanist.Cli;

/// <summary>Prints download progress as a single updating line on stderr.</summary>
public sealed class DownloadProgressPrinter(TextWriter err) : IProgress<DownloadProgress>
{
    string? _file;
    DateTime _last;

    /// <inheritdoc/>
    public void Report(DownloadProgress p)
    {
        bool done = p.Total is { } t && p.Done >= t;
        if (p.File == _file && !done && DateTime.UtcNow - _last < TimeSpan.FromMilliseconds(200)) return;
        _file = p.File; _last = DateTime.UtcNow;
        string size = p.Total is { } total ? $"{p.Done / 1e6:F1}/{total / 1e6:F1} MB {100.0 * p.Done / Math.Max(1, total),5:F1}%" : $"{p.Done / 1e6:F1} MB";
        int width = 30;
        int filled = p.Total is { } tt && tt > 0 ? (int)(width * p.Done / tt) : 0;
        err.Write($"\r  {p.File,-32} [{new string('#', filled)}{new string('.', width - filled)}] {size}   ");
        if (done) err.WriteLine();
    }
}
