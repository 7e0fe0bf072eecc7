using System.Diagnostics;

namespace Mechanist.Runtime;

/// <summary>One pilot: the job run at a reduced size, measured (wall time, and the process's peak resident bytes during it).</summary>
public sealed record SizerPilot(double Units, double Seconds, long PeakBytes);

/// <summary>
/// What a job will cost, predicted before it runs: its wall time and the peak resident memory of the process, extrapolated from
/// pilots (the same job at reduced sizes, measured in this process), against what the machine has.
/// </summary>
/// <param name="Job">The command, e.g. "trace".</param>
/// <param name="Unit">What the job's size counts (rows, tokens, texts, steps).</param>
/// <param name="Units">The job's size in those units.</param>
/// <param name="Seconds">Predicted wall time in a process that has run the job's code before (as after the pilots).</param>
/// <param name="PeakBytes">Predicted peak resident bytes of the process (the loaded model included), likewise.</param>
/// <param name="WarmUpSeconds">What a fresh process adds the first time (compiling, first allocations): the first pilot's extra time.</param>
/// <param name="WarmUpPeakBytes">The first pilot's peak: a fresh process's first run peaks at least there.</param>
/// <param name="TimeSettled">Whether the last two pilots differed in time by enough to read the per-unit cost (else the time is rough).</param>
/// <param name="ResidentBytes">Resident bytes before the job (the loaded model and runtime).</param>
/// <param name="AvailableBytes">The most the process may hold: its resident bytes plus what the machine has available (or a set limit).</param>
/// <param name="Pilots">The pilots the prediction comes from.</param>
/// <param name="Shrink">The options that would make the job smaller, for the refusal's message.</param>
/// <param name="PilotUnit">What the pilots' sizes count, where it differs from the job's unit (a batch of prompts piloted on its longest).</param>
public sealed record JobEstimate(string Job, string Unit, double Units, double Seconds, long PeakBytes, long ResidentBytes, long AvailableBytes,
    IReadOnlyList<SizerPilot> Pilots, IReadOnlyList<string> Shrink, double WarmUpSeconds = 0, long WarmUpPeakBytes = 0, bool TimeSettled = true,
    string? PilotUnit = null)
{
    /// <summary>The peak of the job run by itself in a fresh process.</summary>
    public long FreshPeakBytes => Math.Max(PeakBytes, WarmUpPeakBytes);

    /// <summary>Whether the predicted peak fits in what the machine allows.</summary>
    public bool Fits => FreshPeakBytes <= AvailableBytes;

    /// <summary>One line for people (the figures of a fresh process: what running the command again costs).</summary>
    public string Describe() =>
        $"{Job}: {Units:N0} {Unit}; predicted peak memory {FreshPeakBytes / 1e9:F2} GB (the model and runtime now hold {ResidentBytes / 1e9:F2} GB; this machine allows " +
        $"{AvailableBytes / 1e9:F1} GB), predicted time {Format(Seconds + WarmUpSeconds)}{(TimeSettled ? "" : " (rough: the pilots were too short to time)")} (from {Pilots.Count} pilot runs of " +
        $"{string.Join(", ", Pilots.Select(p => p.Units.ToString("N0")))} {PilotUnit ?? Unit})";

    /// <summary>The refusal when the job does not fit.</summary>
    public string Refusal() =>
        $"{Job} would need about {FreshPeakBytes / 1e9:F1} GB at its peak; this machine allows {AvailableBytes / 1e9:F1} GB. " +
        $"Shrink it ({string.Join(", ", Shrink)}), see the estimate with --estimate, or run it anyway with --force";

    static string Format(double s) => s < 120 ? $"{s:F1} s" : s < 7200 ? $"{s / 60:F1} min" : $"{s / 3600:F1} h";
}

