using System.CommandLine;
using System.Text.Json;
using Mechanist.Attribution;
using Mechanist.Dictionaries.Formats;
using Mechanist.Reporting;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary><c>mechanist qk</c>: one head's attention score between a query and a key position as a sum of component pairs.</summary>
public sealed class QkCommand : ICliCommand
{
    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var input = new ModelInput();
        var transcoders = new Option<string>("--transcoders") { Description = "Transcoder or CLT folder, or a hub repository org/name[@revision], whose features (with S terms and errors) split the MLP outputs (default: the built-in model's CLT; none: MLP outputs stay whole, M_{layer}_{pos})." };
        var noTranscoders = new Option<bool>("--no-transcoders") { Description = "Keep MLP outputs whole even where transcoders are shipped." };
        var layer = new Option<int>("--layer") { Description = "Layer of the head.", Required = true };
        var head = new Option<int>("--head") { Description = "Query head.", Required = true };
        var query = new Option<int>("--query") { Description = "Query position (negative: from the end).", DefaultValueFactory = _ => -1 };
        var key = new Option<int>("--key") { Description = "Key position (negative: from the end).", Required = true };
        var top = new Option<int>("--top") { Description = "Terms shown, largest |value| first (0: every term); the rest is summed.", DefaultValueFactory = _ => 20 };
        var json = CommonOptions.Json();
        var cmd = new Command("qk", "QK attribution: a head's pre-softmax score between a query and a key position, split exactly into pairs of query-side and key-side components (features, errors, embeddings, head outputs, biases).");
        input.AddTo(cmd, tokensFile: false);
        foreach (var o in new Option[] { transcoders, noTranscoders, layer, head, query, key, top, json }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            if (parse.GetValue(top) < 0) throw new MechanistException("--top must be 0 (every term) or more");
            using var model = input.LoadModel(parse, ctx);
            var (tokens, _) = input.ReadInput(parse, model);
            using var _t = tokens;
            string? dir = parse.GetValue(noTranscoders) ? null
                : parse.GetValue(transcoders) is { } spec ? DictionaryInput.Resolve(spec, parse.GetValue(input.Offline), ctx)
                : BuiltInModels.Transcoders(parse.GetValue(input.Model));
            using var bundle = dir is null ? null : CircuitTracerFormat.Load(dir, model.Device);
            using var rm = bundle is null ? null : ReplacementModel.Build(model, bundle.Dictionary, bundle.Input, tokens);
            using var qk = rm is null ? QkAttribution.For(model, tokens) : QkAttribution.For(rm);
            int Position(int p, string name) => p < 0 ? p + qk.Positions is var q && q >= 0 ? q : throw new MechanistException($"{name} {p} is before the prompt's start ({qk.Positions} positions)") : p;
            var r = qk.Compute(parse.GetValue(layer), parse.GetValue(head), Position(parse.GetValue(query), "--query"), Position(parse.GetValue(key), "--key"), parse.GetValue(top));
            if (parse.GetValue(json)) { ctx.Out.WriteLine(JsonSerializer.Serialize(r, JsonFormat.Options)); return 0; }
            var ids = tokens[0].data<long>().ToArray();
            string Tok(int p) => model.Tokenizer is { } t ? Render.Token(t.Decode(new[] { (int)ids[p] })) : ids[p].ToString();
            var console = Render.Console(ctx);
            console.MarkupLine(Markup.Escape($"L{r.Layer}H{r.Head}, query {r.Query} ({Tok(r.Query)}) → key {r.Key} ({Tok(r.Key)}): score {r.Score:G6}"
                + (Math.Abs(r.Softcapped - r.Score) > 0 ? $" (soft-capped {r.Softcapped:G6})" : "") + $" = sum of {r.TermCount:N0} terms {r.Sum:G6}"));
            var table = new Table().AddColumns("query side", "key side", "value", "share of score");
            foreach (var t in r.Terms) table.AddRow(Markup.Escape(t.Query), Markup.Escape(t.Key), t.Value.ToString("+0.00000;-0.00000"), r.Score == 0 ? "" : (t.Value / r.Score).ToString("P1"));
            if (r.Terms.Length < r.TermCount) table.AddRow($"[grey]{r.TermCount - r.Terms.Length:N0} more[/]", "", r.Rest.ToString("+0.00000;-0.00000"), r.Score == 0 ? "" : (r.Rest / r.Score).ToString("P1"));
            console.Write(table);
            ctx.Out.WriteLine("ids: {l}_{f}_{p} feature, {l}_-1_{p} error, S_{l}_{p} b_dec+skip, E_{token}_{p} embedding, P_{p} position, A_{l}_{h}_{p} head output, B_{l} attention bias, M_{l}_{p} MLP output, bias: the other side's constant");
            return 0;
        });
        return cmd;
    }
}
