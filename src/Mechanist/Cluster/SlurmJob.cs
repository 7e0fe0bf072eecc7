using System.Diagnostics;
using System.Text;
using Mechanist.IO;

namespace Mechanist.Cluster;

/// <summary>Resources of each array task.</summary>
/// <param name="CpusPerTask">--cpus-per-task.</param>
/// <param name="Memory">--mem (e.g. "8G"); null: the cluster's default.</param>
/// <param name="Time">--time (e.g. "02:00:00"); null: the partition's limit.</param>
/// <param name="Partition">--partition; null: the default partition.</param>
/// <param name="Gpus">--gpus-per-task; 0: none.</param>
public sealed record SlurmResources(int CpusPerTask = 2, string? Memory = null, string? Time = null, string? Partition = null, int Gpus = 0);

/// <summary>
/// A shard-aware command run as a Slurm array (task i runs it with <c>--shard i/N</c>) followed by a merge job that starts
/// only when every task succeeded (<c>--dependency=afterok</c>).
/// </summary>
/// <param name="Name">Job name.</param>
/// <param name="Program">The mechanist invocation (e.g. "/usr/local/bin/mechanist" or "dotnet /opt/mechanist/Mechanist.Cli.dll").</param>
/// <param name="Arguments">The command's arguments, without --shard.</param>
/// <param name="Shards">N.</param>
/// <param name="MergeArguments">The merge command's arguments.</param>
/// <param name="WorkDir">Where the scripts and per-task logs go.</param>
/// <param name="Resources">Per-task resources.</param>
public sealed record SlurmPlan(string Name, string Program, IReadOnlyList<string> Arguments, int Shards, IReadOnlyList<string> MergeArguments, string WorkDir, SlurmResources Resources);

/// <summary>The submitted jobs.</summary>
/// <param name="ArrayJob">The array's job id.</param>
/// <param name="MergeJob">The merge job's id.</param>
/// <param name="Tasks">The array indices submitted (finished shards are left out).</param>
/// <param name="ArrayScript">The array's sbatch script.</param>
/// <param name="MergeScript">The merge's sbatch script.</param>
public sealed record SlurmSubmission(string? ArrayJob, string? MergeJob, int[] Tasks, string ArrayScript, string MergeScript);

/// <summary>Writes sbatch scripts for a <see cref="SlurmPlan"/> and submits them; also a Kubernetes Indexed Job for the same plan.</summary>
public static class SlurmJob
{
    /// <summary>Quotes one word for a POSIX shell (any character but NUL; a newline stays inside the quotes).</summary>
    public static string Quote(string word) => word.Length > 0 && word.All(c => char.IsAsciiLetterOrDigit(c) || "-_./:=,@%+".Contains(c)) ? word : "'" + word.Replace("'", "'\\''") + "'";

    /// <summary>
    /// A value for an <c>#SBATCH</c> line: sbatch reads these lines itself (not the shell), splitting at spaces and at an
    /// unquoted '#', honouring double quotes and backslash escapes; a line break cannot be written there at all.
    /// </summary>
    public static string SbatchValue(string what, string value)
    {
        if (value.IndexOfAny(new[] { '\n', '\r', '\0' }) >= 0) throw new MechanistException($"{what} contains a line break or NUL, which an #SBATCH line cannot hold: {Shorten(value)}");
        return value.All(c => char.IsAsciiLetterOrDigit(c) || "-_./:=,@%+".Contains(c)) ? value : "\"" + value.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";
    }

    /// <summary>Refuses a line break or NUL in a word that goes into a script or a YAML file, naming it.</summary>
    static void CheckWord(string what, string value)
    {
        if (value.IndexOfAny(new[] { '\n', '\r', '\0' }) >= 0) throw new MechanistException($"{what} contains a line break or NUL: {Shorten(value)}");
    }

    static string Shorten(string s) => (s.Length > 80 ? s[..80] + "…" : s).Replace("\n", "\\n").Replace("\r", "\\r").Replace("\0", "\\0");

    static void CheckPlan(SlurmPlan plan)
    {
        CheckWord("the job name", plan.Name); CheckWord("the program", plan.Program); CheckWord("the work folder", plan.WorkDir);
        foreach (var a in plan.Arguments) CheckWord("an argument", a);
        foreach (var a in plan.MergeArguments) CheckWord("a merge argument", a);
    }

    /// <summary>A YAML double-quoted scalar (JSON string syntax is valid YAML).</summary>
    static string Yaml(string value) => System.Text.Json.JsonSerializer.Serialize(value);

