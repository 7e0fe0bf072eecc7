using System.CommandLine;
using System.Globalization;

namespace Mechanist.Cli;

/// <summary>
/// Numbers given on the command line are checked at parse time, the same way in every command: floating-point values must
/// be finite, and counts (tokens, texts, steps, batches, top-k, …) are refused below their least meaningful value in every command,
/// the same way, at parse time: a negative count was silently clamped, ignored or treated as zero before.
/// </summary>
public static class CountOptions
{
    /// <summary>Options that count something and need at least 1.</summary>
    public static readonly IReadOnlySet<string> Positive = new HashSet<string>(StringComparer.Ordinal)
    {
        "--tokens", "--texts", "--steps", "--batch", "--top-k", "--seq-len", "--features", "--k", "--chunk-tokens", "--eval-tokens",
        "--ctx-steps", "--max-texts", "--checkpoint-tokens", "--batch-texts", "--max-logits", "--max-feature-nodes", "--shards",
        "--cpus-per-task", "--repeats", "--max-edges-per-row",
    };

    /// <summary>Options that count something and may be 0 (none).</summary>
    public static readonly IReadOnlySet<string> NonNegative = new HashSet<string>(StringComparer.Ordinal)
    {
        "--generate", "--per-interval", "--max-new-tokens", "--neurons", "--gpus",
    };

    /// <summary>
    /// Adds the bound check to every integer option named in the two sets, and a finiteness check to every
    /// floating-point option (NaN, infinities and overflowing literals such as 1e400), in every subcommand.
    /// </summary>
    public static void AddValidators(Command command)
    {
        foreach (var option in command.Options)
        {
            var type = Nullable.GetUnderlyingType(option.ValueType) ?? option.ValueType;
            if (type == typeof(double) || type == typeof(float))
            {
                option.Validators.Add(result =>
                {
                    foreach (var token in result.Tokens)
                        if (double.TryParse(token.Value, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && (!double.IsFinite(v) || (type == typeof(float) && !float.IsFinite((float)v))))
                            result.AddError($"{option.Name} must be a finite number (got {token.Value})");
                });
                continue;
            }
            if (type != typeof(int) && type != typeof(long)) continue;
            // generate --top-k 0 samples from every token.
            bool zeroAllowed = NonNegative.Contains(option.Name) || (command.Name == "generate" && option.Name == "--top-k");
            long? least = zeroAllowed ? 0 : Positive.Contains(option.Name) ? 1 : null;
            if (least is not { } min) continue;
            option.Validators.Add(result =>
            {
                foreach (var token in result.Tokens)
                    if (long.TryParse(token.Value, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) && v < min)
                        result.AddError($"{option.Name} must be {(min == 1 ? "at least 1" : "0 or more")} (got {v})");
            });
        }
        foreach (var sub in command.Subcommands) AddValidators(sub);
    }
}
