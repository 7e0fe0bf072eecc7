namespace Mechanist.Dictionaries.Formats;

/// <summary>Writes a folder of files atomically: into a sibling temp folder first, then renamed into place.</summary>
public static class AtomicFolder
{
    /// <summary>
    /// Calls <paramref name="write"/> with a fresh temp folder and moves it to <paramref name="dir"/>. An existing
    /// <paramref name="dir"/> is replaced only when <paramref name="overwrite"/> is set (it stays intact if writing fails).
    /// </summary>
    public static void Write(string dir, Action<string> write, bool overwrite = false)
    {
        string full = Path.GetFullPath(dir.TrimEnd('/', '\\'));
        if (Directory.Exists(full) && Directory.EnumerateFileSystemEntries(full).Any() && !overwrite)
            throw new MechanistException($"{dir}: the folder exists and is not empty (choose another or allow overwriting)");
        string parent = Path.GetDirectoryName(full) ?? ".";
        Directory.CreateDirectory(parent);
        string tmp = Path.Combine(parent, $".{Path.GetFileName(full)}.tmp-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            write(tmp);
            if (Directory.Exists(full))
            {
                string old = Path.Combine(parent, $".{Path.GetFileName(full)}.old-{Guid.NewGuid():N}");
                Directory.Move(full, old);
                Directory.Move(tmp, full);
                Directory.Delete(old, recursive: true);
            }
            else Directory.Move(tmp, full);
        }
        catch
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
            throw;
        }
    }
}
