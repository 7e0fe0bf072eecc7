using System.Diagnostics;
using System.Text.Json;
using Mechanist.Cluster;
using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Formats;
using Mechanist.Dictionaries.Training;
using Mechanist.IO;
using Mechanist.Tensors;
using static TorchSharp.torch;

namespace Mechanist.Tests.Cli;

/// <summary>Findings of adversarial runs of the CLI and library: each input was accepted (or crashed) before.</summary>
public class HostileInputTests
{
    static readonly string Prompt = "The capital of the state containing Dallas is";

    // ---- Slurm and Kubernetes scripts ----

    const string Nasty = "out dir/it's \"$HOME\" `id` $(id) back\\slash";

    static SlurmPlan Plan(string work, string outDir) => new("features", "printf '%s\\n'",
        new[] { "features", "build", "--out", outDir }, 3, new[] { "features", "merge", outDir }, work, new SlurmResources(Memory: "4G"));

    static string Bash(string script)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c"); psi.ArgumentList.Add(script);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd(); string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, err);
        return output;
    }

    [Fact]
    public void SbatchScriptsCarryEveryPathCharacterIntact()
    {
        using var dir = new TempDir();
        string work = Path.Combine(dir.Path, "work " + "a'b\"c$d`e\\f");
        string outDir = Path.Combine(dir.Path, Nasty);
        var (array, merge) = SlurmJob.WriteScripts(Plan(work, outDir), new[] { 0, 2 });
        string script = File.ReadAllText(array);
        // The exec line, run by bash with the program replaced by printf, hands over every argument unchanged.
        string exec = script.Split('\n').Single(l => l.StartsWith("exec "));
        var args = Bash($"SLURM_ARRAY_TASK_ID=2; {exec[5..]}").TrimEnd('\n').Split('\n');
        Assert.Equal(new[] { "features", "build", "--out", outDir, "--shard", "2/3" }, args);
        Assert.Equal(new[] { "features", "merge", outDir }, Bash(File.ReadAllText(merge).Split('\n').Single(l => l.StartsWith("exec "))[5..]).TrimEnd('\n').Split('\n'));
        // #SBATCH lines are read by sbatch: one line each, the value in double quotes with \ and " escaped.
        string output = script.Split('\n').Single(l => l.StartsWith("#SBATCH --output="));
        string logs = Path.GetFullPath(Path.Combine(work, "logs")) + "/task-%A_%a.log";
        Assert.Equal("#SBATCH --output=\"" + logs.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"", output);
        Assert.Equal(1, script.Split('\n').Count(l => l.StartsWith("exec "))); // nothing injected
    }

    [Theory]
    [InlineData("out\nrm -rf ~")]
    [InlineData("out\rx")]
    public void ALineBreakInAPathIsRefused(string outDir)
    {
        using var dir = new TempDir();
        var e = Assert.Throws<MechanistException>(() => SlurmJob.WriteScripts(Plan(dir.Path, outDir), new[] { 0 }));
        Assert.Contains("line break", e.Message);
        Assert.False(File.Exists(Path.Combine(dir.Path, "array.sbatch")));
        Assert.Throws<MechanistException>(() => SlurmJob.KubernetesIndexedJob(Plan(dir.Path, outDir), "img", "claim", "/data"));
        var work = Assert.Throws<MechanistException>(() => SlurmJob.WriteScripts(Plan(dir.File("w\nx"), "out"), new[] { 0 }));
        Assert.Contains("work folder", work.Message);
    }

    [Fact]
    public void KubernetesYamlParsesWithEveryPathCharacter()
    {
        using var dir = new TempDir();
        string outDir = "/data/" + Nasty;
        string yaml = SlurmJob.KubernetesIndexedJob(Plan(dir.Path, outDir), "registry/mechanist:1 \"x\"", "claim\\1", "/da ta\\x");
        var doc = new YamlDotNet.Serialization.DeserializerBuilder().Build().Deserialize<Dictionary<object, object>>(yaml);
        var container = (Dictionary<object, object>)((List<object>)((Dictionary<object, object>)((Dictionary<object, object>)((Dictionary<object, object>)doc["spec"])["template"])["spec"])["containers"])[0];
        Assert.Equal("registry/mechanist:1 \"x\"", container["image"]);
        string command = (string)((List<object>)container["args"])[0];
        // The shell command in the YAML, run by bash with mechanist as printf, hands the arguments over unchanged.
        var args = Bash($"mechanist() {{ printf '%s\\n' \"$@\"; }}; JOB_COMPLETION_INDEX=1; {command[5..]}").TrimEnd('\n').Split('\n');
        Assert.Equal(new[] { "features", "build", "--out", outDir, "--shard", "1/3" }, args);
        Assert.Equal("/da ta\\x", ((Dictionary<object, object>)((List<object>)container["volumeMounts"])[0])["mountPath"]);
    }

    // ---- harvest merge ----

    static string Harvest(TempDir dir)
    {
        string h = dir.File("h");
        var (code, _, err) = CliRunner.Run("harvest", "--texts", "80", "--tokens", "900", "--chunk-tokens", "300", "--out", h);
        Assert.True(code == 0, err);
        return h;
    }

    static string ManifestPath(string h) => Path.Combine(h, HarvestJob.ManifestName(0, 1));

    static void EditManifest(string h, Func<HarvestManifest, HarvestManifest> edit) =>
        File.WriteAllText(ManifestPath(h), Mechanist.Reporting.JsonFormat.Serialize(edit(HarvestJob.ReadManifest(ManifestPath(h)))));

    [Fact]
    public void HarvestMergeVerifiesEveryChunk()
    {
        using var dir = new TempDir();
        string h = Harvest(dir);
        var manifest = HarvestJob.ReadManifest(ManifestPath(h));
        Assert.True(manifest.Chunks.Length >= 2);
        Assert.All(manifest.Chunks, c => { Assert.NotNull(c.Sha256); Assert.Equal(new FileInfo(Path.Combine(h, c.File)).Length, c.Bytes); });
        Assert.Equal(manifest.Tokens, HarvestJob.Merge(h).Tokens);
        string first = Path.Combine(h, manifest.Chunks[0].File);
        byte[] original = File.ReadAllBytes(first);

        // A truncated chunk.
        File.WriteAllBytes(first, original[..(original.Length - 100)]);
        Assert.Contains("truncated or replaced", Assert.Throws<MechanistException>(() => HarvestJob.Merge(h)).Message);
        // The same size, one byte changed in the data.
        var flipped = (byte[])original.Clone(); flipped[^5] ^= 0x40;
        File.WriteAllBytes(first, flipped);
        Assert.Contains("SHA-256", Assert.Throws<MechanistException>(() => HarvestJob.Merge(h)).Message);
        File.WriteAllBytes(first, original);

        // Row and token counts that lie.
        EditManifest(h, m => m with { Chunks = m.Chunks.Select((c, i) => i == 0 ? c with { Rows = c.Rows + 7 } : c).ToArray(), Tokens = m.Tokens + 7 });
        Assert.Contains("the manifest says", Assert.Throws<MechanistException>(() => HarvestJob.Merge(h)).Message);
        EditManifest(h, m => m with { Chunks = m.Chunks.Select((c, i) => i == 0 ? c with { Rows = c.Rows - 7 } : c).ToArray() });
        Assert.Contains("rows but the manifest says", Assert.Throws<MechanistException>(() => HarvestJob.Merge(h)).Message);
        EditManifest(h, _ => manifest);

        // A chunk path out of the folder.
        EditManifest(h, m => m with { Chunks = m.Chunks.Select((c, i) => i == 0 ? c with { File = "../../../../etc/passwd" } : c).ToArray() });
        Assert.Contains("not a file name inside the harvest folder", Assert.Throws<MechanistException>(() => HarvestJob.Merge(h)).Message);
        EditManifest(h, _ => manifest);
        Assert.Equal(manifest.Tokens, HarvestJob.Merge(h).Tokens);
    }

    // ---- non-finite weights and values ----

    [Fact]
    public void ADictionaryWithNaNWeightsIsRefusedNamingTheTensor()
    {
        using var dir = new TempDir();
        string src = Path.Combine(SharedData.RepoRoot, "models", "toy-4l", "clt"), dst = dir.File("clt");
        Directory.CreateDirectory(dst);
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        string enc = Path.Combine(dst, "W_enc_1.safetensors");
        var tensors = new Dictionary<string, Tensor>();
        using (var f = SafetensorsFile.Open(enc)) foreach (var n in f.Names) tensors[n] = f.Read(n).clone();
        var name = tensors.Keys.First(k => k.StartsWith("b_enc"));
        tensors[name][3] = tensor(float.NaN);
        SafetensorsWriter.Write(enc, tensors);
        foreach (var t in tensors.Values) t.Dispose();
        var e = Assert.Throws<InvalidCheckpointException>(() => CircuitTracerFormat.Load(dst));
        Assert.Contains($"'{name}'", e.Message);
        Assert.Contains("NaN", e.Message);
        var (code, _, err) = CliRunner.Run("intervene", "--prompt", Prompt, "--transcoders", dst, "--set", "0:-1:1=0");
        Assert.NotEqual(0, code);
        Assert.Contains(name, err);
        Assert.DoesNotContain("internal error", err);
    }

    [Theory]
    [InlineData("0:-1:776=NaN", "finite")]
    [InlineData("0:-1:776=Infinity", "finite")]
    [InlineData("0:-1:776=-Infinity", "finite")]
    [InlineData("0:-1:776=1e400", "finite")]
    [InlineData("0:-1:776=x1e400", "finite")]
    public void InterveneRefusesNonFiniteValues(string set, string expected)
    {
        var (code, _, err) = CliRunner.Run("intervene", "--prompt", Prompt, "--set", set);
        Assert.Equal(2, code);
        Assert.Contains(expected, err);
    }

    [Fact]
    public void InterveneRefusesANegativeCountAndAStarOnABosOnlyPrompt()
    {
        var (code, _, err) = CliRunner.Run("intervene", "--prompt", Prompt, "--set", "0:-1:776=0", "--generate", "-5");
        Assert.Equal(2, code);
        Assert.Contains("0 or more", err);
        (code, _, err) = CliRunner.Run("intervene", "--tokens", "0", "--set", "0:*:776=0");
        Assert.Equal(2, code);
        Assert.Contains("only BOS", err);
    }

    [Theory]
    [InlineData("harvest --tokens -5 --out X", "--tokens must be at least 1 (got -5)")]
    [InlineData("microscope --generate -5", "--generate must be 0 or more (got -5)")]
    [InlineData("lens --prompt hi --top-k -2", "--top-k must be at least 1 (got -2)")]
    [InlineData("features build --texts -5 --out X", "--texts must be at least 1 (got -5)")]
    [InlineData("dict train --steps 0 --out X", "--steps must be at least 1 (got 0)")]
    [InlineData("trace --prompt hi --max-feature-nodes -1 --out X", "--max-feature-nodes must be at least 1 (got -1)")]
    [InlineData("generate --prompt hi --max-new-tokens -5", "--max-new-tokens must be 0 or more (got -5)")]
    [InlineData("steer --positive happy --negative sad --layer 1 --coef NaN --prompt hi", "--coef must be a finite number (got NaN)")]
    [InlineData("generate --prompt hi --temperature 1e400", "--temperature must be a finite number (got 1e400)")]
    [InlineData("trace --prompt hi --node-threshold -Infinity --out X", "--node-threshold must be a finite number")]
    public void NegativeCountsAreRefusedInEveryCommand(string args, string expected)
    {
        using var dir = new TempDir();
        var (code, _, err) = CliRunner.Run(args.Split(' ').Select(a => a == "X" ? dir.File("out") : a).ToArray());
        Assert.Equal(2, code);
        Assert.Contains(expected, err);
        Assert.False(Directory.Exists(dir.File("out")));
    }

    [Fact]
    public void GenerateStillSamplesFromEveryTokenWithTopKZero()
    {
        var (code, _, err) = CliRunner.Run("generate", "--prompt", "The capital of", "--top-k", "0", "--temperature", "1", "--max-new-tokens", "2");
        Assert.True(code == 0, err);
    }

    [Theory]
    [InlineData("toy-4", "did you mean toy-4l?")]
    [InlineData("toy4l", "did you mean toy-4l?")]
    [InlineData("no-such-model-xyz", "is not a built-in model (toy-4l, attn-only-2l)")]
    public void AMistypedBuiltInModelNamesTheBuiltInModels(string model, string expected)
    {
        var (code, _, err) = CliRunner.Run("run", "--model", model, "--prompt", "hi", "--offline");
        Assert.Equal(2, code);
        Assert.Contains(expected, err);
    }

    [Fact]
    public void AnUnknownTargetWordIsAnErrorNotUnk()
    {
        var (code, _, err) = CliRunner.Run("lens", "--prompt", Prompt, "--target", " Zanzibarqq");
        Assert.Equal(2, code);
        Assert.Contains("not in", err);
        Assert.Contains("<unk>", err);
        (code, _, err) = CliRunner.Run("lens", "--prompt", Prompt, "--target", " Austin");
        Assert.True(code == 0, err);
    }

    [Fact]
    public void InterveneSwapsAConceptFromAnotherPrompt()
    {
        var (code, stdout, err) = CliRunner.Run("intervene", "--prompt", Prompt, "--swap-from", "The capital of Oregon is", "--json");
        Assert.True(code == 0, err);
        using var report = JsonDocument.Parse(stdout);
        Assert.Contains("Austin", report.RootElement.GetProperty("before")[0].GetProperty("token").GetString());
        Assert.Contains("Salem", report.RootElement.GetProperty("after")[0].GetProperty("token").GetString());
        Assert.True(report.RootElement.GetProperty("interventions").GetArrayLength() > 0);
        // Only layer 3 swapped: fewer feature settings.
        (code, stdout, err) = CliRunner.Run("intervene", "--prompt", Prompt, "--swap-from", "The capital of Oregon is", "--swap-layers", "3", "--json");
        Assert.True(code == 0, err);
        using var late = JsonDocument.Parse(stdout);
        Assert.True(late.RootElement.GetProperty("interventions").GetArrayLength() < report.RootElement.GetProperty("interventions").GetArrayLength());
        (code, _, err) = CliRunner.Run("intervene", "--prompt", Prompt);
        Assert.Equal(2, code);
        Assert.Contains("--swap-from", err);
        (code, _, err) = CliRunner.Run("intervene", "--prompt", Prompt, "--swap-from", "The capital of Oregon is", "--swap-layers", "0-9");
        Assert.Equal(2, code);
        Assert.Contains("swap layer 4 is outside", err);
    }

    [Fact]
    public void SearchRanksFeaturesThatFireOnTheQueryTokenFirst()
    {
        using var dir = new TempDir();
        var (code, _, err) = CliRunner.Run("features", "build", "--texts", "1500", "--out", dir.Path);
        Assert.True(code == 0, err);
        var store = Mechanist.Features.FeatureStore.Open(dir.File("features.db"));
        var hits = store.Search("dallas", limit: 5);
        // Ranked by frequency before, the densest feature (firing on most tokens, its contexts naming Dallas too) came first.
        var densest = store.Search("dallas", limit: 1000).MaxBy(h => h.Count)!;
        Assert.DoesNotContain(hits, h => (h.Layer, h.Feature) == (densest.Layer, densest.Feature));
        // The Dallas features of the two-hop circuit (0:776 and 1:559 in its graph, firing right after "Dallas") are among the first five.
        Assert.Contains(hits, h => (h.Layer, h.Feature) is (0, 776) or (1, 559));
        // Each of the first five has top examples firing on "Dallas" or right after it.
        foreach (var h in hits)
        {
            var top = store.Dashboard(h.Layer, h.Feature).Top;
            Assert.Contains(top, e => e.Tokens[e.MaxIndex].Trim() == "Dallas" || (e.MaxIndex > 0 && e.Tokens[e.MaxIndex - 1].Trim() == "Dallas"));
        }
        var all = store.Search("dallas", limit: 1000);
        Assert.True(all.Count > 5, $"{all.Count} matches");
        // A user label equal to the query ranks first.
        var last = all[^1];
        store.SetLabel(last.Layer, last.Feature, "dallas");
        Assert.Equal((last.Layer, last.Feature), (store.Search("dallas", limit: 1)[0].Layer, store.Search("dallas", limit: 1)[0].Feature));
        (code, var stdout, err) = CliRunner.Run("features", "search", "--db", dir.Path, "dallas", "--json");
        Assert.True(code == 0, err);
        using var json = JsonDocument.Parse(stdout);
        Assert.Equal(last.Layer, json.RootElement[0].GetProperty("layer").GetInt32());
        Assert.Equal(last.Feature, json.RootElement[0].GetProperty("feature").GetInt32());
        // features show in the terminal: the histogram as bars, the octave samples and the CLT's decoder norms.
        (code, stdout, err) = CliRunner.Run("features", "show", "--db", dir.Path, "0:776");
        Assert.True(code == 0, err);
        var dash = store.Dashboard(0, 776);
        Assert.Contains("activations", stdout);
        Assert.Contains(dash.Histogram.Max(b => b.Count).ToString(), stdout);
        Assert.Contains("sampled by activation octave", stdout);
        Assert.Contains("decoder norm into layer: L0 ", stdout);
    }

    // ---- feature stores and temp files ----

    [Fact]
    public void AFeatureStoreMissingATableIsACleanError()
    {
        using var dir = new TempDir();
        var (code, _, err) = CliRunner.Run("features", "build", "--texts", "30", "--out", dir.Path);
        Assert.True(code == 0, err);
        string db = dir.File("features.db");
        using (var c = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={db};Pooling=False"))
        {
            c.Open();
            using var cmd = c.CreateCommand(); cmd.CommandText = "DROP TABLE labels"; cmd.ExecuteNonQuery();
        }
        (code, _, err) = CliRunner.Run("features", "show", "--db", db, "0:1");
        Assert.Equal(2, code);
        Assert.Contains("labels", err);
        Assert.DoesNotContain("internal error", err);
    }

    [Fact]
    public void AKilledWritersTempFilesAreRemovedOnRestart()
    {
        using var dir = new TempDir();
        string store = dir.File("features-0-of-1.db");
        // A process id that is not running (above Linux's pid_max), and one that is (this process: kept).
        string dead = dir.File($".features-0-of-1.db.{int.MaxValue - 1}.{Guid.NewGuid():N}.tmp");
        string deadJournal = dead + "-journal";
        string live = dir.File($".features-0-of-1.db.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        string other = dir.File($".other.db.{int.MaxValue - 1}.{Guid.NewGuid():N}.tmp");
        foreach (var f in new[] { dead, deadJournal, live, other }) File.WriteAllText(f, "x");
        Assert.Equal(2, AtomicFile.RemoveStaleTemps(store));
        Assert.False(File.Exists(dead)); Assert.False(File.Exists(deadJournal));
        Assert.True(File.Exists(live)); Assert.True(File.Exists(other));
        File.Delete(live); File.Delete(other);
        // features build does it when it starts.
        File.WriteAllText(dead, "x");
        var (code, _, err) = CliRunner.Run("features", "build", "--texts", "20", "--out", dir.Path);
        Assert.True(code == 0, err);
        Assert.False(File.Exists(dead));
        Assert.Empty(Directory.GetFiles(dir.Path, ".*"));
    }

    // ---- a resumed training run's throughput ----

    [Fact]
    public void AResumedTrainingRunCountsOnlyItsOwnSteps()
    {
        using var dir = new TempDir();
        using var scope = NewDisposeScope();
        manual_seed(0);
        var x = randn(512, 1, 16);
        var data = new ActivationSet(x, x, 1);
        var c = new DictionaryTrainConfig(DictionaryKind.Sae, TrainActivation.TopK, Features: 32, K: 4, Steps: 10, BatchSize: 64, CheckpointEvery: 5);
        var first = DictionaryTrainer.Train(data, c, dir.Path);
        ((IDisposable)first.Dictionary).Dispose();
        Assert.Equal(10, first.StepsRun);
        // A kill mid-checkpoint leaves a temp file of a process that is gone; the resumed run removes it.
        string stale = dir.File($".optimizer.safetensors.{int.MaxValue - 1}.{Guid.NewGuid():N}.tmp");
        File.WriteAllText(stale, "partial");
        var resumed = DictionaryTrainer.Train(data, c with { Steps = 16 }, dir.Path);
        ((IDisposable)resumed.Dictionary).Dispose();
        Assert.Equal(16, resumed.Losses.Length);
        Assert.Equal(6, resumed.StepsRun);
        Assert.False(File.Exists(stale));
    }
}
