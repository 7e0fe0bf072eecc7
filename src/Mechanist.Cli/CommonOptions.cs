using System.CommandLine;
using Mechanist.IO;

namespace Mechanist.Cli;

/// <summary>Options shared by many commands.</summary>
public static class CommonOptions
{
    /// <summary>--device cpu|cuda (every command).</summary>
    public static readonly Option<string> Device = new("--device")
    {
        Description = "Where tensors live: cpu, or cuda (needs the TorchSharp-cuda package; see README).",
        DefaultValueFactory = _ => "cpu", Recursive = true,
    };

    /// <summary>--dtype float32|bfloat16|float16 (every command).</summary>
    public static readonly Option<string> DType = new("--dtype")
    {
        Description = "Weight dtype: float32 (default), bfloat16 or float16; activations follow it, except that bfloat16 weights on a CPU without bf16 matrix " +
            "instructions stay bf16 in memory and compute in fp32, a layer at a time (" + Mechanist.Runtime.CpuFeatures.BFloat16Summary + ").",
        DefaultValueFactory = _ => "float32", Recursive = true,
    };

    /// <summary>--tokenizer FILE (every command that loads a model): use this tokenizer instead of the one beside the weights.</summary>
    public static readonly Option<string> Tokenizer = new("--tokenizer")
    {
        Description = "A tokenizer file (tokenizer.json, tokenizer.model, spiece.model, vocab.txt, vocab.json, llama2.c .bin) to use with --model, for checkpoints without one beside them.",
        Recursive = true,
    };

    static CommonOptions()
    {
        Device.AcceptOnlyFromAmong("cpu", "cuda");
        DType.AcceptOnlyFromAmong("float32", "bfloat16", "float16");
    }

    /// <summary>--model: a folder, a llama2.c .bin file or a hub id.</summary>
    public static Option<string> Model(bool required = true) => new("--model", "-m")
    {
        Description = "Model: a built-in toy model (toy-4l, the default, or attn-only-2l), a Hugging Face model folder, a llama2.c .bin checkpoint, or a hub id (org/name).",
        Required = required,
    };

    /// <summary>--offline: never download.</summary>
    public static Option<bool> Offline() => new("--offline") { Description = "Use only local files and the hub cache; never download." };

    /// <summary>--json: machine-readable output.</summary>
    public static Option<bool> Json() => new("--json") { Description = "Print JSON instead of a table." };

    /// <summary>--no-bos: do not prepend the BOS token.</summary>
    public static Option<bool> NoBos() => new("--no-bos") { Description = "Do not prepend the BOS token." };

    /// <summary>Opens the model named by the options, with a progress line for downloads.</summary>
    public static ModelSource OpenModel(string spec, bool offline, CliContext ctx, string? tokenizer = null) =>
        ModelSource.Open(spec, new ModelOpenOptions
        {
            Offline = offline || new ModelOpenOptions().Offline,
            TokenizerPath = tokenizer,
            Progress = new DownloadProgressPrinter(ctx.Err),
        });
}
