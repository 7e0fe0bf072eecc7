using Mechanist.Tensors;
using Mechanist.Hooks;
using TorchSharp;
using static TorchSharp.torch;

namespace Mechanist.Models;

/// <summary>How to generate.</summary>
public sealed record GenerateOptions
{
    /// <summary>Tokens to add.</summary>
    public int MaxNewTokens { get; init; } = 20;
    /// <summary>0 means greedy (argmax).</summary>
    public double Temperature { get; init; }
    /// <summary>Keep only the k most likely tokens (0: off).</summary>
    public int TopK { get; init; }
    /// <summary>Keep the smallest set of tokens whose probability reaches p (1: off).</summary>
    public double TopP { get; init; } = 1.0;
    /// <summary>Random seed for sampling.</summary>
    public long? Seed { get; init; }
    /// <summary>Stop after emitting any of these (default: the model's EOS ids).</summary>
    public IReadOnlyCollection<int>? StopTokens { get; init; }
    /// <summary>Use the KV cache (default). Without it every step reruns the whole sequence.</summary>
    public bool UseKvCache { get; init; } = true;
    /// <summary>Hooks applied at every step (with the KV cache they see only the new position).</summary>
    public IReadOnlyList<ForwardHookSpec> Hooks { get; init; } = Array.Empty<ForwardHookSpec>();
    /// <summary>Splices started at every step (with the KV cache each run sees only the new positions).</summary>
    public IReadOnlyList<ISplice> Splices { get; init; } = Array.Empty<ISplice>();
    /// <summary>Keep each step's last-position logits in the result.</summary>
    public bool ReturnLogits { get; init; }
}

/// <summary>What generation produced.</summary>
/// <param name="Ids">All ids, prompt included.</param>
/// <param name="NewIds">Only the generated ids.</param>
/// <param name="StepLogits">Each step's next-token logits [vocab] (when asked for).</param>
public sealed record GenerationResult(long[] Ids, long[] NewIds, IReadOnlyList<float[]> StepLogits);

public sealed partial class HookedTransformer
{
    /// <summary>Generates a continuation of one prompt (ids, BOS included if wanted).</summary>
    public GenerationResult Generate(IReadOnlyList<long> prompt, GenerateOptions? options = null)
    {
        if (!Config.Causal) throw new MechanistException($"{Name} is an encoder ({Config.Architecture}, masked LM): it does not generate text left to right");
        options ??= new GenerateOptions();
        if (prompt.Count == 0) throw new MechanistException("generation needs at least one prompt token");
        if (options.MaxNewTokens < 0) throw new MechanistException("--max-new-tokens must be non-negative");
        if (options.Temperature < 0) throw new MechanistException("--temperature must be non-negative");
        if (prompt.Count + options.MaxNewTokens > Config.NCtx)
            throw new MechanistException($"{prompt.Count} prompt + {options.MaxNewTokens} new tokens exceed the model's context of {Config.NCtx}");
        var stops = options.StopTokens ?? Config.EosTokenIds.ToHashSet();
        using var generator = options.Seed is { } seed ? new Generator((ulong)seed) : null;
        var ids = prompt.ToList();
        var stepLogits = new List<float[]>();
        using var cache = options.UseKvCache ? new KvCache(Config.NLayers) : null;
        var runOptions = new RunOptions { Hooks = options.Hooks, KvCache = cache, Splices = options.Splices };
        for (int step = 0; step < options.MaxNewTokens; step++)
        {
            using var scope = NewDisposeScope();
            var input = cache is null || cache.Length == 0 ? ids : ids.Skip(cache.Length).ToList();
            var tokens = tensor(input.ToArray(), new long[] { 1, input.Count }, ScalarType.Int64, Device);
            var logits = Run(tokens, runOptions)[0, -1].to(ScalarType.Float32);
            if (options.ReturnLogits) stepLogits.Add(logits.cpu().data<float>().ToArray());
            long next = Sample(logits, options, generator);
            ids.Add(next);
            if (stops.Contains((int)next)) break;
        }
        return new GenerationResult(ids.ToArray(), ids.Skip(prompt.Count).ToArray(), stepLogits);
    }

    static long Sample(Tensor logits, GenerateOptions o, Generator? generator)
    {
        if (o.Temperature == 0) return logits.argmax().item<long>();
        var scaled = logits.Div(o.Temperature);
        if (o.TopK > 0 && o.TopK < scaled.shape[0])
        {
            var kth = scaled.topk(o.TopK).values[-1];
            scaled = scaled.MaskedFill(scaled < kth, double.NegativeInfinity);
        }
        if (o.TopP < 1.0)
        {
            var (sorted, order) = scaled.sort(descending: true);
            var cumulative = sorted.softmax(-1).cumsum(-1);
            // Drop a token when the tokens before it already reach p (the first token always stays).
            var drop = (cumulative - sorted.softmax(-1)).Ge(o.TopP);
            var dropOriginal = zeros_like(drop).scatter(0, order, drop);
            scaled = scaled.MaskedFill(dropOriginal, double.NegativeInfinity);
        }
        var probs = scaled.softmax(-1);
        return multinomial(probs, 1, generator: generator).item<long>();
    }
}
