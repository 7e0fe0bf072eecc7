using System.Text.Json;
using Mechanist.Attribution;
using Mechanist.Dictionaries.Formats;
using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Tests.Attribution;

/// <summary>
/// QK attribution: every term sums to the score the model itself computes (hook_attn_scores), term for term against the independent
/// reference in ../shared/golden/qk, and a hand-built model whose terms are known in closed form.
/// </summary>
public class QkAttributionTests
{
    /// <summary>Every decoder architecture of the golden models: GQA, RoPE (partial, interleaved, local), ALiBi, soft-capping, post-norms, q/k norms, MoE.</summary>
    public static IEnumerable<object[]> Architectures() =>
        new[] { "gpt2", "gpt_neox", "llama", "mistral", "qwen2", "gemma", "gemma2", "phi3", "olmo", "mistral_swa", "gemma2_swa", "qwen3", "gemma3", "starcoder2", "stablelm", "phi", "opt", "gptj", "cohere", "falcon", "olmo2", "bloom", "mixtral", "qwen2_moe" }
        .Select(a => new object[] { a });

    /// <summary>Checks Σ terms = the score and the (soft-capped) score = the model's hook_attn_scores for every head, query and key.</summary>
    static void EveryScoreIsTheSumOfItsTerms(HookedTransformer model, Tensor tokens, QkAttribution qk, string what)
    {
        var reg = model.HookPoints;
        var (logits, cache) = model.RunWithCache(tokens, n => reg.Points.Any(p => p.Kind == HookKind.AttnScores && p.Name == n));
        using var _l = logits; using var _c = cache;
        var cfg = model.Config;
        int t = (int)tokens.shape[1], checkedScores = 0;
        for (int l = 0; l < cfg.NLayers; l++)
        {
            var scores = cache[HookKind.AttnScores, l][0].to(ScalarType.Float64).cpu();
            for (int h = 0; h < cfg.NHeads; h++)
                for (int i = 0; i < t; i++)
                    for (int j = 0; j <= i; j++)
                    {
                        if (cfg.UsesSlidingWindow(l) && i - j >= cfg.SlidingWindow) continue;
                        var r = qk.Compute(l, h, i, j);
                        double expected = scores[h, i, j].item<double>();
                        Assert.True(Math.Abs(r.Sum - r.Score) <= 1e-5 * (1 + Math.Abs(r.Score)), $"{what} L{l}H{h} {i}->{j}: terms sum to {r.Sum}, score {r.Score}");
                        Assert.True(Math.Abs(r.Softcapped - expected) <= 1e-4 * Math.Max(1, Math.Abs(expected)), $"{what} L{l}H{h} {i}->{j}: {r.Softcapped} but the model's score is {expected}");
                        Assert.Equal(r.TermCount, r.Terms.Length);
                        checkedScores++;
                    }
        }
        Assert.True(checkedScores > 0);
    }

    [Theory]
    [MemberData(nameof(Architectures))]
    public void EveryHeadsScoreIsTheSumOfItsTermsOnEveryArchitecture(string arch)
    {
        var (model, reference) = SharedData.Golden(arch);
        using var _m = model; using var _r = reference;
        using var all = reference.Read("input_ids");
        using var tokens = all[..1, ..(int)Math.Min(6, all.shape[1])].contiguous();
        using var qk = QkAttribution.For(model, tokens);
        EveryScoreIsTheSumOfItsTerms(model, tokens, qk, arch);
    }

    [Fact]
    public void InTheBuiltInModelsScoresSplitExactlyOverFeaturesErrorsAndHeads()
    {
        // toy-4l with its CLT: features, S terms, errors and head outputs; attn-only-2l: embeddings and head outputs only.
        using var model = HookedTransformer.Load(Path.Combine(SharedData.RepoRoot, "models", "toy-4l"));
        using var bundle = CircuitTracerFormat.Load(Path.Combine(SharedData.RepoRoot, "models", "toy-4l", "clt"));
        using var tokens = tensor(model.Tokenizer!.Encode("The capital of the state containing Dallas is").Select(x => (long)x).ToArray()).unsqueeze(0);
        using var rm = ReplacementModel.Build(model, bundle.Dictionary, bundle.Input, tokens);
        using var qk = QkAttribution.For(rm);
        EveryScoreIsTheSumOfItsTerms(model, tokens, qk, "toy-4l");
        var r = qk.Compute(2, 0, 8, 6);
        Assert.Contains(r.Terms, x => x.Query.EndsWith("_8") && x.Query.Count(c => c == '_') == 2 && !x.Query.Contains("-1") && char.IsDigit(x.Query[0])); // features at "is"
        Assert.Contains(r.Terms, x => x.Key.StartsWith("A_1_"));

        using var attnOnly = HookedTransformer.Load(Path.Combine(SharedData.RepoRoot, "models", "attn-only-2l"));
        using var seq = tensor(attnOnly.Tokenizer!.Encode("When Mary and John went to the store , John gave a drink to").Select(x => (long)x).ToArray()).unsqueeze(0);
        using var qk2 = QkAttribution.For(attnOnly, seq);
        EveryScoreIsTheSumOfItsTerms(attnOnly, seq, qk2, "attn-only-2l");
        Assert.All(qk2.Compute(1, 0, 5, 2).Terms, x => Assert.Matches(@"^(E_\d+_\d+|P_\d+|A_0_\d+_\d+|B_0|bias|alibi)$", x.Query));
    }

