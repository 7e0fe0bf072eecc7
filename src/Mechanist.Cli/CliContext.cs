namespace Mechanist.Cli;

/// <summary>What every command writes to.</summary>
/// <param name="Out">Standard output.</param>
/// <param name="Err">Standard error (progress, warnings).</param>
public sealed record CliContext(TextWriter Out, TextWriter Err);

/// <summary>One CLI command.</summary>
public interface ICliCommand
{
    /// <summary>Creates the System.CommandLine command bound to <paramref name="context"/>.</summary>
    System.CommandLine.Command Build(CliContext context);
}
