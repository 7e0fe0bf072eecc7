using Mechanist.Tensors;
using Mechanist.Hooks;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Analysis;

/// <summary>A steered and an unsteered continuation of one prompt.</summary>
/// <param name="Prompt">The prompt.</param>
/// <param name="Unsteered">Continuation without the vector.</param>
/// <param name="Steered">Continuation with the vector added.</param>
public sealed record SteeringSample(string Prompt, string Unsteered, string Steered);

/// <summary>The outcome of a steering experiment.</summary>
/// <param name="Layer">Layer whose input residual was steered.</param>
/// <param name="Coefficient">Multiplier of the vector.</param>
/// <param name="VectorNorm">Norm of the steering vector.</param>
/// <param name="Samples">Per-prompt generations.</param>
public sealed record SteeringResult(int Layer, double Coefficient, double VectorNorm, SteeringSample[] Samples);

/// <summary>
/// Activation addition: the steering vector is the mean residual stream (entering a layer, averaged
/// over positions) of positive prompts minus that of negative prompts; adding it, scaled, during runs
/// and generation pushes the model toward the positive side.
/// </summary>
public static class Steering
{
    /// <summary>The mean-difference vector [d_model] at the input of <paramref name="layer"/>.</summary>
    public static Tensor Vector(HookedTransformer model, IReadOnlyList<string> positive, IReadOnlyList<string> negative, int layer)
    {
        if (positive.Count == 0 || negative.Count == 0) throw new MechanistException("steering needs at least one positive and one negative prompt");
        if (layer < 0 || layer >= model.Config.NLayers) throw new MechanistException($"layer {layer} is outside 0..{model.Config.NLayers - 1}");
        using var scope = NewDisposeScope();
        Tensor Mean(IReadOnlyList<string> prompts)
        {
            string name = model.HookPoints.Name(HookKind.ResidPre, layer);
            var sum = zeros(model.Config.DModel, ScalarType.Float32, model.Device);
            foreach (var p in prompts)
            {
                var (_, cache) = model.RunWithCache(model.ToTokens(p), n => n == name);
                using (cache) sum = sum.Add(cache[name][0].to(ScalarType.Float32).mean(new long[] { 0 }));
            }
            return sum.Div(prompts.Count);
        }
        return (Mean(positive) - Mean(negative)).MoveToOuterDisposeScope();
    }

    /// <summary>A hook adding coefficient × vector to the residual entering <paramref name="layer"/> (at every position, or from <paramref name="fromPosition"/> on).</summary>
    public static ForwardHookSpec Hook(Tensor vector, int layer, double coefficient, int fromPosition = 0) =>
        new(HookRegistry.NameOf(HookKind.ResidPre, layer), (x, _) =>
        {
            var add = vector.Mul(coefficient).to(x.dtype);
            if (fromPosition <= 0) return x.Add(add);
            var result = x.clone();
            if (fromPosition < x.shape[1]) result[.., fromPosition..].AddInPlace(add);
            return result;
        });

    /// <summary>Generates each prompt with and without the vector (greedy unless a temperature is given).</summary>
    public static SteeringResult Compare(HookedTransformer model, Tensor vector, int layer, double coefficient, IEnumerable<string> prompts, GenerateOptions? options = null)
    {
        options ??= new GenerateOptions { MaxNewTokens = 20 };
        var tok = model.Tokenizer ?? throw new MechanistException($"{model.Name} has no tokenizer");
        var samples = new List<SteeringSample>();
        foreach (var prompt in prompts)
        {
            var ids = tok.Encode(prompt).Select(i => (long)i).ToArray();
            string Continue(GenerateOptions o) => tok.DecodeLenient(model.Generate(ids, o).NewIds, skipSpecial: true);
            samples.Add(new SteeringSample(prompt, Continue(options), Continue(options with { Hooks = options.Hooks.Append(Hook(vector, layer, coefficient)).ToList() })));
        }
        using var norm = vector.norm();
        return new SteeringResult(layer, coefficient, norm.item<float>(), samples.ToArray());
    }
}