    public static IEnumerable<object[]> GoldenCases() =>
        new[] { "gpt2_plt_relu", "llama_plt_skip_jumprelu", "llama_clt_jumprelu", "llama_plt_normalized_skip_relu", "gpt2_clt_relu_mlpin" }.Select(c => new object[] { c });

    [Theory]
    [MemberData(nameof(GoldenCases))]
    public void EveryTermMatchesTheIndependentReference(string name)
    {
        using var c = new AttributionGoldenTests.Case(name);
        var golden = JsonDocument.Parse(File.ReadAllText(SharedData.PathOf("golden", "qk", name + ".json"))).RootElement;
        Assert.Equal(golden.GetProperty("input_ids").EnumerateArray().Select(x => x.GetInt64()), c.Rm.Tokens[0].data<long>().ToArray());
        using var qk = QkAttribution.For(c.Rm);
        foreach (var head in golden.GetProperty("heads").EnumerateArray())
        {
            int l = head.GetProperty("layer").GetInt32(), h = head.GetProperty("head").GetInt32(), i = head.GetProperty("query").GetInt32(), j = head.GetProperty("key").GetInt32();
            var r = qk.Compute(l, h, i, j);
            string where = $"{name} L{l}H{h} {i}->{j}";
            double score = head.GetProperty("score").GetDouble();
            Assert.True(Math.Abs(r.Score - score) <= 1e-5 * Math.Max(1, Math.Abs(score)), $"{where}: score {r.Score} vs {score}");
            var expected = new Dictionary<(string, string), double>();
            foreach (var p in head.GetProperty("pairs").EnumerateArray()) expected[(p.GetProperty("query").GetString()!, p.GetProperty("key").GetString()!)] = p.GetProperty("value").GetDouble();
            foreach (var p in head.GetProperty("query_side").EnumerateArray()) expected[(p.GetProperty("query").GetString()!, QkAttribution.Bias)] = p.GetProperty("value").GetDouble();
            foreach (var p in head.GetProperty("key_side").EnumerateArray()) expected[(QkAttribution.Bias, p.GetProperty("key").GetString()!)] = p.GetProperty("value").GetDouble();
            expected[(QkAttribution.Bias, QkAttribution.Bias)] = head.GetProperty("constant").GetDouble();
            var actual = r.Terms.ToDictionary(x => (x.Query, x.Key), x => x.Value);
            Assert.True(expected.Keys.ToHashSet().SetEquals(actual.Keys),
                $"{where}: components differ: missing {string.Join(", ", expected.Keys.Except(actual.Keys).Take(5))}; extra {string.Join(", ", actual.Keys.Except(expected.Keys).Take(5))}");
            double scale = Math.Max(1, expected.Values.Max(Math.Abs));
            foreach (var (key, value) in expected)
                Assert.True(Math.Abs(actual[key] - value) <= 2e-5 * scale, $"{where}: term {key} is {actual[key]}, reference {value}");
        }
    }