/// <summary>
/// Predicts a job's time and peak memory from pilots: the job itself at growing sizes (doubling from a small one, after an untimed
/// warm-up at it), each timed and with the process's peak resident memory measured, until two consecutive pilots differ in time by
/// enough to read a per-unit cost above the noise of the fixed one (or the pilots reach their share of the job: the last one at that
/// share where doubling stops short of it still in the noise); the largest runs twice. Time is the line through the largest pilots
/// (each size at its faster run), read at the job's size; memory is their peak plus what the job holds beyond them by the caller's
/// model of it (buffers, caches and matrices whose size is known from the shapes and options, which pilots are too small to show).
/// </summary>
public static class JobSizer
{
    /// <summary>Measures a pilot run of <paramref name="run"/> at <paramref name="units"/>.</summary>
    public static SizerPilot Measure(double units, Action run)
    {
        ProcessMemory.Settle();
        ProcessMemory.ResetPeak();
        var clock = Stopwatch.StartNew();
        run();
        double seconds = clock.Elapsed.TotalSeconds;
        long peak = PeakSinceReset();
        ProcessMemory.Settle();
        return new SizerPilot(units, seconds, peak);
    }

    /// <summary>The process's peak resident bytes since <see cref="ProcessMemory.ResetPeak"/> (at least what it holds now): a pilot's peak.</summary>
    public static long PeakSinceReset() => Math.Max(ProcessMemory.Peak(), ProcessMemory.Resident());

    /// <summary>The least-squares line through <paramref name="points"/>: its slope (0 when the x values do not spread) and the means it passes through.</summary>
    public static (double Slope, double MeanX, double MeanY) Line(IReadOnlyList<(double X, double Y)> points)
    {
        if (points.Count == 0) return (0, 0, 0);
        double meanX = points.Average(p => p.X), meanY = points.Average(p => p.Y);
        double spread = points.Sum(p => (p.X - meanX) * (p.X - meanX));
        return (spread > 0 ? points.Sum(p => (p.X - meanX) * (p.Y - meanY)) / spread : 0, meanX, meanY);
    }

