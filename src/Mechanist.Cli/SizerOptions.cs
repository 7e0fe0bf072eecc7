using System.CommandLine;
using Mechanist.Runtime;

namespace Mechanist.Cli;

/// <summary>
/// --estimate and --force of the jobs the sizer covers (trace, harvest, dict train, features build, microscope): print what the
/// job will cost and exit, or refuse a job whose predicted peak memory exceeds what the machine has.
/// </summary>
public sealed class SizerOptions
{
    /// <summary>--estimate: print the prediction and exit.</summary>
    public Option<bool> Estimate { get; } = new("--estimate")
    {
        Description = "Print the predicted peak memory and time (from pilot runs of this job at doubling sizes, up to a quarter of it) and exit; nothing is written.",
    };

    /// <summary>--force: skip the memory check.</summary>
    public Option<bool> Force { get; } = new("--force")
    {
        Description = "Run even if the predicted peak memory exceeds what this machine has (checked before large jobs start).",
    };

    /// <summary>
    /// Adds both options to <paramref name="cmd"/>; <paramref name="output"/>, when given, is required unless --estimate is (an
    /// estimate writes nothing).
    /// </summary>
    public void AddTo(Command cmd, Option<string>? output = null)
    {
        cmd.Options.Add(Estimate);
        cmd.Options.Add(Force);
        if (output is null) return;
        output.Required = false;
        output.Description += " Required, except with --estimate.";
        cmd.Validators.Add(result =>
        {
            if (result.GetResult(output) is null && !result.GetValue(Estimate))
                result.AddError($"Option '{output.Name}' is required (only --estimate runs without it).");
        });
    }

    /// <summary>
    /// Before a job: with --estimate, prints the estimate and answers true (the command exits); otherwise, for a job large enough to
    /// pilot, estimates it and stops with the refusal when it does not fit (unless --force). Answers false when the job should run.
    /// </summary>
    public bool Handle(ParseResult parse, CliContext ctx, Func<double, JobEstimate?> estimate)
    {
        if (parse.GetValue(Estimate))
        {
            // --estimate lets its pilots grow up to a quarter of the job (they stop as soon as they can be timed).
            var e = estimate(EstimateFraction);
            ctx.Out.WriteLine(e is null ? "no estimate: the job is too small to pilot below its own size (or has nothing to scale, as a trace without features): run it" : e.Describe());
            if (e is { Fits: false }) ctx.Out.WriteLine(e.Refusal());
            return true;
        }
        if (parse.GetValue(Force) || Environment.GetEnvironmentVariable(CheckVariable) == "0") return false;
        var check = estimate(Sizers.PilotFraction);
        if (check is null) return false;
        if (!check.Fits) throw new MechanistException(check.Refusal());
        ctx.Err.WriteLine($"sizer: {check.Describe()}");
        return false;
    }

    /// <summary>The share of the job the pilots of --estimate may reach.</summary>
    public const double EstimateFraction = 0.25;

    /// <summary>Set to 0 to skip the automatic memory check (the pilots cost a few per cent of a large job).</summary>
    public const string CheckVariable = "MECHANIST_SIZER";
}
