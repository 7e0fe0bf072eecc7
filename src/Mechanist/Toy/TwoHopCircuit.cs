using Mechanist.Analysis;
using Mechanist.Attribution;
using Mechanist.Dictionaries;
using Mechanist.Dictionaries.Training;
using Mechanist.Models;
using static TorchSharp.torch;

namespace Mechanist.Toy;

/// <summary>A feature on the circuit, with the corpus tokens it fires on most.</summary>
/// <param name="Layer">Layer.</param>
/// <param name="Position">Position in the prompt.</param>
/// <param name="Token">The prompt token at that position.</param>
/// <param name="Feature">Feature index.</param>
/// <param name="Activation">Its activation on the prompt.</param>
/// <param name="CumulativeInfluence">circuit-tracer's cumulative influence rank share (smaller = more important).</param>
/// <param name="TopTokens">Toy-corpus contexts where it fires most, "…three tokens before and the token (max activation)".</param>
public sealed record CircuitFeature(int Layer, int Position, string Token, long Feature, double Activation, double CumulativeInfluence, string[] TopTokens);

/// <summary>Where a swap puts the donor's features: at the city's position or the last one, in some layers.</summary>
/// <param name="Name">Label.</param>
/// <param name="AtLastPosition">Swap at the prompt's last position ("is", donor: its last position) rather than at the city (donor: the state's name).</param>
/// <param name="Layers">Layers whose features are swapped.</param>
public sealed record SwapSite(string Name, bool AtLastPosition, int[] Layers);

/// <summary>A swap site's outcomes.</summary>
/// <param name="Site">Where.</param>
/// <param name="Swaps">Every (city, other state) swap.</param>
public sealed record SwapExperiment(SwapSite Site, SwapOutcome[] Swaps)
{
    /// <summary>Share of swaps whose answer became the donor state's capital.</summary>
    public double Rate => Swaps.Length == 0 ? 0 : (double)Swaps.Count(s => s.Swapped) / Swaps.Length;
}

/// <summary>One swap: the two-hop prompt of <paramref name="City"/> with its state's features replaced by <paramref name="Donor"/>'s.</summary>
/// <param name="City">City of the two-hop prompt.</param>
/// <param name="State">Its state.</param>
/// <param name="Donor">The state whose one-hop features are put in.</param>
/// <param name="Before">Top token before.</param>
/// <param name="After">Top token after.</param>
/// <param name="Target">The donor state's capital (first token).</param>
public sealed record SwapOutcome(string City, string State, string Donor, string Before, string After, string Target)
{
    /// <summary>Whether the answer became the donor's capital.</summary>
    public bool Swapped => After == Target;
}

/// <summary>The showcase's findings: the Dallas graph, its strongest path, the path statistics over every two-hop prompt, and the swap table.</summary>
/// <param name="Prompt">The traced prompt.</param>
/// <param name="Nodes">Nodes of the unpruned graph.</param>
/// <param name="KeptNodes">Nodes kept by pruning.</param>
/// <param name="KeptEdges">Edges kept by pruning.</param>
/// <param name="Scores">Replacement and completeness.</param>
/// <param name="Path">The strongest path from a prompt token to the top logit (features only), token first.</param>
/// <param name="PathSource">The prompt token the strongest path starts from.</param>
/// <param name="TopFeatures">The most influential features of the pruned graph.</param>
/// <param name="PromptsTraced">Two-hop prompts traced.</param>
/// <param name="PathsFromCity">Of those, how many have their strongest token-to-answer path start at the city token.</param>
/// <param name="PathsThroughCityFeature">… and whose first feature is a layer-0 feature at the last position (the city read there through attention).</param>
/// <param name="Swaps">Per swap site, every (city, other state) swap.</param>
/// <param name="Mode">Intervention mode of the swaps.</param>
/// <param name="CleanCorrect">Two-hop prompts the model answers with the right capital.</param>
/// <param name="PromptsAvailable">The toy world's two-hop prompts (single-token cities of single-token states): more than were traced where limited.</param>
public sealed record TwoHopReport(string Prompt, int Nodes, int KeptNodes, long KeptEdges, GraphScores Scores, CircuitFeature[] Path, string PathSource,
    CircuitFeature[] TopFeatures, int PromptsTraced, int PathsFromCity, int PathsThroughCityFeature, SwapExperiment[] Swaps, InterventionMode Mode, int CleanCorrect,
    int PromptsAvailable);

