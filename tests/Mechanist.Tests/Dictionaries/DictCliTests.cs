using System.Text.Json;
using Mechanist.Tests.Cli;

namespace Mechanist.Tests.Dictionaries;

/// <summary>mechanist dict train / eval / info, end to end on stories260K, and their errors.</summary>
public class DictCliTests
{
    static readonly string Stories = SharedData.PathOf("models", "stories260K", "stories260K.bin");

    static readonly string[] Sentences =
    {
        "Once upon a time, there was a little girl named Lily.", "She liked to play with her ball in the park.",
        "Tom had a big red dog. The dog was very happy.", "One day, Lily saw a bird in the tree.", "The sun was warm and the sky was blue.",
        "Ben and Mia went to the store to buy some candy.", "Mom said, \"Be careful!\" and smiled.", "The cat jumped on the bed and went to sleep.",
    };

    static string Corpus(TempDir dir)
    {
        string path = dir.File("corpus.jsonl");
        File.WriteAllLines(path, Enumerable.Range(0, 12).SelectMany(_ => Sentences).Select(s => JsonSerializer.Serialize(new { text = s })));
        return path;
    }

    [Fact]
    public void TrainInfoAndEvalAClt()
    {
        using var dir = new TempDir();
        string corpus = Corpus(dir), output = dir.File("clt");
        var (code, stdout, err) = CliRunner.Run("dict", "train", "-m", Stories, "--corpus", corpus, "--kind", "clt", "--features", "64", "--k", "4",
            "--steps", "40", "--batch", "128", "--tokens", "1500", "--eval-tokens", "300", "--out", output);
        Assert.True(code == 0, err);
        Assert.Contains("loss recovered", stdout);
        foreach (var f in new[] { "config.yaml", "W_enc_0.safetensors", "W_dec_4.safetensors", "README.md", "metrics.json", "loss.png" })
            Assert.True(File.Exists(Path.Combine(output, f)), f);
        var metrics = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "metrics.json"))).RootElement;
        Assert.Equal(5, metrics.GetProperty("layers").GetArrayLength());
        Assert.All(metrics.GetProperty("layers").EnumerateArray(), l => Assert.Equal(4.0, l.GetProperty("l0").GetDouble(), 6)); // top-k: exactly k

        (code, stdout, err) = CliRunner.Run("dict", "info", output, "--json");
        Assert.True(code == 0, err);
        var info = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal("clt", info.GetProperty("kind").GetString());
        Assert.Equal(5, info.GetProperty("layers").GetInt32());
        Assert.Equal(64, info.GetProperty("features").GetInt32());

        // eval on the same held-out texts gives the numbers the card reports.
        (code, stdout, err) = CliRunner.Run("dict", "eval", "-m", Stories, "--dict", output, "--corpus", corpus, "--tokens", "300", "--json");
        Assert.True(code == 0, err);
        var eval = JsonDocument.Parse(stdout).RootElement;
        Assert.Equal(metrics.GetProperty("layers")[0].GetProperty("fvu").GetDouble(), eval.GetProperty("layers")[0].GetProperty("fvu").GetDouble(), 4);
        Assert.Equal(metrics.GetProperty("splice").GetProperty("lossRecovered").GetDouble(), eval.GetProperty("splice").GetProperty("lossRecovered").GetDouble(), 4);
    }

    [Fact]
    public void BadInputGivesOneClearErrorAndNothingOnDisk()
    {
        using var dir = new TempDir();
        string corpus = Corpus(dir);
        var (code, _, err) = CliRunner.Run("dict", "train", "-m", Stories, "--corpus", corpus, "--kind", "sae", "--hook", "blocks.1.hook_resid_psot", "--out", dir.File("a"));
        Assert.Equal(2, code);
        Assert.Contains("unknown hook point 'blocks.1.hook_resid_psot'", err);
        Assert.False(Directory.Exists(dir.File("a")));

        File.WriteAllText(dir.File("empty.txt"), "\n  \n");
        (code, _, err) = CliRunner.Run("dict", "train", "-m", Stories, "--corpus", dir.File("empty.txt"), "--out", dir.File("b"));
        Assert.Equal(2, code);
        Assert.Contains("at least two texts", err);

        File.WriteAllText(dir.File("bad.jsonl"), "{\"text\": \"fine\"}\n{\"txt\": 3}\n");
        (code, _, err) = CliRunner.Run("dict", "train", "-m", Stories, "--corpus", dir.File("bad.jsonl"), "--out", dir.File("c"));
        Assert.Equal(2, code);
        Assert.Contains("bad.jsonl:2: no string field \"text\"", err);

        // A dictionary for another model: the golden gpt2 transcoders on stories260K.
        (code, _, err) = CliRunner.Run("dict", "eval", "-m", Stories, "--dict", SharedData.PathOf("golden", "attribution", "gpt2_plt_relu", "transcoders"), "--corpus", corpus);
        Assert.Equal(2, code);
        Assert.Contains("the transcoders have 3 layers; the model has 5", err);

        (code, _, err) = CliRunner.Run("dict", "info", dir.File("nothing-here"));
        Assert.Equal(2, code);
        Assert.Contains("not a folder here, and not a hub repository id", err);
        Directory.CreateDirectory(dir.File("empty"));
        (code, _, err) = CliRunner.Run("dict", "info", dir.File("empty"));
        Assert.Equal(2, code);
        Assert.Contains("neither a circuit-tracer transcoder folder (config.yaml) nor an SAELens folder", err);

        Directory.CreateDirectory(dir.File("taken")); File.WriteAllText(dir.File("taken/x"), "keep me");
        (code, _, err) = CliRunner.Run("dict", "train", "-m", Stories, "--corpus", corpus, "--out", dir.File("taken"));
        Assert.Equal(2, code);
        Assert.Contains("exists and is not empty", err);
        Assert.Equal("keep me", File.ReadAllText(dir.File("taken/x")));
    }
}
