using System.CommandLine;
using Mechanist.Dictionaries;
using Mechanist.Toy;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist harvest</c> (one shard of a corpus-scale activation harvest) and <c>mechanist harvest merge DIR</c>.</summary>
public sealed class HarvestCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var model = CommonOptions.Model(required: false);
        var offline = CommonOptions.Offline();
        var hooks = new Option<string>("--hooks") { Description = "Comma-separated hook points, e.g. blocks.1.hook_resid_mid,blocks.1.hook_mlp_out (default: every layer's resid_mid and mlp_out, what transcoders need)." };
        var corpus = new Option<string>("--corpus") { Description = "Text file (one per line), JSONL with \"text\", or a folder of them. Default for built-in models: the toy corpus (--texts lines)." };
        var texts = new Option<int>("--texts") { Description = "Lines of the toy corpus when no --corpus is given.", DefaultValueFactory = _ => 20_000 };
        var tokens = new Option<long>("--tokens") { Description = "Token budget of this shard.", DefaultValueFactory = _ => 1_000_000 };
        var shard = new Option<string>("--shard") { Description = "i/N: harvest the i-th of N disjoint parts of the corpus (texts i, i+N, ...)." };
        var chunk = new Option<long>("--chunk-tokens") { Description = "Tokens per chunk file (the resume and shuffle unit).", DefaultValueFactory = _ => 50_000 };
        var bf16 = new Option<bool>("--bf16") { Description = "Store bfloat16 instead of float32." };
        var seed = new Option<int>("--seed") { Description = "Seed of the in-chunk shuffle and of the toy corpus.", DefaultValueFactory = _ => 0 };
        var output = new Option<string>("--out") { Description = "Harvest folder (shards of one harvest share it)." };
        var sizer = new SizerOptions();
        var cmd = new Command("harvest", "Stream a corpus through the model and write activations at hook points in resumable, sharded chunks.")
        { model, offline, hooks, corpus, texts, tokens, shard, chunk, bf16, seed, output };
        sizer.AddTo(cmd, output);
        cmd.SetAction(parse =>
        {
            var (index, count) = Mechanist.Cluster.ShardPlan.Parse(parse.GetValue(shard));
            using var m = ModelInput.Load(parse.GetValue(model), parse, parse.GetValue(offline), ctx);
            string[] hookList;
            if (parse.GetValue(hooks) is { } h) hookList = h.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            else
            {
                var (ins, outs) = DictionaryJob.Hooks(m, DictionaryKind.Clt, TranscoderInput.Resid, null);
                hookList = ins.Concat(outs).ToArray();
            }
            List<string> list;
            if (parse.GetValue(corpus) is { } c) list = CorpusReader.Read(c).ToList();
            else if (ToyPresets.All.Any(p => p.Name == (parse.GetValue(model) ?? ToyPresets.DefaultName))) list = new ToyCorpus(parse.GetValue(seed) + 1000).Lines(parse.GetValue(texts)).ToList();
            else throw new MechanistException("give --corpus (only built-in models have a default corpus)");
            var harvestOptions = new HarvestOptions(hookList, parse.GetValue(tokens), index, count, parse.GetValue(chunk), parse.GetValue(bf16), parse.GetValue(seed));
            if (sizer.Handle(parse, ctx, f => Mechanist.Runtime.Sizers.Harvest(m, list, harvestOptions, f))) return 0;
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var manifest = HarvestJob.Run(m, list, harvestOptions,
                parse.GetValue(output)!, new Mechanist.Training.SyncProgress<(long Tokens, long Max)>(p =>
                    ctx.Err.Write($"\r  {p.Tokens:N0} / {p.Max:N0} tokens, {p.Tokens / Math.Max(1e-9, clock.Elapsed.TotalSeconds):N0} tokens/s   ")));
            ctx.Err.WriteLine();
            ctx.Out.WriteLine($"shard {index}/{count}: {manifest.Tokens:N0} tokens in {manifest.Chunks.Length} chunk(s), {hookList.Length} hook point(s) -> {parse.GetValue(output)}");
            return 0;
        });

        var dir = new Argument<string>("folder") { Description = "Harvest folder with every shard's manifest." };
        var merge = new Command("merge", "Check that a harvest's shards belong together and are complete, and write manifest.json over all of them.") { dir };
        merge.SetAction(parse =>
        {
            var m = HarvestJob.Merge(parse.GetValue(dir)!);
            ctx.Out.WriteLine($"merged {m.ShardCount} shard(s): {m.Tokens:N0} tokens in {m.Chunks.Length} chunk(s) of {string.Join(", ", m.Hooks)}");
            return 0;
        });
        cmd.Subcommands.Add(merge);
        return cmd;
    }
}
