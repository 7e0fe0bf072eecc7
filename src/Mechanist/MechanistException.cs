namespace Mechanist;

/// <summary>
/// An error caused by the user's input or environment (a bad file, an unknown name, a missing
/// library). The CLI prints its message alone, without a stack trace, and exits with <see cref="ExitCode"/>.
/// </summary>
public class MechanistException : Exception
{
    /// <summary>Creates an error with a message meant for the user.</summary>
    public MechanistException(string message, Exception? inner = null) : base(message, inner) { }

    /// <summary>The process exit code the CLI uses for this error (2: bad input).</summary>
    public virtual int ExitCode => 2;
}

/// <summary>An input file is malformed, truncated or inconsistent. The message names the file.</summary>
public sealed class InvalidCheckpointException : MechanistException
{
    /// <summary>Creates the error for <paramref name="path"/>.</summary>
    public InvalidCheckpointException(string path, string problem, Exception? inner = null)
        : base($"{path}: {problem}", inner) => Path = path;

    /// <summary>The offending file.</summary>
    public string Path { get; }
}
