using System.CommandLine;
using Mechanist.Cluster;
using Mechanist.Dictionaries;
using Mechanist.Features;
using Mechanist.Microscope;

namespace Mechanist.Cli.Commands;

/// <summary>
/// <c>mechanist slurm submit --shards N -- harvest ... --out DIR</c>: a shard-aware command as a Slurm array plus a merge job;
/// <c>mechanist slurm k8s</c>: the same plan as a Kubernetes Indexed Job manifest.
/// </summary>
public sealed class SlurmCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var cmd = new Command("slurm", "Run a corpus-scale command as a Slurm array job (one task per shard) with a merge job, or write it as a Kubernetes Indexed Job.");
        cmd.Subcommands.Add(Submit(ctx, kubernetes: false));
        cmd.Subcommands.Add(Submit(ctx, kubernetes: true));
        return cmd;
    }

    static Command Submit(CliContext ctx, bool kubernetes)
    {
        var shards = new Option<int>("--shards") { Description = "N: how many array tasks (shards).", Required = true };
        var tasks = new Option<string>("--tasks") { Description = "Only these array indices, e.g. 2 or 0,3 (default: every shard not yet complete)." };
        var cpus = new Option<int>("--cpus-per-task") { Description = "CPUs per task.", DefaultValueFactory = _ => 2 };
        var mem = new Option<string>("--mem") { Description = "Memory per task, e.g. 16G." };
        var time = new Option<string>("--time") { Description = "Time limit per task, e.g. 04:00:00." };
        var partition = new Option<string>("--partition") { Description = "Slurm partition." };
        var gpus = new Option<int>("--gpus-per-task") { Description = "GPUs per task.", DefaultValueFactory = _ => 0 };
        var dryRun = new Option<bool>("--dry-run") { Description = "Write the scripts, do not submit." };
        var program = new Option<string>("--mechanist") { Description = "How tasks start mechanist (default: this program, e.g. \"dotnet /opt/mechanist/Mechanist.Cli.dll\")." };
        var image = new Option<string>("--image") { Description = "Container image with mechanist installed.", DefaultValueFactory = _ => "mechanist:latest" };
        var claim = new Option<string>("--volume-claim") { Description = "PersistentVolumeClaim holding the output folder.", DefaultValueFactory = _ => "mechanist-data" };
        var mount = new Option<string>("--mount") { Description = "Where the claim is mounted in the pods.", DefaultValueFactory = _ => "/data" };
        var command = new Argument<string[]>("command") { Description = "The shard-aware command and its arguments, after --: harvest ... --out DIR, features build ... --out DIR, microscope --corpus C ... --out DIR, or trace --prompts FILE ... --out DIR.", Arity = ArgumentArity.OneOrMore };
        var cmd = kubernetes
            ? new Command("k8s", "Print a Kubernetes Indexed Job (JOB_COMPLETION_INDEX = shard) for a shard-aware command.") { shards, cpus, mem, image, claim, mount, command }
            : new Command("submit", "Submit a shard-aware command as a Slurm array (task i runs --shard i/N) and a merge job that runs when every task succeeded.")
              { shards, tasks, cpus, mem, time, partition, gpus, dryRun, program, command };
        cmd.SetAction(parse =>
        {
            int n = parse.GetValue(shards);
            var args = parse.GetValue(command)!.ToList();
            if (args.Contains("--shard")) throw new MechanistException("leave --shard out: each task gets its own");
            string Out() => args.IndexOf("--out") is var i && i >= 0 && i + 1 < args.Count ? Path.GetFullPath(args[i + 1]) : throw new MechanistException($"the {args[0]} command needs --out DIR");
            var job = ShardAwareCommands.For(args);
            var merge = job.MergeWords.Append(Out()).ToArray();
            var finished = job.CompleteShards(Out(), n);
            if (args.IndexOf("--out") is var o && o >= 0) args[o + 1] = Out();
            var resources = new SlurmResources(parse.GetValue(cpus), parse.GetValue(mem), parse.GetValue(time), parse.GetValue(partition), parse.GetValue(gpus));
            string name = $"mechanist-{job.Name}";
            string work = Path.Combine(Out(), "slurm");
            if (kubernetes)
            {
                var k8s = new SlurmPlan(name, "mechanist", args, n, merge, work, resources);
                ctx.Out.Write(SlurmJob.KubernetesIndexedJob(k8s, parse.GetValue(image)!, parse.GetValue(claim)!, parse.GetValue(mount)!));
                return 0;
            }
            var plan = new SlurmPlan(name, parse.GetValue(program) ?? ThisProgram(), args, n, merge, work, resources);
            var todo = parse.GetValue(tasks) is { } t
                ? t.Split(',').Select(x => int.TryParse(x, out int v) && v >= 0 && v < n ? v : throw new MechanistException($"--tasks: '{x}' is not an index within 0..{n - 1}")).Distinct().ToList()
                : Enumerable.Range(0, n).Where(i => !finished.Contains(i)).ToList();
            if (finished.Count > 0) ctx.Err.WriteLine($"shard(s) {string.Join(", ", finished)} of {n} are complete and are not submitted again");
            if (todo.Count == 0)
            {
                ctx.Out.WriteLine($"every shard is complete; merge with: {string.Join(" ", merge.Select(SlurmJob.Quote))}");
                return 0;
            }
            var sub = SlurmJob.Submit(plan, todo, parse.GetValue(dryRun));
            if (sub.ArrayJob is null) { ctx.Out.WriteLine($"wrote {sub.ArrayScript} and {sub.MergeScript} (not submitted)"); return 0; }
            ctx.Out.WriteLine($"array job {sub.ArrayJob} (tasks {string.Join(",", sub.Tasks)} of {n}), merge job {sub.MergeJob} (after every task succeeds)");
            ctx.Out.WriteLine($"follow: squeue -j {sub.ArrayJob},{sub.MergeJob}; logs in {Path.Combine(work, "logs")}; a failed task: rerun this command (finished shards are skipped)");
            return 0;
        });
        return cmd;
    }

    /// <summary>This program as a command line: the apphost, or "dotnet path/Mechanist.Cli.dll".</summary>
    static string ThisProgram()
    {
        string process = Environment.ProcessPath ?? "mechanist";
        string dll = typeof(SlurmCommand).Assembly.Location;
        return Path.GetFileNameWithoutExtension(process) == "dotnet" ? $"{SlurmJob.Quote(process)} {SlurmJob.Quote(dll)}" : SlurmJob.Quote(process);
    }
}
