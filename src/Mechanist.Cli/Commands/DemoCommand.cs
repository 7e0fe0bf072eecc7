using System.CommandLine;
using System.Diagnostics;
using Mechanist.Analysis;
using Mechanist.Models;
using Mechanist.Toy;
using Spectre.Console;

namespace Mechanist.Cli.Commands;

/// <summary>
/// <c>mechanist demo</c>: a tour of the built-in model, offline, in well under two minutes: tokens,
/// predictions, induction heads, the logit lens on a two-hop question, the indirect-object patching
/// grid and where the name-moving happens.
/// </summary>
public sealed class DemoCommand : ICliCommand
{
    const string Ioi = "When Mary and John went to the store, John gave a drink to";
    const string IoiCorrupt = "When Mary and John went to the store, Mary gave a drink to";
    const string TwoHop = "The capital of the state containing Dallas is";

    /// <inheritdoc/>
    public Command Build(CliContext ctx)
    {
        var model = CommonOptions.Model(required: false);
        var cmd = new Command("demo", "A guided tour of Mechanist on the built-in toy model.") { model };
        cmd.SetAction(parse =>
        {
            var sw = Stopwatch.StartNew();
            var console = Render.Console(ctx);
            using var m = HookedTransformer.Load(BuiltInModels.Resolve(parse.GetValue(model)));
            var c = m.Config;
            console.Write(new Rule($"[bold]Mechanist demo[/] on {Markup.Escape(Path.GetFileName(m.Name.TrimEnd('/')))}"));
            console.MarkupLine($"{c.Architecture}, {c.NLayers} layers, d_model {c.DModel}, {c.NHeads} heads, d_mlp {c.DMlp}, vocabulary {c.VocabSize}, {m.Weights.ParameterCount:N0} parameters, {m.HookPoints.Firing(false).Count()} hook points");

            Section(console, "1. Tokens");
            var ids = m.Tokenizer!.Encode(Ioi);
            console.MarkupLine(string.Join(" ", m.Tokenizer.ToStrTokens(ids).Select((t, i) => $"[grey]{ids[i]}[/]{Markup.Escape(t)}")));

            Section(console, "2. Next-token predictions");
            var test = PromptChecks.Check(m, Ioi, " Mary", topK: 5);
            console.MarkupLine($"{Markup.Escape(Ioi)} → " + string.Join(", ", test.Top.Select(t => $"{Render.Token(t.Token)} {t.Prob:P1}")));

            Section(console, "3. Induction heads (repeated random tokens)");
            var heads = HeadDetector.Run(m);
            var bestInduction = heads.Heads.OrderByDescending(h => h.InductionStripe).Take(3);
            var bestPrev = heads.Heads.OrderByDescending(h => h.PreviousToken).First();
            console.MarkupLine("induction score: " + string.Join(", ", bestInduction.Select(h => $"L{h.Layer}H{h.Head} [bold]{h.InductionStripe:F2}[/]")) +
                $"; previous-token: L{bestPrev.Layer}H{bestPrev.Head} {bestPrev.PreviousToken:F2}");
            console.MarkupLine($"loss on the random half {heads.FirstHalfLoss:F2} → on the repeated half {heads.SecondHalfLoss:F2} nats/token: the model copies what it has seen");
            if (BuiltInModels.Find("attn-only-2l") is { } attnOnlyDir && !m.Name.Contains("attn-only"))
            {
                using var attnOnly = HookedTransformer.Load(attnOnlyDir);
                var h2 = HeadDetector.Run(attnOnly).Heads.OrderByDescending(h => h.InductionStripe).First();
                console.MarkupLine($"attn-only-2l: strongest induction head L{h2.Layer}H{h2.Head} [bold]{h2.InductionStripe:F2}[/]");
            }

            Section(console, "4. Logit lens on a two-hop question");
            long austin = TokenText.AnswerId(m, " Austin");
            var lens = LogitLens.Run(m, m.ToTokens(TwoHop), austin, topK: 1);
            foreach (var layer in lens.Layers)
            {
                var cell = layer.Positions[^1];
                console.MarkupLine($"  {layer.Label,-10} top {Render.Token(cell.Top[0].Token),-16} {cell.Top[0].Prob,6:P1}   \" Austin\" rank {cell.TargetRank,3}, p {cell.TargetProb,6:P1}");
            }

            Section(console, "5. Indirect object: activation patching");
            console.MarkupLine($"clean:     {Markup.Escape(Ioi)}\ncorrupted: {Markup.Escape(IoiCorrupt)}\nmetric: logit(\" Mary\") − logit(\" John\")");
            var metric = new PatchMetric.LogitDiff(TokenText.AnswerId(m, " Mary"), TokenText.AnswerId(m, " John"));
            using var clean = m.ToTokens(Ioi); using var corrupt = m.ToTokens(IoiCorrupt);
            var resid = ActivationPatching.Run(m, clean, corrupt, metric, PatchTarget.Resid);
            console.MarkupLine($"clean {resid.CleanMetric:F2}, corrupted {resid.CorruptedMetric:F2}");
            var table = new Table().AddColumn("");
            foreach (var col in resid.ColumnLabels) table.AddColumn(Markup.Escape(col.Split(':', 2)[1]));
            for (int r = 0; r < resid.RowLabels.Length; r++) table.AddRow(new[] { resid.RowLabels[r] }.Concat(resid.Scores[r].Select(Render.Score)).ToArray());
            console.Write(table);
            var headGrid = ActivationPatching.Run(m, clean, corrupt, metric, PatchTarget.Heads);
            var ranked = headGrid.RowLabels.SelectMany((row, r) => headGrid.ColumnLabels.Select((col, h) => (Name: $"{row}{col}", Score: headGrid.Scores[r][h])))
                .OrderByDescending(x => Math.Abs(x.Score)).Take(4).ToList();
            var dla = DirectLogitAttribution.Compute(m, clean, metric.Answer, metric.Wrong);
            var writers = dla.Heads.Where(h => h.Label.Contains('H')).OrderByDescending(h => h.Value).Take(3).ToList();
            int lastRow = Enumerable.Range(0, resid.RowLabels.Length).First(r => resid.Scores[r][^1] > 0.5 || r == resid.RowLabels.Length - 1);
            console.MarkupLine($"The name information reaches the final position by layer {resid.RowLabels[lastRow]} (patching the residual there restores {resid.Scores[lastRow][^1]:P0}).");
            console.MarkupLine("Heads whose output matters most (patching): " + string.Join(", ", ranked.Select(x => $"{x.Name} {x.Score:F2}")));
            console.MarkupLine("Heads writing \" Mary\" over \" John\" directly (DLA): " + string.Join(", ", writers.Select(w => $"{w.Label} {w.Value:F2}")) + " — the name movers.");

            Section(console, "6. Where next");
            console.MarkupLine("  mechanist lens --prompt \"The capital of Texas is\" --target \" Austin\"");
            console.MarkupLine("  mechanist patch --clean \"...\" --corrupt \"...\" --answer \" Mary\" --wrong \" John\" --what heads --method both");
            console.MarkupLine("  mechanist heads --model attn-only-2l      mechanist hooks      mechanist toy eval");
            console.MarkupLine($"[grey]demo finished in {sw.Elapsed.TotalSeconds:F1} s[/]");
            return 0;
        });
        return cmd;
    }

    static void Section(IAnsiConsole console, string title) { console.WriteLine(); console.MarkupLine($"[bold underline]{title}[/]"); }
}