    /// <summary>Writes the array and merge scripts for <paramref name="tasks"/> (array indices) and returns their paths.</summary>
    public static (string Array, string Merge) WriteScripts(SlurmPlan plan, IReadOnlyList<int> tasks)
    {
        if (tasks.Count == 0) throw new MechanistException("no array tasks to submit");
        if (tasks.Any(t => t < 0 || t >= plan.Shards)) throw new MechanistException($"array tasks must be within 0..{plan.Shards - 1}");
        CheckPlan(plan);
        Directory.CreateDirectory(Path.Combine(plan.WorkDir, "logs"));
        var r = plan.Resources;
        string logs = Path.GetFullPath(Path.Combine(plan.WorkDir, "logs"));
        var head = new StringBuilder();
        head.AppendLine("#!/bin/bash");
        head.AppendLine($"#SBATCH --job-name={SbatchValue("the job name", plan.Name)}");
        head.AppendLine($"#SBATCH --cpus-per-task={r.CpusPerTask}");
        if (r.Memory is { } m) head.AppendLine($"#SBATCH --mem={SbatchValue("--mem", m)}");
        if (r.Time is { } t) head.AppendLine($"#SBATCH --time={SbatchValue("--time", t)}");
        if (r.Partition is { } p) head.AppendLine($"#SBATCH --partition={SbatchValue("--partition", p)}");
        if (r.Gpus > 0) head.AppendLine($"#SBATCH --gpus-per-task={r.Gpus}");
        var array = new StringBuilder(head.ToString());
        array.AppendLine($"#SBATCH --array={string.Join(",", tasks.OrderBy(x => x))}");
        array.AppendLine($"#SBATCH --output={SbatchValue("the log folder", logs + "/task-%A_%a.log")}");
        array.AppendLine("set -euo pipefail");
        array.AppendLine($"# Task i of the array runs shard i of {plan.Shards}; a resubmitted task resumes after its last complete chunk.");
        array.AppendLine($"exec {plan.Program} {string.Join(" ", plan.Arguments.Select(Quote))} --shard \"${{SLURM_ARRAY_TASK_ID}}/{plan.Shards}\"");
        var merge = new StringBuilder(head.ToString().Replace($"--cpus-per-task={r.CpusPerTask}", "--cpus-per-task=1"));
        merge.AppendLine($"#SBATCH --output={SbatchValue("the log folder", logs + "/merge-%j.log")}");
        merge.AppendLine("set -euo pipefail");
        merge.AppendLine($"exec {plan.Program} {string.Join(" ", plan.MergeArguments.Select(Quote))}");
        string arrayPath = Path.Combine(plan.WorkDir, "array.sbatch"), mergePath = Path.Combine(plan.WorkDir, "merge.sbatch");
        AtomicFile.WriteText(arrayPath, array.ToString());
        AtomicFile.WriteText(mergePath, merge.ToString());
        return (arrayPath, mergePath);
    }

    /// <summary>Writes the scripts and submits them with sbatch: the array, then the merge with --dependency=afterok on it.</summary>
    public static SlurmSubmission Submit(SlurmPlan plan, IReadOnlyList<int> tasks, bool dryRun = false)
    {
        var (arrayPath, mergePath) = WriteScripts(plan, tasks);
        if (dryRun) return new SlurmSubmission(null, null, tasks.ToArray(), arrayPath, mergePath);
        string arrayJob = Sbatch("--parsable", arrayPath);
        string mergeJob = Sbatch("--parsable", $"--dependency=afterok:{arrayJob}", "--kill-on-invalid-dep=yes", mergePath);
        return new SlurmSubmission(arrayJob, mergeJob, tasks.ToArray(), arrayPath, mergePath);
    }

    static string Sbatch(params string[] args)
    {
        var psi = new ProcessStartInfo("sbatch") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        Process p;
        try { p = Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception) { throw new MechanistException("sbatch was not found: run this on a Slurm login node (or pass --dry-run to only write the scripts)"); }
        using (p)
        {
            var stdout = p.StandardOutput.ReadToEndAsync(); string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0) throw new MechanistException($"sbatch {string.Join(" ", args)} failed: {err.Trim()}");
            return stdout.Result.Trim().Split(';')[0];
        }
    }

    /// <summary>
    /// A Kubernetes Indexed Job for the same plan (completion index = shard), to apply with kubectl; the merge runs as a second
    /// Job after this one completes. <paramref name="image"/> is a container image with mechanist installed.
    /// </summary>
    public static string KubernetesIndexedJob(SlurmPlan plan, string image, string volumeClaim, string mountPath)
    {
        CheckPlan(plan);
        CheckWord("the image", image); CheckWord("the volume claim", volumeClaim); CheckWord("the mount path", mountPath);
        var r = plan.Resources;
        if (r.Memory is { } mem) CheckWord("--mem", mem);
        string shardCommand = $"exec mechanist {string.Join(" ", plan.Arguments.Select(Quote))} --shard \"$JOB_COMPLETION_INDEX/{plan.Shards}\"";
        return $$"""
            # Each pod runs shard $JOB_COMPLETION_INDEX of {{plan.Shards}}; a restarted pod resumes its shard. Apply, wait for completion, then run the merge:
            #   kubectl apply -f this.yaml && kubectl wait --for=condition=complete job/{{plan.Name}} --timeout=24h
            #   {{string.Join(" ", plan.MergeArguments.Select(Quote))}}
            apiVersion: batch/v1
            kind: Job
            metadata:
              name: {{Yaml(plan.Name)}}
            spec:
              completionMode: Indexed
              completions: {{plan.Shards}}
              parallelism: {{plan.Shards}}
              backoffLimitPerIndex: 3
              template:
                spec:
                  restartPolicy: Never
                  containers:
                    - name: shard
                      image: {{Yaml(image)}}
                      command: ["/bin/sh", "-c"]
                      args: [{{Yaml(shardCommand)}}]
                      resources:
                        requests: { cpu: "{{r.CpusPerTask}}"{{(r.Memory is { } m ? $", memory: {Yaml(m + "i")}" : "")}} }
                      volumeMounts:
                        - { name: data, mountPath: {{Yaml(mountPath)}} }
                  volumes:
                    - name: data
                      persistentVolumeClaim: { claimName: {{Yaml(volumeClaim)}} }
            """ + "\n";
    }
}
