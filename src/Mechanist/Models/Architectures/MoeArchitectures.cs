using Mechanist.IO;
using static TorchSharp.torch;

namespace Mechanist.Models.Architectures;

/// <summary>Routing options of mixture-of-experts configs that Mechanist does not implement, refused by name.</summary>
internal static class MoeConventions
{
    public static void RefuseUnsupportedRouting(ModelConfig c)
    {
        if (c.String("scoring_func") is { } f && f != "softmax") throw c.Bad("scoring_func", $"is '{f}'; only softmax routing is supported");
        if (c.String("topk_method") is { } t && t != "greedy") throw c.Bad("topk_method", $"is '{t}'; only greedy top-k routing is supported");
        if (c.IntOrNull("n_group") is > 1) throw c.Bad("n_group", "asks for grouped routing, which is not supported");
        if (c.IntOrNull("topk_group") is > 1) throw c.Bad("topk_group", "asks for grouped routing, which is not supported");
        if (c.DoubleOrNull("routed_scaling_factor") is { } s && s != 1.0) throw c.Bad("routed_scaling_factor", $"is {s}; scaled routing weights are not supported");
    }

    /// <summary>Stacks expert e's tensors "{prefix}{e}.{name}.weight" into [experts, ...].</summary>
    public static Tensor Stack(WeightReader r, string prefix, string name, int experts, long rows, long cols) =>
        stack(Enumerable.Range(0, experts).Select(e => r.Take($"{prefix}{e}.{name}.weight", rows, cols)).ToArray());
}

/// <summary>Mixtral: the Mistral attention with a sparse MoE MLP (top-k of n SwiGLU experts w1/w3/w2, weights renormalised).</summary>
public sealed class MixtralArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "mixtral" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        MoeConventions.RefuseUnsupportedRouting(c);
        var cfg = LlamaLayout.ReadConfig(c, "mixtral", tiedDefault: false, NormKind.RmsNorm);
        int experts = c.PositiveInt("num_local_experts"), k = c.PositiveInt("num_experts_per_tok");
        if (k > experts) throw c.Bad("num_experts_per_tok", $"is {k}, more than the {experts} experts");
        return cfg with { Moe = new MoeConfig(experts, k, NormalizeTopK: true, DExpert: cfg.DMlp) };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg) =>
        LlamaLayout.Load(r, cfg, b =>
        {
            long d = cfg.DModel, m = cfg.Moe!.DExpert; int e = cfg.Moe.Experts;
            string x = b + "block_sparse_moe.experts.";
            return new BlockWeights
            {
                Ln1W = r.Take(b + "input_layernorm.weight", d), Ln2W = r.Take(b + "post_attention_layernorm.weight", d),
                Router = r.Take(b + "block_sparse_moe.gate.weight", e, d),
                ExpertGate = MoeConventions.Stack(r, x, "w1", e, m, d), ExpertUp = MoeConventions.Stack(r, x, "w3", e, m, d),
                ExpertDown = MoeConventions.Stack(r, x, "w2", e, d, m),
            }.WithAttention(r, cfg, b + "self_attn.");
        });
}

/// <summary>Qwen2-MoE: Qwen2 attention (q/k/v biases) with top-k of n SwiGLU experts (weights not renormalised) plus a sigmoid-gated shared expert.</summary>
public sealed class Qwen2MoeArchitecture : IArchitecture
{
    /// <inheritdoc/>
    public IReadOnlyList<string> ModelTypes { get; } = new[] { "qwen2_moe" };

    /// <inheritdoc/>
    public TransformerConfig ReadConfig(ModelConfig c)
    {
        MoeConventions.RefuseUnsupportedRouting(c);
        if (c.Json["mlp_only_layers"] is System.Text.Json.Nodes.JsonArray { Count: > 0 }) throw c.Bad("mlp_only_layers", "lists dense layers; mixing dense and sparse layers is not supported yet");
        if ((c.IntOrNull("decoder_sparse_step") ?? 1) != 1) throw c.Bad("decoder_sparse_step", "is not 1; mixing dense and sparse layers is not supported yet");
        var cfg = LlamaLayout.ReadConfig(c, "qwen2_moe", tiedDefault: false, NormKind.RmsNorm);
        int experts = c.PositiveInt("num_experts"), k = c.PositiveInt("num_experts_per_tok");
        if (k > experts) throw c.Bad("num_experts_per_tok", $"is {k}, more than the {experts} experts");
        int shared = c.IntOrNull("shared_expert_intermediate_size") ?? 0;
        return cfg with
        {
            QkvBias = true, OutBias = false,
            SlidingWindow = c.Bool("use_sliding_window", false) ? cfg.SlidingWindow : null,
            SlidingLayer = l => l >= (c.IntOrNull("max_window_layers") ?? 0),
            DMlp = shared > 0 ? shared : cfg.DMlp,
            Moe = new MoeConfig(experts, k, NormalizeTopK: c.Bool("norm_topk_prob", false), DExpert: c.PositiveInt("moe_intermediate_size"), SharedExpert: shared > 0),
        };
    }

    /// <inheritdoc/>
    public TransformerWeights LoadWeights(WeightReader r, TransformerConfig cfg) =>
        LlamaLayout.Load(r, cfg, b =>
        {
            long d = cfg.DModel, m = cfg.Moe!.DExpert, sm = cfg.DMlp; int e = cfg.Moe.Experts;
            string x = b + "mlp.experts.";
            var block = new BlockWeights
            {
                Ln1W = r.Take(b + "input_layernorm.weight", d), Ln2W = r.Take(b + "post_attention_layernorm.weight", d),
                Router = r.Take(b + "mlp.gate.weight", e, d),
                ExpertGate = MoeConventions.Stack(r, x, "gate_proj", e, m, d), ExpertUp = MoeConventions.Stack(r, x, "up_proj", e, m, d),
                ExpertDown = MoeConventions.Stack(r, x, "down_proj", e, d, m),
            }.WithAttention(r, cfg, b + "self_attn.");
            if (cfg.Moe.SharedExpert)
            {
                block.WIn = r.Take(b + "mlp.shared_expert.gate_proj.weight", sm, d); block.WUp = r.Take(b + "mlp.shared_expert.up_proj.weight", sm, d);
                block.WOut = r.Take(b + "mlp.shared_expert.down_proj.weight", d, sm); block.SharedExpertGate = r.Take(b + "mlp.shared_expert_gate.weight", 1, d);
            }
            return block;
        });
}