    [Fact]
    public void AOneHeadModelWithHandSetWeightsHasTheClosedFormTerms()
    {
        // d_model 2, one head of width 2, learned positions, no norm: q = W_Q(E + P) + b_Q, k = W_K(E + P) + b_K, score = q · k.
        var cfg = new TransformerConfig
        {
            Architecture = "hand", DModel = 2, NLayers = 1, NHeads = 1, NKvHeads = 1, DHead = 2, DMlp = 1, VocabSize = 3, NCtx = 3,
            Norm = NormKind.RmsNorm, NormEps = 1e-6, Activation = "relu", AttnScale = 1.0, AttnOnly = true, PreNorms = false,
            Positional = PositionKind.Learned, QkvBias = true,
        };
        Tensor T(params float[] v) => tensor(v);
        var w = new TransformerWeights
        {
            WE = T(1, 0, 0, 1, 1, 1).view(3, 2), WPos = T(0.5f, 0, 0, 0.5f, 0.25f, 0.25f).view(3, 2), LnFinalW = T(1, 1),
            Blocks = new[] { new BlockWeights { Wq = T(1, 0, 0, 1).view(2, 2), Wk = T(2, 0, 0, 1).view(2, 2), Wv = eye(2), Wo = eye(2), Bq = T(1, 0), Bk = T(0, 1), Bv = T(0, 0) } },
        };
        w.WU = w.WE;
        using var model = new HookedTransformer(cfg, w, null, "hand");
        using var tokens = tensor(new long[] { 0, 1, 2 }).view(1, 3);
        using var qk = QkAttribution.For(model, tokens);
        var r = qk.Compute(0, 0, 2, 1);
        // q = (1.25, 1.25) + (1, 0) = (2.25, 1.25); k = W_K (0, 1.5) + (0, 1) = (0, 2.5); score 3.125.
        Assert.Equal(3.125, r.Score, 6);
        var t = r.Terms.ToDictionary(x => (x.Query, x.Key), x => x.Value);
        Assert.Equal(1.0, t[("E_2_2", "E_1_1")], 6);      // (1, 1) · (0, 1)
        Assert.Equal(0.5, t[("E_2_2", "P_1")], 6);        // (1, 1) · (0, 0.5)
        Assert.Equal(0.25, t[("P_2", "E_1_1")], 6);       // (0.25, 0.25) · (0, 1)
        Assert.Equal(0.125, t[("P_2", "P_1")], 6);
        Assert.Equal(1.0, t[("E_2_2", QkAttribution.Bias)], 6);   // with b_K = (0, 1)
        Assert.Equal(0.25, t[("P_2", QkAttribution.Bias)], 6);
        Assert.Equal(0.0, t[(QkAttribution.Bias, "E_1_1")], 6);   // b_Q = (1, 0) is orthogonal to every key map
        Assert.Equal(0.0, t[(QkAttribution.Bias, QkAttribution.Bias)], 6);
        Assert.Equal(3.125, r.Sum, 6);
        // Top 2: the two largest |terms| kept, the rest summed.
        var top = qk.Compute(0, 0, 2, 1, top: 2);
        Assert.Equal(2, top.Terms.Length);
        Assert.Equal(3.125 - 2.0, top.Rest, 6);
        Assert.Contains("after query", Assert.Throws<MechanistException>(() => qk.Compute(0, 0, 1, 2)).Message);
    }
}

/// <summary><c>mechanist qk</c>: the table, the JSON, every term with --top 0, and the induction head of attn-only-2l.</summary>
public class QkCliTests
{
    // A repeated random sequence: token 97 first at position 4, again at 12; an induction head at 12 attends to 5 (what followed 97).
    const string Repeated = "1,301,122,355,97,210,388,161,74,301,122,355,97,210,388,161,74";

    [Fact]
    public void TheInductionHeadsScoreIsCurrentTokenAgainstPreviousTokenHead()
    {
        var (code, output, err) = Cli.CliRunner.Run("qk", "--model", "attn-only-2l", "--tokens", Repeated, "--layer", "1", "--head", "0", "--query", "12", "--key", "5", "--top", "0", "--json");
        Assert.True(code == 0, err);
        var r = JsonDocument.Parse(output).RootElement;
        double score = r.GetProperty("score").GetDouble(), sum = r.GetProperty("sum").GetDouble();
        Assert.Equal(score, sum, 4);
        var terms = r.GetProperty("terms").EnumerateArray().Select(t => (Q: t.GetProperty("query").GetString()!, K: t.GetProperty("key").GetString()!, V: t.GetProperty("value").GetDouble())).ToList();
        Assert.Equal(r.GetProperty("termCount").GetInt32(), terms.Count); // --top 0: every term
        Assert.Equal(sum, terms.Sum(t => t.V), 4);
        // The key side that matters is layer 0's previous-token head (L0H1) at the key ("the previous token was 97"), met at the query
        // by the current token 97 (its embedding, and L0H0's copy of it).
        double previousToken = terms.Where(t => t.K == "A_0_1_5").Sum(t => t.V);
        Assert.True(previousToken > 0.5 * score, $"key-side A_0_1_5 carries {previousToken} of {score}");
        Assert.True(terms.Single(t => t.Q == "E_97_12" && t.K == "A_0_1_5").V > 0);
        // A key that did not follow 97 scores far lower.
        (code, output, _) = Cli.CliRunner.Run("qk", "--model", "attn-only-2l", "--tokens", Repeated, "--layer", "1", "--head", "0", "--query", "12", "--key", "9", "--json");
        Assert.True(JsonDocument.Parse(output).RootElement.GetProperty("score").GetDouble() < score / 2);
    }

    [Fact]
    public void TheTableNamesTheComponentsAndBadPositionsAreRefused()
    {
        var (code, output, err) = Cli.CliRunner.Run("qk", "--prompt", "The capital of the state containing Dallas is", "--layer", "1", "--head", "0", "--key", "6", "--top", "5");
        Assert.True(code == 0, err);
        Assert.Contains("L1H0, query 8", output);
        Assert.Contains("more", output);       // the rest of the terms, summed
        Assert.Contains("S_0_6", output);      // the CLT's S term at the key
        (code, _, err) = Cli.CliRunner.Run("qk", "--prompt", "The capital of", "--layer", "1", "--head", "0", "--query", "1", "--key", "7");
        Assert.Equal(2, code);
        Assert.Contains("positions must be within", err);
        (code, _, err) = Cli.CliRunner.Run("qk", "--prompt", "The capital of", "--layer", "1", "--head", "9", "--key", "0");
        Assert.Equal(2, code);
        Assert.Contains("head 9 is outside", err);
    }
}