/// <summary>
/// The toy world's two-hop facts traced through a CLT: "The capital of the state containing Dallas is" → Austin. Finds the
/// strongest path from the city token to the answer, the corpus tokens its features fire on, and swaps states: the features at the
/// city's position are zeroed and replaced by those of another state's name (from "The capital of {state} is").
/// </summary>
public static class TwoHopCircuit
{
    /// <summary>The two-hop prompt of a city.</summary>
    public static string Prompt(string city) => $"The capital of the state containing {city} is";

    /// <summary>
    /// Runs the showcase; <paramref name="onGraph"/> gets the city prompt's graph, its pruning and the strongest path's nodes while they
    /// are alive (to write them out); <paramref name="maxCities"/> limits the traced and swapped two-hop prompts to the first ones.
    /// </summary>
    public static TwoHopReport Run(HookedTransformer model, ICrossLayerDictionary clt, TranscoderInput input, string city = "Dallas",
        InterventionMode mode = InterventionMode.Free, int corpusLines = 3000, Action<string>? progress = null, Action<AttributionGraph, PrunedGraph, IReadOnlyList<int>>? onGraph = null,
        int? maxCities = null)
    {
        if (maxCities is < 1) throw new MechanistException($"the showcase needs at least one city to trace and swap, not {maxCities}");
        var tok = model.Tokenizer ?? throw new MechanistException("the showcase needs the model's tokenizer");
        int Single(string word) => tok.Encode(word, false) is { Length: 1 } ids ? ids[0] : -1;
        var states = ToyWorld.States.Where(s => Single(s.Name.Split(' ')[^1]) >= 0).ToArray();

        // The Dallas graph.
        using var tokens = model.ToTokens(Prompt(city));
        using var rm = ReplacementModel.Build(model, clt, input, tokens);
        var graph = Attributor.Attribute(rm);
        using var pruned = Pruning.Prune(graph);
        var scores = Pruning.Scores(graph, pruned);
        var labels = TokenText.Of(model, graph.TokenIds);
        var (pathNodes, source) = StrongestPath(graph, pruned);
        onGraph?.Invoke(graph, pruned, pathNodes);
        var topNodes = Enumerable.Range(0, graph.Nodes.Length).Where(i => graph.Nodes[i].Kind == NodeKind.Feature && pruned.NodeMask[i])
            .OrderBy(i => pruned.CumulativeInfluence[i]).Take(8).ToList();
        var wanted = pathNodes.Concat(topNodes).Distinct().ToList();
        progress?.Invoke($"graph of '{Prompt(city)}': {graph.Nodes.Length} nodes, replacement {scores.Replacement:F3}; reading top tokens of {wanted.Count} features");
        var topTokens = TopTokens(model, clt, input, wanted.Select(i => (graph.Nodes[i].Layer, graph.Nodes[i].Index)).Distinct().ToList(), corpusLines);
        CircuitFeature Describe(int i)
        {
            var n = graph.Nodes[i];
            return new CircuitFeature(n.Layer, n.Position, labels[n.Position], n.Index, n.Activation ?? 0, pruned.CumulativeInfluence[i], topTokens[(n.Layer, n.Index)]);
        }

        // Every two-hop prompt, traced once: where its strongest token-to-answer path starts, and the swaps (features at the
        // city's position ← the state name's, or at the last position ← the one-hop prompt's last position).
        int traced = 0, fromCity = 0, throughCity = 0, cleanCorrect = 0;
        var allCities = states.SelectMany(s => s.Cities.Select(c => (City: c, State: s))).Where(x => Single(x.City) >= 0).ToList();
        var cities = allCities.Take(maxCities ?? int.MaxValue).ToList();
        int L = model.Config.NLayers;
        var sites = new[]
        {
            new SwapSite($"city position, layers 0-{L - 1}", false, Enumerable.Range(0, L).ToArray()),
            new SwapSite("last position, layer 0", true, new[] { 0 }),
            new SwapSite("last position, layers 0-1", true, new[] { 0, 1 }),
            new SwapSite($"last position, layers 0-{L - 2}", true, Enumerable.Range(0, L - 1).ToArray()),
            new SwapSite($"last position, layers 0-{L - 1} (every feature: the answer itself)", true, Enumerable.Range(0, L).ToArray()),
        };
        progress?.Invoke($"tracing {cities.Count} two-hop prompts and swapping states over {cities.Count} x {states.Length - 1} pairs");
        var donors = new Dictionary<string, (ReplacementModel Rm, int Position)>();
        var swaps = sites.Select(_ => new List<SwapOutcome>()).ToArray();
        try
        {
            foreach (var s in states)
            {
                using var t = model.ToTokens($"The capital of {s.Name} is");
                donors[s.Name] = (ReplacementModel.Build(model, clt, input, t), (int)t.shape[1] - 2);
            }
            foreach (var (c, s) in cities)
            {
                // Each city's temporaries (views, indices, the swaps' tensors) stay reachable until it is done: a collection during a
                // native call on an unreachable temporary would free it mid-call.
                using var cityScope = NewDisposeScope();
                if (traced % 20 == 19) progress?.Invoke($"  {traced + 1}/{cities.Count} cities");
                using var t = model.ToTokens(Prompt(c));
                using var r = ReplacementModel.Build(model, clt, input, t);
                int cityPos = (int)t.shape[1] - 2, last = (int)t.shape[1] - 1;
                var g = Attributor.Attribute(r);
                using (var p = Pruning.Prune(g))
                {
                    var (path, src) = StrongestPath(g, p);
                    traced++;
                    if (src == cityPos)
                    {
                        fromCity++;
                        if (path.Count > 0 && g.Nodes[path[0]].Position == last && g.Nodes[path[0]].Layer == 0) throughCity++;
                    }
                }
                string before = TopToken(model, r.Logits);
                if (before == TokenText.Of(model, tok.Encode(s.Capital, false)[0])) cleanCorrect++;
                foreach (var other in states.Where(o => o.Name != s.Name))
                {
                    var (donor, pos) = donors[other.Name];
                    string target = TokenText.Of(model, tok.Encode(other.Capital, false)[0]);
                    for (int k = 0; k < sites.Length; k++)
                    {
                        var site = sites[k];
                        var list = site.AtLastPosition ? Interventions.Swap(r, last, donor, (int)donor.Tokens.shape[1] - 1, site.Layers) : Interventions.Swap(r, cityPos, donor, pos, site.Layers);
                        using var result = Interventions.Run(r, list, mode);
                        swaps[k].Add(new SwapOutcome(c, s.Name, other.Name, before, TopToken(model, result.Logits), target));
                    }
                }
            }
        }
        finally { foreach (var (d, _) in donors.Values) d.Dispose(); }

        return new TwoHopReport(Prompt(city), graph.Nodes.Length, pruned.NodeMask.Count(k => k), pruned.KeptEdges, scores,
            pathNodes.Select(Describe).ToArray(), labels[source], topNodes.Select(Describe).ToArray(), traced, fromCity, throughCity,
            sites.Select((site, k) => new SwapExperiment(site, swaps[k].ToArray())).ToArray(), mode, cleanCorrect, allCities.Count);
    }

