namespace Mechanist.Cli;

/// <summary>Entry point of the <c>mechanist</c> command.</summary>
public static class Program
{
    /// <summary>Runs the CLI and returns its exit code.</summary>
    public static int Main(string[] args) => MechanistCli.Run(args, Console.Out, Console.Error);
}
