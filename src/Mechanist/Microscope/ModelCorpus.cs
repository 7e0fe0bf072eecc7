using Mechanist.Models;

namespace Mechanist.Microscope;

/// <summary>A corpus written by the model itself (sampled from BOS, seeded), for models that come without data.</summary>
public static class ModelCorpus
{
    /// <summary>Generates <paramref name="count"/> texts of up to <paramref name="maxTokens"/> tokens, cut at the last full stop.</summary>
    public static List<string> Generate(HookedTransformer model, int count, int maxTokens = 48, double temperature = 1.0, long seed = 0)
    {
        var tok = model.Tokenizer ?? throw new MechanistException($"{model.Name} has no tokenizer");
        long bos = tok.BosId ?? throw new MechanistException($"{model.Name} has no BOS token to start from");
        var texts = new List<string>();
        for (int i = 0; texts.Count < count && i < count * 3; i++)
        {
            var result = model.Generate(new[] { bos }, new GenerateOptions
            {
                MaxNewTokens = Math.Min(maxTokens, model.Config.NCtx - 1), Temperature = temperature, Seed = seed + i,
                StopTokens = new[] { (int)bos }.Concat(tok.EosId is { } e ? new[] { e } : Array.Empty<int>()).ToArray(),
            });
            string text = tok.DecodeLenient(result.NewIds, skipSpecial: true).Trim();
            int stop = text.LastIndexOf('.');
            if (stop > 10) text = text[..(stop + 1)];
            if (text.Length > 10) texts.Add(text);
        }
        return texts;
    }
}
