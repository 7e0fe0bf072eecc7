namespace Mechanist.IO;

/// <summary>Writes files so that a reader never sees a half-written file and a failure leaves the old one intact.</summary>
public static class AtomicFile
{
    /// <summary>
    /// Calls <paramref name="write"/> with a stream on a temporary file beside <paramref name="path"/>,
    /// flushes it to disk, then renames it over the destination. On any failure the temporary file is removed.
    /// </summary>
    public static void Write(string path, Action<Stream> write)
    {
        string full = System.IO.Path.GetFullPath(path);
        string dir = System.IO.Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        string tmp = System.IO.Path.Combine(dir, TempName(full));
        try
        {
            using (var stream = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>The name of a temporary file for <paramref name="path"/>: hidden, beside it, carrying this process's id (see <see cref="RemoveStaleTemps"/>).</summary>
    public static string TempName(string path) => $".{System.IO.Path.GetFileName(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";

    /// <summary>
    /// Removes the temporary files (and SQLite journals beside them) that processes no longer running left for
    /// <paramref name="path"/>; a killed writer leaves its temp file behind. Returns how many were removed.
    /// </summary>
    public static int RemoveStaleTemps(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        string dir = System.IO.Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir)) return 0;
        string prefix = "." + System.IO.Path.GetFileName(full) + ".";
        int removed = 0;
        foreach (var file in Directory.EnumerateFiles(dir, prefix + "*"))
        {
            string name = System.IO.Path.GetFileName(file);
            string rest = name[prefix.Length..];
            int dot = rest.IndexOf('.');
            if (dot <= 0 || !int.TryParse(rest[..dot], out int pid)) continue;
            if (!(rest.EndsWith(".tmp", StringComparison.Ordinal) || rest.EndsWith(".tmp-journal", StringComparison.Ordinal) || rest.EndsWith(".tmp-wal", StringComparison.Ordinal))) continue;
            if (pid == Environment.ProcessId || ProcessAlive(pid)) continue;
            try { File.Delete(file); removed++; } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
        return removed;
    }

    static bool ProcessAlive(int pid)
    {
        try { using var p = System.Diagnostics.Process.GetProcessById(pid); return !p.HasExited; }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    /// <summary>Flushes a finished temporary file to disk and renames it over <paramref name="path"/> (a file written by another library, e.g. SQLite).</summary>
    public static void Replace(string tmp, string path)
    {
        using (var stream = new FileStream(tmp, FileMode.Open, FileAccess.ReadWrite, FileShare.None)) stream.Flush(flushToDisk: true);
        File.Move(tmp, System.IO.Path.GetFullPath(path), overwrite: true);
    }

    /// <summary>The size of a file, following symbolic links (hub cache snapshots are links to blobs).</summary>
    public static long LengthOf(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        return stream.Length;
    }

    /// <summary>Writes text atomically (UTF-8, no BOM).</summary>
    public static void WriteText(string path, string text) =>
        Write(path, s => { var bytes = new System.Text.UTF8Encoding(false).GetBytes(text); s.Write(bytes); });
}