    static string TopToken(HookedTransformer model, Tensor logits)
    {
        using var row = logits[-1];
        using var last = row.argmax();
        return TokenText.Of(model, last.item<long>());
    }

    /// <summary>
    /// The path from a prompt token to the top logit whose product of normalised |edge| weights is largest, over the pruned
    /// graph (a DAG: every edge goes up a layer). Returns its feature and error nodes in order, and the source token's position.
    /// </summary>
    public static (List<int> Nodes, int SourcePosition) StrongestPath(AttributionGraph graph, PrunedGraph pruned)
    {
        var a = graph.Edges;
        var normalized = Pruning.Normalize(a);
        int n = graph.Nodes.Length;
        var best = new double[n]; var from = new int[n];
        Array.Fill(from, -1);
        for (int i = 0; i < n; i++) if (graph.Nodes[i].Kind == NodeKind.Token) best[i] = 1;
        // Targets in order of layer: a node's best score is final once every lower layer is done.
        foreach (int r in Enumerable.Range(0, n).Where(i => pruned.NodeMask[i] && graph.Nodes[i].Kind != NodeKind.Token).OrderBy(i => graph.Nodes[i].Layer))
            for (long e = a.RowStart[r]; e < a.RowStart[r + 1]; e++)
            {
                if (!pruned.EdgeKept[e]) continue;
                double score = best[a.Column[e]] * normalized[e];
                if (score > best[r]) { best[r] = score; from[r] = a.Column[e]; }
            }
        int logit = Enumerable.Range(0, n).First(i => graph.Nodes[i].Kind == NodeKind.Logit);
        var path = new List<int>();
        int at = from[logit];
        while (at >= 0 && graph.Nodes[at].Kind != NodeKind.Token) { path.Add(at); at = from[at]; }
        path.Reverse();
        return (path.Where(i => graph.Nodes[i].Kind == NodeKind.Feature).ToList(), at >= 0 ? graph.Nodes[at].Position : -1);
    }

