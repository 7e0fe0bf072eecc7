using Mechanist.Tensors;
using System.CommandLine;
using Mechanist.IO;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Cli;

/// <summary>How the run-like commands take an encoder-decoder (T5): detection, loading, and its inputs.</summary>
public static class EncoderDecoderInput
{
    /// <summary>Whether <paramref name="spec"/> names a local encoder-decoder folder (config.json with model_type t5).</summary>
    public static bool Is(string? spec)
    {
        string path = BuiltInModels.Resolve(spec);
        string config = Path.Combine(path, "config.json");
        if (!Directory.Exists(path) || !File.Exists(config)) return false;
        try { return HookedEncoderDecoder.Handles(ModelConfig.Load(config)); }
        catch (MechanistException) { return false; }
    }

    /// <summary>Loads it (fp32 on the CPU; another --dtype or --device is refused rather than ignored).</summary>
    public static HookedEncoderDecoder Load(string? spec, ParseResult parse, bool offline)
    {
        if (parse.GetValue(CommonOptions.DType) is { } dtype && dtype != "float32") throw new MechanistException($"encoder-decoder models run in float32 for now (--dtype {dtype})");
        if (parse.GetValue(CommonOptions.Device) is { } device && device != "cpu") throw new MechanistException($"encoder-decoder models run on the CPU for now (--device {device})");
        return HookedEncoderDecoder.Load(BuiltInModels.Resolve(spec), new ModelOpenOptions
        {
            Offline = offline || new ModelOpenOptions().Offline, TokenizerPath = parse.GetValue(CommonOptions.Tokenizer),
        });
    }

    /// <summary>
    /// Encoder ids, mask and decoder ids: from --tokens-file (input_ids, optional attention_mask and decoder_input_ids), or --prompt / --tokens
    /// for the encoder with the decoder start token alone.
    /// </summary>
    public static (Tensor Input, Tensor? Mask, Tensor Decoder) Read(ModelInput input, ParseResult parse, HookedEncoderDecoder model)
    {
        string? prompt = parse.GetValue(input.Prompt), ids = parse.GetValue(input.Tokens), file = input.HasTokensFile ? parse.GetValue(input.TokensFile) : null;
        int given = new[] { prompt, ids, file }.Count(x => x != null);
        if (given != 1) throw new MechanistException("give exactly one of --prompt, --tokens or --tokens-file");
        Tensor Start(long batch) => SafeOps.FullInt(new long[] { batch, 1 }, model.Config.DecoderStart);
        if (prompt != null) return (model.InputIds(prompt), null, Start(1));
        if (ids != null)
        {
            var parsed = ids.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(s => long.TryParse(s, out long v) ? v : throw new MechanistException($"--tokens: '{s}' is not an integer token id")).ToArray();
            if (parsed.Length == 0) throw new MechanistException("--tokens: no token ids given");
            return (tensor(parsed, new long[] { 1, parsed.Length }), null, Start(1));
        }
        using var st = SafetensorsFile.Open(file!);
        Tensor Ids(string name)
        {
            var info = st.Info(name);
            if (info.DType != TensorDType.I64 || info.Shape.Length != 2) throw new InvalidCheckpointException(file!, $"'{name}' must be int64 [batch, pos], found {info.DType} {info.ShapeText}");
            return st.Read(name);
        }
        if (!st.Contains("input_ids")) throw new InvalidCheckpointException(file!, "no tensor named 'input_ids'");
        var inputIds = Ids("input_ids");
        Tensor? mask = null;
        if (st.Contains("attention_mask"))
        {
            if (!st.Info("attention_mask").Shape.SequenceEqual(inputIds.shape)) throw new InvalidCheckpointException(file!, "'attention_mask' does not match 'input_ids'");
            mask = st.Read("attention_mask").to(ScalarType.Int64);
        }
        var decoder = st.Contains("decoder_input_ids") ? Ids("decoder_input_ids") : Start(inputIds.shape[0]);
        if (decoder.shape[0] != inputIds.shape[0]) throw new InvalidCheckpointException(file!, "'decoder_input_ids' and 'input_ids' need the same batch");
        return (inputIds, mask, decoder);
    }
}
