using Mechanist.Cli;

namespace Mechanist.Tests.Cli;

/// <summary>Runs the CLI in-process and captures its output.</summary>
public static class CliRunner
{
    /// <summary>Exit code, stdout and stderr of one invocation.</summary>
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter(); var stderr = new StringWriter();
        int code = MechanistCli.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }
}