    /// <summary>For each (layer, feature): the toy-corpus contexts (the token and up to three before it) where it fires most, top 4.</summary>
    public static Dictionary<(int Layer, long Feature), string[]> TopTokens(HookedTransformer model, ICrossLayerDictionary clt, TranscoderInput input,
        IReadOnlyList<(int Layer, long Feature)> features, int lines)
    {
        var best = features.ToDictionary(f => f, _ => new Dictionary<string, double>());
        var (inputs, _) = DictionaryJob.Hooks(model, DictionaryKind.Clt, input, null);
        var wantedNames = new HashSet<string>(features.Select(f => inputs[f.Layer]));
        foreach (var text in new ToyCorpus(4242).Lines(lines))
        {
            using var scope = NewDisposeScope();
            var t = model.ToTokens(text);
            var ids = t[0].data<long>().ToArray();
            var (logits, cache) = model.RunWithCache(t, wantedNames.Contains);
            using var _c = cache;
            var contexts = new string?[ids.Length];
            string Context(int p) => contexts[p] ??= string.Join(" ", TokenText.Of(model, ids[Math.Max(1, p - 3)..(p + 1)]));
            foreach (var group in features.GroupBy(f => f.Layer))
            {
                var acts = clt.Encode(group.Key, cache[inputs[group.Key]])[0];             // [T, F]
                var cols = acts.index_select(1, tensor(group.Select(f => f.Feature).ToArray())).cpu().data<float>().ToArray();
                int k = group.Count();
                var members = group.ToList();
                for (int p = 1; p < ids.Length; p++)
                    for (int j = 0; j < k; j++)
                    {
                        float v = cols[p * k + j];
                        if (v <= 0) continue;
                        var map = best[members[j]];
                        string context = Context(p);
                        if (!map.TryGetValue(context, out var old) || v > old) map[context] = v;
                    }
            }
        }
        return best.ToDictionary(kv => kv.Key, kv => kv.Value.OrderByDescending(x => x.Value).Take(4).Select(x => $"…{x.Key} ({x.Value:F1})").ToArray());
    }
}
