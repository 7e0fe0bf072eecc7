using System.Text;

namespace Mechanist.Toy;

/// <summary>What a corpus line exercises.</summary>
public enum ToyLineKind
{
    /// <summary>Indirect-object sentence.</summary>
    IndirectObject,
    /// <summary>"Dallas is in Texas."</summary>
    CityInState,
    /// <summary>"The capital of Texas is Austin."</summary>
    CapitalOf,
    /// <summary>"The capital of the state containing Dallas is Austin."</summary>
    TwoHop,
    /// <summary>A random word sequence, repeated.</summary>
    Induction,
    /// <summary>A short story with dialogue.</summary>
    Story,
}

/// <summary>An evaluation prompt with its expected continuation.</summary>
/// <param name="Kind">The phenomenon.</param>
/// <param name="Prompt">Text before the answer.</param>
/// <param name="Answer">Expected words (space-separated; each word is one token).</param>
/// <param name="Wrong">For indirect-object prompts, the subject (the wrong answer).</param>
/// <param name="HeldOut">Whether this exact item never appears in training.</param>
public sealed record ToyPrompt(ToyLineKind Kind, string Prompt, string Answer, string? Wrong, bool HeldOut);

/// <summary>
/// The seeded toy corpus. Grammar (each line one sentence or short passage):
/// <list type="bullet">
/// <item>indirect object: "When A and B went to the PLACE, B gave a OBJECT to A." and "When B and A …" (4 templates, both
///   name orders, so the answer is the name that is not repeated); 10% of the
///   (A, B) name pairs are held out of training for evaluation;</item>
/// <item>one-hop facts: "CITY is in STATE." for every city, "The capital of STATE is CAPITAL.";</item>
/// <item>two-hop: "The capital of the state containing CITY is CAPITAL." for all cities but
///   <see cref="ToyWorld.HeldOutTwoHopCities"/>;</item>
/// <item>induction: 8–20 random words (from every one-word name, place, object, state and city), then the same words again;</item>
/// <item>stories: short scenes with dialogue in quotes, commas and full stops (6 templates).</item>
/// </list>
/// </summary>
public sealed class ToyCorpus
{
    readonly Random _rng;
    readonly (ToyLineKind Kind, int Weight)[] _mix;

    /// <summary>A generator with a seed (the same seed gives the same corpus) and an optional mix of line kinds.</summary>
    public ToyCorpus(int seed, (ToyLineKind Kind, int Weight)[]? mix = null)
    {
        _rng = new Random(seed);
        _mix = mix ?? DefaultMix;
    }

    /// <summary>
    /// Words for repeated random sequences: every one-word name, place, object, state and city, so
    /// that copying is learned for any token rather than for a small set.
    /// </summary>
    public static readonly string[] InductionWords = ToyWorld.RandomWords.Concat(ToyWorld.Names).Concat(ToyWorld.Places).Concat(ToyWorld.Objects)
        .Concat(ToyWorld.States.SelectMany(s => s.Cities.Append(s.Capital).Append(s.Name))).Where(w => !w.Contains(' ')).Distinct().ToArray();

    // {N1} and {N2} introduce the two names in either order (ABB and BAB patterns); {S} gives to {IO}.
    static readonly string[] IoiTemplates =
    {
        "When {N1} and {N2} went to the {P}, {S} gave a {O} to {IO}.",
        "After {N1} and {N2} went to the {P}, {S} gave the {O} to {IO}.",
        "Then, {N1} and {N2} had fun at the {P}. {S} gave a {O} to {IO}.",
        "{N1} and {N2} were at the {P}. {S} handed the {O} to {IO}.",
    };

    /// <summary>An indirect-object sentence: the indirect object <paramref name="io"/> is mentioned first or second.</summary>
    static string FillIoi(string template, string io, string s, bool ioFirst, string place, string obj) =>
        template.Replace("{N1}", ioFirst ? io : s).Replace("{N2}", ioFirst ? s : io).Replace("{S}", s).Replace("{IO}", io)
            .Replace("{P}", place).Replace("{O}", obj);

    static readonly string[] StoryTemplates =
    {
        "{A} went to the {P} with {B}. \"Look at the {O}!\" said {A}. {B} smiled, and they played all day.",
        "One day, {A} found a {O} at the {P}. \"Can I keep it?\" asked {A}. \"Yes,\" said {B}.",
        "{A} was sad, so {B} took {A} to the {P}. \"Thank you,\" said {A}, and they were happy.",
        "At the {P}, {A} saw a big {O}. {A} said, \"I like it.\" {B} laughed.",
        "\"Where is my {O}?\" asked {A}. {B} said, \"It is at the {P}.\" So {A} went to the {P}.",
        "{A} and {B} walked to the {P}. It was a quiet day, and the {O} was on the table.",
    };

    /// <summary>Whether a name pair is held out of the indirect-object training lines.</summary>
    public static bool IsHeldOutPair(string a, string b) =>
        (Array.IndexOf(ToyWorld.Names, a) * 7 + Array.IndexOf(ToyWorld.Names, b) * 3) % 10 == 0;

    string Pick(string[] items) => items[_rng.Next(items.Length)];

