using System.Text.RegularExpressions;
using Mechanist.Toy;

namespace Mechanist.Dictionaries.Evaluation;

/// <summary>
/// One labelled reading of a model: the activation at the last token of <c>Context[..End]</c> (the model is causal, so the rest of
/// the context does not change it; one run of the context serves all its readings).
/// </summary>
/// <param name="Context">The text the model reads.</param>
/// <param name="End">Characters of the context up to and including the read token.</param>
/// <param name="Word">The word read (for reports), or the prompt.</param>
public sealed record ProbeItem(string Context, int End, string Word);

/// <summary>A binary probing task: readings where a property holds and readings where it does not.</summary>
/// <param name="Name">Short name (e.g. <c>name-vs-place</c>).</param>
/// <param name="Description">What is labelled, and where it is read.</param>
/// <param name="Positives">Readings where the property holds.</param>
/// <param name="Negatives">Readings where it does not (as many as the positives).</param>
public sealed record BinaryProbeTask(string Name, string Description, ProbeItem[] Positives, ProbeItem[] Negatives);

/// <summary>A word of a category read in context (absorption's analogue of a word and its first letter).</summary>
/// <param name="Item">Where it is read.</param>
/// <param name="Category">Its category.</param>
public sealed record CategorisedWord(ProbeItem Item, string Category);

/// <summary>
/// Labels the built-in toy world already knows, as probing tasks: texts written from <see cref="ToyWorld"/> and
/// <see cref="ToyCorpus"/> (any model can read them; the toy models were trained on them).
/// </summary>
public static class ToyProbeTasks
{
    /// <summary>States with a one-vs-rest "which state is this prompt about" task.</summary>
    public static readonly string[] ProbedStates = { "Texas", "California", "Ohio", "Florida", "Illinois" };

    /// <summary>
    /// Word categories of the toy world, each with its one-word members: the "letters" of the absorption suite (a person's name,
    /// a place people go, an object, a city, a state, a common word).
    /// </summary>
    public static readonly IReadOnlyList<(string Category, string[] Words)> Categories = new (string, string[])[]
    {
        ("person name", ToyWorld.Names),
        ("place", ToyWorld.Places),
        ("object", ToyWorld.Objects),
        ("city", ToyWorld.States.SelectMany(s => s.Cities.Append(s.Capital)).Where(OneWord).ToArray()),
        ("state", ToyWorld.States.Select(s => s.Name).Where(OneWord).ToArray()),
        ("common word", ToyWorld.RandomWords),
    };

    static bool OneWord(string w) => !w.Contains(' ');

    static readonly Regex WordPattern = new(@"[A-Za-z]+", RegexOptions.Compiled);

    /// <summary>Context lines: <paramref name="count"/> toy-corpus lines of at most 24 words (no long induction lines), seeded.</summary>
    public static string[] ContextLines(int count, int seed)
    {
        var corpus = new ToyCorpus(seed);
        var lines = new List<string>();
        while (lines.Count < count)
            foreach (var line in corpus.Lines(count))
                if (lines.Count < count && WordPattern.Matches(line).Count <= 24) lines.Add(line);
        return lines.ToArray();
    }

    /// <summary>Every occurrence of a categorised word in <paramref name="lines"/>, read at the word.</summary>
    public static CategorisedWord[] WordsInContext(IEnumerable<string> lines)
    {
        var category = new Dictionary<string, string>();
        foreach (var (name, words) in Categories) foreach (var w in words) category.TryAdd(w, name);
        var found = new List<CategorisedWord>();
        foreach (var line in lines)
            foreach (Match m in WordPattern.Matches(line))
                if (category.TryGetValue(m.Value, out var c)) found.Add(new CategorisedWord(new ProbeItem(line, m.Index + m.Length, m.Value), c));
        return found.ToArray();
    }

    /// <summary>One-hop and two-hop prompts about a state, read at their last token (where the model must name the answer).</summary>
    static IEnumerable<(string Prompt, bool TwoHop)> PromptsAbout(State s) =>
        s.Cities.Append(s.Capital).Select(c => ($"{c} is in", false))
            .Append(($"The capital of {s.Name} is", false))
            .Concat(s.Cities.Select(c => ($"The capital of the state containing {c} is", true)));

    static ProbeItem InContext(string prompt, string context) => new($"{context} {prompt}", context.Length + 1 + prompt.Length, prompt);

    /// <summary>
    /// The sparse-probing tasks: <c>name-vs-place</c> (a person's name vs a place, city or state, read at the word),
    /// <c>two-hop-vs-one-hop</c> (which kind of fact prompt, read at its last token) and <c>state:S</c> for each of
    /// <see cref="ProbedStates"/> (is the prompt about S, read at its last token). Prompts follow a random corpus line, so each
    /// reading has its own context. Classes are balanced (the larger is subsampled), at most <paramref name="perClass"/> each.
    /// </summary>
    public static BinaryProbeTask[] SparseProbing(int seed, int perClass = 400)
    {
        var rng = new Random(seed);
        var contexts = ContextLines(400, seed);
        string Context() => contexts[rng.Next(contexts.Length)];
        var tasks = new List<BinaryProbeTask>();

        var words = WordsInContext(ContextLines(1500, seed + 1));
        tasks.Add(Balanced("name-vs-place", "a person's name vs a place, city or state, read at the word",
            words.Where(w => w.Category == "person name").Select(w => w.Item), words.Where(w => w.Category is "place" or "city" or "state").Select(w => w.Item), perClass, rng));

        var prompts = ToyWorld.States.SelectMany(s => PromptsAbout(s).Select(p => (State: s.Name, p.Prompt, p.TwoHop))).ToArray();
        ProbeItem[] Draw(IEnumerable<string> pool, int count) { var list = pool.ToArray(); return Enumerable.Range(0, count).Select(_ => InContext(list[rng.Next(list.Length)], Context())).ToArray(); }
        tasks.Add(Balanced("two-hop-vs-one-hop", "\"The capital of the state containing CITY is\" vs \"CITY is in\" / \"The capital of STATE is\", read at the last token",
            Draw(prompts.Where(p => p.TwoHop).Select(p => p.Prompt), perClass), Draw(prompts.Where(p => !p.TwoHop).Select(p => p.Prompt), perClass), perClass, rng));

        foreach (var state in ProbedStates)
        {
            var about = prompts.Where(p => p.State == state).Select(p => p.Prompt).ToArray();
            int n = Math.Min(perClass, about.Length * 24);
            tasks.Add(Balanced($"state:{state}", $"a fact prompt about {state} vs about another state, read at the last token",
                Draw(about, n), Draw(prompts.Where(p => p.State != state).Select(p => p.Prompt), n), perClass, rng));
        }
        return tasks.ToArray();
    }

    static BinaryProbeTask Balanced(string name, string description, IEnumerable<ProbeItem> positives, IEnumerable<ProbeItem> negatives, int perClass, Random rng)
    {
        var pos = positives.OrderBy(_ => rng.Next()).ToArray();
        var neg = negatives.OrderBy(_ => rng.Next()).ToArray();
        int n = Math.Min(perClass, Math.Min(pos.Length, neg.Length));
        return new BinaryProbeTask(name, description, pos[..n], neg[..n]);
    }
}
