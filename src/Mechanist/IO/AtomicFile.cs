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
        string tmp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
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
