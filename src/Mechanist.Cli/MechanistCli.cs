using System.CommandLine;
using Mechanist.Cli.Bench;
using Mechanist.Cli.Commands;

namespace Mechanist.Cli;

/// <summary>
/// Builds the command tree and runs it. User errors (<see cref="MechanistException"/>, bad arguments)
/// print one line on stderr and exit 2; anything unexpected prints one line and exits 1. Set
/// MECHANIST_DEBUG=1 for stack traces.
/// </summary>
public static class MechanistCli
{
    /// <summary>Exit code for bad input or arguments.</summary>
    public const int BadInput = 2;

    /// <summary>Runs the CLI with the given writers (tests call this in-process).</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var context = new CliContext(stdout, stderr);
        // A plain command named "mechanist" (RootCommand names itself after the executable, Mechanist.Cli)
        // with the options RootCommand would add.
        var root = new Command("mechanist", "Mechanist: mechanistic interpretability of transformer language models.");
        root.Options.Add(new System.CommandLine.Help.HelpOption());
        root.Options.Add(new VersionOption());
        root.Options.Add(CommonOptions.Device);
        root.Options.Add(CommonOptions.DType);
        root.Options.Add(CommonOptions.Tokenizer);
        foreach (var command in new ICliCommand[]
                 {
                     new TokenizeCommand(), new ConvertCommand(), new RunCommand(), new GenerateCommand(), new HooksCommand(), new LensCommand(), new DlaCommand(), new PatchCommand(), new AblateCommand(), new HeadsCommand(), new DictCommand(), new HarvestCommand(), new TraceCommand(), new QkCommand(), new InterveneCommand(), new ShowcaseCommand(), new SlurmCommand(), new FeaturesCommand(), new SteerCommand(), new CompareCommand(), new BenchCommand(), new ToyCommand(), new DemoCommand(), new MicroscopeCommand(), new ServeCommand(),
                 })
            root.Subcommands.Add(command.Build(context));
        CountOptions.AddValidators(root);

        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var e in parse.Errors) stderr.WriteLine($"error: {e.Message}");
            stderr.WriteLine("Run 'mechanist --help' (or 'mechanist COMMAND --help') for usage.");
            return BadInput;
        }
        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (Unwrap(e) is MechanistException me)
        {
            stderr.WriteLine($"error: {me.Message}");
            if (Debug) stderr.WriteLine(e);
            return me.ExitCode;
        }
        catch (Exception e) when (!Debug)
        {
            stderr.WriteLine($"internal error: {Unwrap(e).GetType().Name}: {Unwrap(e).Message} (set MECHANIST_DEBUG=1 for details)");
            return 1;
        }
    }

    static bool Debug => Environment.GetEnvironmentVariable("MECHANIST_DEBUG") == "1";

    static Exception Unwrap(Exception e)
    {
        while (e is AggregateException or TypeInitializationException or System.Reflection.TargetInvocationException && e.InnerException != null)
            e = e.InnerException!;
        return e;
    }
}