    /// <summary>
    /// Estimates a job of <paramref name="units"/> from pilots starting at <paramref name="small"/> units and doubling up to
    /// <paramref name="largest"/> (both below <paramref name="units"/>).
    /// </summary>
    /// <param name="job">The command's name.</param>
    /// <param name="unit">What the size counts.</param>
    /// <param name="units">The job's size.</param>
    /// <param name="small">The first pilot's size (also the warm-up's).</param>
    /// <param name="largest">The largest pilot allowed.</param>
    /// <param name="runPilot">Runs the job at a size, writing nothing the user keeps.</param>
    /// <param name="modelledBytes">Bytes the job holds at a size beyond what its fixed working set shows (0 where nothing grows).</param>
    /// <param name="shrink">Options that shrink the job.</param>
    /// <param name="modelledSeconds">
    /// Seconds of a part whose cost is known in shape, not linear in the size (e.g. a quadratic step up to a cap), calibrated by the
    /// caller: taken out of the pilots' times before their per-unit cost is read, and added back at the job's size.
    /// </param>
    /// <param name="effort">
    /// The work of a size where units differ in cost (asked after the pilots ran, for the largest pilots' sizes and the job's): time is
    /// read per unit of it instead of per unit. Default: the size itself.
    /// </param>
    public static JobEstimate Estimate(string job, string unit, double units, double small, double largest, Action<double> runPilot,
        Func<double, double> modelledBytes, IReadOnlyList<string> shrink, Func<double, double>? modelledSeconds = null, Func<double, double>? effort = null)
    {
        if (!(small > 0 && largest >= 2 * small && units >= largest)) throw new MechanistException($"the sizer's pilots need room: {small} to {largest} of {units} {unit}");
        ProcessMemory.Settle();
        long resident = ProcessMemory.Resident();
        long available = ProcessMemory.Allowed();
        var pilots = new List<SizerPilot> { Measure(small, () => runPilot(small)) };
        var previous = Measure(small, () => runPilot(small));
        pilots.Add(previous);
        SizerPilot last;
        bool settled;
        while (true)
        {
            double size = previous.Units * 2;
            last = Measure(size, () => runPilot(size));
            pilots.Add(last);
            // Enough signal: the doubled pilot took clearly longer than the one before, by half of that one's time at least (its per-unit
            // part dominates the noise of the fixed part: a features build's ~2 s of fixed work varies by a third between runs).
            settled = Settled(previous, last);
            // And pilots reach a sixteenth of the job where they may: a features build's first texts cost several times its later ones
            // (each feature's sketch set up when first seen), so 128 → 256 texts read six times the job's per-text cost.
            if (settled && size >= units * MinimumPilotFraction || size * 2 > largest) break;
            previous = last;
        }
        // Still within the noise, with room left below the largest pilot allowed: one more there, so that the line through the pilots
        // spans their whole share of the job (a doubling would overshoot it; the last one may be at half of it).
        if (!settled && largest >= last.Units * 1.25)
        {
            previous = last;
            last = Measure(largest, () => runPilot(largest));
            pilots.Add(last);
            settled = Settled(previous, last);
        }
        // The largest pilot runs once more; the faster run counts. It weighs most in the line below, which multiplies its error by the
        // job's size over its own, and a shared machine's slow spells move a single run most (a fixed loop on this 2-core VM runs up to
        // 1.6x slower for one to several seconds at a time; a 0.6-s pilot read 0.9 s in one). Simulated on two recorded traces of those
        // spells, the bench's ten sizer rows all land within 25 % in 85 and 81 runs of 100 with one run per size, 97 and 94 with this.
        var again = Measure(last.Units, () => runPilot(last.Units));
        pilots.Add(again);
        long repeatedPeak = again.PeakBytes;
        var model = modelledSeconds ?? (_ => 0);
        double Linear(SizerPilot p) => p.Seconds - model(p.Units);
        var work = effort ?? (u => u);
        // The per-unit cost: a least-squares line through the largest pilots (up to four sizes, each at its fastest run; the warm-up
        // left out). A slow spell of a shared machine during one pilot moves it less than it moves the difference of the last two.
        var fastest = pilots.Skip(1).GroupBy(p => p.Units).Select(g => g.MinBy(p => p.Seconds)!).OrderBy(p => p.Units).TakeLast(4);
        var (slope, meanX, meanY) = Line(fastest.Select(p => (work(p.Units), Linear(p))).ToList());
        double seconds = meanY + Math.Max(0, slope) * (work(units) - meanX) + model(units);
        long peak = Math.Max(Math.Max(last.PeakBytes, previous.PeakBytes), repeatedPeak) + (long)Math.Max(0, modelledBytes(units) - modelledBytes(last.Units));
        var warm = pilots[0];
        return new JobEstimate(job, unit, units, seconds, Math.Max(peak, resident), resident, available, pilots, shrink,
            Math.Max(0, warm.Seconds - pilots[1].Seconds), warm.PeakBytes, settled);
    }

    /// <summary>Whether <paramref name="last"/> took enough longer than <paramref name="previous"/> to read a per-unit cost from the two.</summary>
    static bool Settled(SizerPilot previous, SizerPilot last) => last.Seconds - previous.Seconds >= Math.Max(MinimumSignalSeconds, 0.5 * previous.Seconds);

    /// <summary>The share of the job the pilots reach before their time is read, where the largest pilot allowed is larger.</summary>
    public const double MinimumPilotFraction = 1.0 / 16;

    /// <summary>
    /// The least time between the last two pilots for their difference to be read as per-unit cost. A shared machine's slow spells
    /// move a pilot by up to a second (at 1 s, a harvest's pilots of 16K and 32K tokens read its cost 32 % high).
    /// </summary>
    public const double MinimumSignalSeconds = 2.0;

    /// <summary>
    /// Pilot sizes for a job of <paramref name="units"/>: the first at <paramref name="minimum"/>, the largest at <paramref name="fraction"/>
    /// of the job; null when that leaves no room to double (the job is too small to pilot at this fraction).
    /// </summary>
    public static (double Small, double Largest)? PilotSizes(double units, double fraction, double minimum)
    {
        double largest = Math.Floor(units * fraction);
        return minimum > 0 && largest >= 2 * minimum ? (minimum, largest) : null;
    }
}
