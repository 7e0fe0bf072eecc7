using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Mechanist.Tests.Cluster;

/// <summary>
/// A real one-node Slurm cluster in a temporary folder (munged, slurmctld, slurmd with a generated slurm.conf on free
/// ports), started as root in seconds and stopped and removed on dispose whatever happened. Needs Debian's slurm-wlm and
/// munge (the README's test command installs them).
/// </summary>
public sealed class SlurmCluster : IDisposable
{
    /// <summary>The cluster's folder.</summary>
    public string Dir { get; } = Directory.CreateTempSubdirectory("mechanist-slurm-").FullName;

    /// <summary>Its slurm.conf (give it to clients as SLURM_CONF).</summary>
    public string Conf => Path.Combine(Dir, "slurm.conf");

    /// <summary>Starts the daemons and waits until the node is idle.</summary>
    public SlurmCluster()
    {
        try
        {
            foreach (var tool in new[] { "/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/mungekey" })
                if (!File.Exists(tool)) throw new InvalidOperationException($"{tool} not found: install Debian's slurm-wlm and munge (./test.sh does)");
            Directory.CreateDirectory(Path.Combine(Dir, "state"));
            Directory.CreateDirectory(Path.Combine(Dir, "spool"));
            string key = Path.Combine(Dir, "munge.key"), socket = Path.Combine(Dir, "munge.socket");
            Run("/usr/sbin/mungekey", "--create", $"--keyfile={key}");
            if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(key, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            Run("/usr/sbin/munged", $"--key-file={key}", $"--socket={socket}", $"--pid-file={Path.Combine(Dir, "munged.pid")}",
                $"--log-file={Path.Combine(Dir, "munged.log")}", $"--seed-file={Path.Combine(Dir, "munge.seed")}", "--force");
            int ctld = FreePort(), slurmd = FreePort();
            File.WriteAllText(Conf, $"""
                ClusterName=mechtest
                SlurmctldHost=localhost
                SlurmUser=root
                SlurmdUser=root
                SlurmctldPort={ctld}
                SlurmdPort={slurmd}
                AuthType=auth/munge
                AuthInfo=socket={socket}
                CredType=cred/munge
                StateSaveLocation={Path.Combine(Dir, "state")}
                SlurmdSpoolDir={Path.Combine(Dir, "spool")}
                SlurmctldPidFile={Path.Combine(Dir, "slurmctld.pid")}
                SlurmdPidFile={Path.Combine(Dir, "slurmd.pid")}
                SlurmctldLogFile={Path.Combine(Dir, "slurmctld.log")}
                SlurmdLogFile={Path.Combine(Dir, "slurmd.log")}
                ProctrackType=proctrack/linuxproc
                TaskPlugin=task/none
                SelectType=select/cons_tres
                SelectTypeParameters=CR_CPU
                SchedulerType=sched/backfill
                ReturnToService=2
                MpiDefault=none
                JobCompType=jobcomp/none
                AccountingStorageType=accounting_storage/none
                JobAcctGatherType=jobacct_gather/none
                NodeName=localhost CPUs={Environment.ProcessorCount} State=UNKNOWN
                PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP

                """);
            Run("/usr/sbin/slurmctld", "-f", Conf);
            Run("/usr/sbin/slurmd", "-f", Conf, "-N", "localhost");
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (Run("sinfo", "-h", "-o", "%T").Trim() != "idle")
            {
                if (DateTime.UtcNow > deadline) throw new InvalidOperationException("the Slurm node did not become idle in 60 s:\n" + Tail("slurmctld.log") + Tail("slurmd.log"));
                Thread.Sleep(300);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    string Tail(string log) => File.Exists(Path.Combine(Dir, log)) ? string.Join("\n", File.ReadLines(Path.Combine(Dir, log)).TakeLast(15)) + "\n" : "";

    /// <summary>Runs a program with SLURM_CONF set; its stdout, or an exception with stderr when it fails.</summary>
    public string Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["SLURM_CONF"] = Conf;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync(); string err = p.StandardError.ReadToEnd();
        if (!p.WaitForExit(60_000)) { p.Kill(true); throw new TimeoutException($"{file} did not finish"); }
        if (p.ExitCode != 0) throw new InvalidOperationException($"{file} {string.Join(" ", args)} exited {p.ExitCode}: {err}");
        return stdout.Result;
    }

    /// <summary>How the cluster's tasks start the CLI built beside the tests.</summary>
    public static string Mechanist => $"{Environment.ProcessPath} {Path.Combine(AppContext.BaseDirectory, "Mechanist.Cli.dll")}";

    /// <summary>The job ids "mechanist slurm submit" printed (array, then merge).</summary>
    public static string[] JobIds(string submitOutput) =>
        System.Text.RegularExpressions.Regex.Matches(submitOutput, @"job (\d+)").Select(m => m.Groups[1].Value).ToArray();

    /// <summary>Points this process's Slurm clients (sbatch run by the in-process CLI) at the cluster until disposed.</summary>
    public IDisposable AsDefault()
    {
        string? previous = Environment.GetEnvironmentVariable("SLURM_CONF");
        Environment.SetEnvironmentVariable("SLURM_CONF", Conf);
        return new Restore(() => Environment.SetEnvironmentVariable("SLURM_CONF", previous));
    }

    sealed class Restore(Action undo) : IDisposable
    {
        public void Dispose() => undo();
    }

    /// <summary>Waits until none of the jobs is pending or running.</summary>
    public void Wait(TimeSpan timeout, params string[] jobs)
    {
        var deadline = DateTime.UtcNow + timeout;
        bool Queued()
        {
            try { return Run("squeue", "-h", "-j", string.Join(",", jobs), "-o", "%i %T").Trim().Length > 0; }
            catch (InvalidOperationException e) when (e.Message.Contains("Invalid job id")) { return false; }
        }
        while (Queued())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"jobs {string.Join(",", jobs)} still queued after {timeout}:\n{Run("squeue", "-j", string.Join(",", jobs))}");
            Thread.Sleep(500);
        }
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var pidFile in new[] { "slurmd.pid", "slurmctld.pid", "munged.pid" })
        {
            string path = Path.Combine(Dir, pidFile);
            try
            {
                if (!File.Exists(path) || !int.TryParse(File.ReadAllText(path).Trim(), out int pid)) continue;
                using var proc = Process.GetProcessById(pid);
                proc.Kill(entireProcessTree: true);
                proc.WaitForExit(10_000);
            }
            catch (ArgumentException) { } // already gone
            catch (InvalidOperationException) { }
        }
        try { Directory.Delete(Dir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
