namespace Mechanist.Web;

/// <summary>Where the workbench keeps graphs, and how it opens a file there without leaving the folder.</summary>
public static class GraphFolders
{
    /// <summary>
    /// The default graphs folder: private to this user (<c>$XDG_STATE_HOME/mechanist/graphs</c>, else
    /// <c>~/.local/state/mechanist/graphs</c>), created with mode 0700, never a shared path under /tmp.
    /// </summary>
    public static string PrivateDefault()
    {
        string? state = Environment.GetEnvironmentVariable("XDG_STATE_HOME");
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        string root = !string.IsNullOrEmpty(state) && Path.IsPathRooted(state) ? state
            : !string.IsNullOrEmpty(home) ? Path.Combine(home, ".local", "state")
            : throw new MechanistException("no home folder to keep graphs in: pass --graphs DIR");
        string dir = Path.Combine(root, "mechanist", "graphs");
        if (OperatingSystem.IsWindows()) Directory.CreateDirectory(dir);
        else
        {
            Directory.CreateDirectory(Path.GetDirectoryName(dir)!, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        return dir;
    }

    /// <summary>
    /// <paramref name="name"/> inside <paramref name="dir"/> when it is a regular file there, or null: a symbolic link
    /// (to anywhere) or anything resolving outside the folder is treated as absent, so a planted link is never followed.
    /// </summary>
    public static string? Existing(string dir, string name)
    {
        string path = Path.Combine(dir, name);
        var info = new FileInfo(path);
        if (!info.Exists || info.LinkTarget is not null || info.Attributes.HasFlag(FileAttributes.ReparsePoint)) return null;
        string full = Path.GetFullPath(path), root = Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar;
        return full.StartsWith(root, StringComparison.Ordinal) ? full : null;
    }
}