    (string A, string B) NamePair(bool heldOut)
    {
        while (true)
        {
            string a = Pick(ToyWorld.Names), b = Pick(ToyWorld.Names);
            if (a != b && IsHeldOutPair(a, b) == heldOut) return (a, b);
        }
    }

    static string Fill(string template, string a, string b, string place, string obj) =>
        template.Replace("{A}", a).Replace("{B}", b).Replace("{P}", place).Replace("{O}", obj);

    /// <summary>One line of the given kind.</summary>
    public string Line(ToyLineKind kind)
    {
        switch (kind)
        {
            case ToyLineKind.IndirectObject:
            {
                var (a, b) = NamePair(heldOut: false);
                return FillIoi(Pick(IoiTemplates), a, b, _rng.Next(2) == 0, Pick(ToyWorld.Places), Pick(ToyWorld.Objects));
            }
            case ToyLineKind.CityInState:
            {
                var s = ToyWorld.States[_rng.Next(ToyWorld.States.Length)];
                string city = _rng.Next(3) == 0 ? s.Capital : s.Cities[_rng.Next(2)];
                return $"{city} is in {s.Name}.";
            }
            case ToyLineKind.CapitalOf:
            {
                var s = ToyWorld.States[_rng.Next(ToyWorld.States.Length)];
                return $"The capital of {s.Name} is {s.Capital}.";
            }
            case ToyLineKind.TwoHop:
            {
                while (true)
                {
                    var s = ToyWorld.States[_rng.Next(ToyWorld.States.Length)];
                    string city = s.Cities[_rng.Next(2)];
                    if (!ToyWorld.HeldOutTwoHopCities.Contains(city)) return $"The capital of the state containing {city} is {s.Capital}.";
                }
            }
            case ToyLineKind.Induction:
            {
                var words = Enumerable.Range(0, _rng.Next(8, 21)).Select(_ => Pick(InductionWords)).ToArray();
                string seq = string.Join(" ", words);
                return $"{seq} {seq}";
            }
            default:
            {
                var (a, b) = NamePair(heldOut: _rng.Next(2) == 0);
                return Fill(Pick(StoryTemplates), a, b, Pick(ToyWorld.Places), Pick(ToyWorld.Objects));
            }
        }
    }

    /// <summary>The default mix of line kinds (weights).</summary>
    public static readonly (ToyLineKind Kind, int Weight)[] DefaultMix =
    {
        (ToyLineKind.IndirectObject, 30), (ToyLineKind.CityInState, 12), (ToyLineKind.CapitalOf, 8),
        (ToyLineKind.TwoHop, 15), (ToyLineKind.Induction, 15), (ToyLineKind.Story, 20),
    };

    /// <summary>Generates <paramref name="lines"/> lines in the mix's proportions.</summary>
    public IEnumerable<string> Lines(int lines)
    {
        int total = _mix.Sum(m => m.Weight);
        for (int i = 0; i < lines; i++)
        {
            int r = _rng.Next(total);
            foreach (var (kind, weight) in _mix)
            {
                if (r < weight) { yield return Line(kind); break; }
                r -= weight;
            }
        }
    }

    /// <summary>Every word the corpus can produce, plus punctuation, for the vocabulary.</summary>
    public static IEnumerable<string> AllText()
    {
        var sb = new StringBuilder();
        foreach (var t in IoiTemplates.Concat(StoryTemplates)) sb.AppendLine(t.Replace("{N1}", "").Replace("{N2}", "").Replace("{S}", "").Replace("{IO}", ""));
        sb.AppendLine("The capital of the state containing is in .");
        foreach (var s in ToyWorld.States) sb.AppendLine($"{s.Name} {s.Capital} {string.Join(" ", s.Cities)}");
        sb.AppendLine(string.Join(" ", ToyWorld.Names.Concat(ToyWorld.Places).Concat(ToyWorld.Objects).Concat(ToyWorld.RandomWords)));
        return sb.ToString().Split('\n');
    }

    /// <summary>Evaluation prompts: indirect objects on held-out name pairs, one-hop facts, two-hop (seen and held-out cities).</summary>
    public IEnumerable<ToyPrompt> EvaluationPrompts(int indirectObjectCount = 200)
    {
        for (int i = 0; i < indirectObjectCount; i++)
        {
            var (a, b) = NamePair(heldOut: true);
            string line = FillIoi(IoiTemplates[i % IoiTemplates.Length], a, b, i % 2 == 0, Pick(ToyWorld.Places), Pick(ToyWorld.Objects));
            int cut = line.LastIndexOf(" to ", StringComparison.Ordinal) + " to".Length;
            yield return new ToyPrompt(ToyLineKind.IndirectObject, line[..cut], a, b, HeldOut: true);
        }
        foreach (var s in ToyWorld.States)
        {
            foreach (var city in s.Cities.Append(s.Capital))
                yield return new ToyPrompt(ToyLineKind.CityInState, $"{city} is in", s.Name, null, false);
            yield return new ToyPrompt(ToyLineKind.CapitalOf, $"The capital of {s.Name} is", s.Capital, null, false);
            foreach (var city in s.Cities)
                yield return new ToyPrompt(ToyLineKind.TwoHop, $"The capital of the state containing {city} is", s.Capital, null,
                    ToyWorld.HeldOutTwoHopCities.Contains(city));
        }
    }
}
