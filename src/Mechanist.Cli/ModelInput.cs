using System.CommandLine;
using Mechanist.IO;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Cli;

/// <summary>The model and input options shared by run-like commands, and their parsing.</summary>
public sealed class ModelInput
{
    /// <summary>--model.</summary>
    public Option<string> Model { get; } = CommonOptions.Model(required: false);
    /// <summary>--prompt.</summary>
    public Option<string> Prompt { get; } = new("--prompt", "-p") { Description = "Prompt text." };
    /// <summary>--tokens.</summary>
    public Option<string> Tokens { get; } = new("--tokens") { Description = "Comma-separated token ids, e.g. 1,403,407." };
    /// <summary>--tokens-file.</summary>
    public Option<string> TokensFile { get; } = new("--tokens-file") { Description = "safetensors file with int64 input_ids [batch,pos] and optional attention_mask." };
    /// <summary>--no-bos.</summary>
    public Option<bool> NoBos { get; } = CommonOptions.NoBos();
    /// <summary>--offline.</summary>
    public Option<bool> Offline { get; } = CommonOptions.Offline();

    /// <summary>Adds the options to a command.</summary>
    public void AddTo(Command cmd, bool tokensFile = true)
    {
        HasTokensFile = tokensFile;
        cmd.Options.Add(Model); cmd.Options.Add(Prompt); cmd.Options.Add(Tokens);
        if (tokensFile) cmd.Options.Add(TokensFile);
        cmd.Options.Add(NoBos); cmd.Options.Add(Offline);
    }

    /// <summary>Whether --tokens-file was added.</summary>
    public bool HasTokensFile { get; private set; }

    /// <summary>Loads the model with the global --device/--dtype.</summary>
    public HookedTransformer LoadModel(ParseResult parse, CliContext ctx) => Load(parse.GetValue(Model), parse, parse.GetValue(Offline), ctx);

    /// <summary>Loads a model (a built-in name, folder, file or hub id) with the global --device/--dtype.</summary>
    public static HookedTransformer Load(string? spec, ParseResult parse, bool offline, CliContext ctx)
    {
        string resolved = BuiltInModels.Resolve(spec);
        try { return LoadResolved(resolved, parse, offline, ctx); }
        catch (MechanistException e) when (spec is not null && BuiltInModels.Unknown(spec) is { } hint)
        {
            throw new MechanistException($"{hint} ({e.Message})", e);
        }
    }

    static HookedTransformer LoadResolved(string resolved, ParseResult parse, bool offline, CliContext ctx) =>
        HookedTransformer.Load(resolved, new LoadOptions
        {
            DType = HookedTransformer.DTypeFor(parse.GetValue(CommonOptions.DType)!),
            Device = parse.GetValue(CommonOptions.Device)!,
            Open = new ModelOpenOptions
            {
                Offline = offline || new ModelOpenOptions().Offline,
                TokenizerPath = parse.GetValue(CommonOptions.Tokenizer),
                Progress = new DownloadProgressPrinter(ctx.Err),
            },
        });

    /// <summary>The input ids [batch, pos] and optional attention mask from exactly one of the input options.</summary>
    public (Tensor Tokens, Tensor? Mask) ReadInput(ParseResult parse, HookedTransformer model)
    {
        string? prompt = parse.GetValue(Prompt), ids = parse.GetValue(Tokens), file = parse.GetValue(TokensFile);
        int given = new[] { prompt, ids, file }.Count(x => x != null);
        if (given != 1) throw new MechanistException("give exactly one of --prompt, --tokens or --tokens-file");
        if (prompt != null) return (model.ToTokens(prompt, parse.GetValue(NoBos) ? false : null), null);
        if (ids != null)
        {
            var parsed = ids.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(s => long.TryParse(s, out long v) ? v : throw new MechanistException($"--tokens: '{s}' is not an integer token id")).ToArray();
            if (parsed.Length == 0) throw new MechanistException("--tokens: no token ids given");
            return (tensor(parsed, new long[] { 1, parsed.Length }, ScalarType.Int64), null);
        }
        using var st = SafetensorsFile.Open(file!);
        if (!st.Contains("input_ids")) throw new InvalidCheckpointException(file!, "no tensor named 'input_ids'");
        var info = st.Info("input_ids");
        if (info.DType != TensorDType.I64 || info.Shape.Length != 2)
            throw new InvalidCheckpointException(file!, $"'input_ids' must be int64 [batch, pos], found {info.DType} {info.ShapeText}");
        var tokens = st.Read("input_ids");
        Tensor? mask = null;
        if (st.Contains("attention_mask"))
        {
            var m = st.Info("attention_mask");
            if (!m.Shape.SequenceEqual(info.Shape))
                throw new InvalidCheckpointException(file!, $"'attention_mask' {m.ShapeText} does not match 'input_ids' {info.ShapeText}");
            mask = st.Read("attention_mask").to(ScalarType.Int64);
        }
        return (tokens, mask);
    }
}
