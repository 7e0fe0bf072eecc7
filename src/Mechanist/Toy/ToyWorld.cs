namespace Mechanist.Toy;

/// <summary>A US state with its capital and two other cities (names chosen so that no city name repeats across states).</summary>
/// <param name="Name">State.</param>
/// <param name="Capital">Capital city.</param>
/// <param name="Cities">Two other cities of the state.</param>
public sealed record State(string Name, string Capital, string[] Cities);

/// <summary>The facts and vocabulary the toy corpus is written from.</summary>
public static class ToyWorld
{
    /// <summary>The 50 states, their capitals and two more cities each (real geography).</summary>
    public static readonly State[] States =
    {
        new("Alabama", "Montgomery", new[] { "Birmingham", "Huntsville" }), new("Alaska", "Juneau", new[] { "Anchorage", "Fairbanks" }),
        new("Arizona", "Phoenix", new[] { "Tucson", "Mesa" }), new("Arkansas", "Little Rock", new[] { "Fayetteville", "Jonesboro" }),
        new("California", "Sacramento", new[] { "Oakland", "Fresno" }), new("Colorado", "Denver", new[] { "Boulder", "Aurora" }),
        new("Connecticut", "Hartford", new[] { "Bridgeport", "Stamford" }), new("Delaware", "Dover", new[] { "Wilmington", "Milford" }),
        new("Florida", "Tallahassee", new[] { "Miami", "Orlando" }), new("Georgia", "Atlanta", new[] { "Savannah", "Macon" }),
        new("Hawaii", "Honolulu", new[] { "Hilo", "Kailua" }), new("Idaho", "Boise", new[] { "Pocatello", "Nampa" }),
        new("Illinois", "Springfield", new[] { "Chicago", "Peoria" }), new("Indiana", "Indianapolis", new[] { "Bloomington", "Evansville" }),
        new("Iowa", "Des Moines", new[] { "Davenport", "Ames" }), new("Kansas", "Topeka", new[] { "Wichita", "Lawrence" }),
        new("Kentucky", "Frankfort", new[] { "Louisville", "Lexington" }), new("Louisiana", "Baton Rouge", new[] { "Shreveport", "Lafayette" }),
        new("Maine", "Augusta", new[] { "Bangor", "Lewiston" }), new("Maryland", "Annapolis", new[] { "Baltimore", "Frederick" }),
        new("Massachusetts", "Boston", new[] { "Worcester", "Cambridge" }), new("Michigan", "Lansing", new[] { "Detroit", "Flint" }),
        new("Minnesota", "Saint Paul", new[] { "Minneapolis", "Duluth" }), new("Mississippi", "Jackson", new[] { "Biloxi", "Tupelo" }),
        new("Missouri", "Jefferson City", new[] { "Joplin", "Branson" }), new("Montana", "Helena", new[] { "Billings", "Missoula" }),
        new("Nebraska", "Lincoln", new[] { "Omaha", "Kearney" }), new("Nevada", "Carson City", new[] { "Reno", "Henderson" }),
        new("New Hampshire", "Concord", new[] { "Manchester", "Nashua" }), new("New Jersey", "Trenton", new[] { "Newark", "Camden" }),
        new("New Mexico", "Santa Fe", new[] { "Albuquerque", "Roswell" }), new("New York", "Albany", new[] { "Buffalo", "Rochester" }),
        new("North Carolina", "Raleigh", new[] { "Charlotte", "Durham" }), new("North Dakota", "Bismarck", new[] { "Fargo", "Minot" }),
        new("Ohio", "Columbus", new[] { "Cleveland", "Cincinnati" }), new("Oklahoma", "Oklahoma City", new[] { "Tulsa", "Norman" }),
        new("Oregon", "Salem", new[] { "Portland", "Eugene" }), new("Pennsylvania", "Harrisburg", new[] { "Philadelphia", "Pittsburgh" }),
        new("Rhode Island", "Providence", new[] { "Warwick", "Cranston" }), new("South Carolina", "Columbia", new[] { "Greenville", "Spartanburg" }),
        new("South Dakota", "Pierre", new[] { "Aberdeen", "Brookings" }), new("Tennessee", "Nashville", new[] { "Memphis", "Knoxville" }),
        new("Texas", "Austin", new[] { "Dallas", "Houston" }), new("Utah", "Salt Lake City", new[] { "Provo", "Ogden" }),
        new("Vermont", "Montpelier", new[] { "Burlington", "Rutland" }), new("Virginia", "Richmond", new[] { "Norfolk", "Roanoke" }),
        new("Washington", "Olympia", new[] { "Seattle", "Spokane" }), new("West Virginia", "Charleston", new[] { "Huntington", "Morgantown" }),
        new("Wisconsin", "Madison", new[] { "Milwaukee", "Kenosha" }), new("Wyoming", "Cheyenne", new[] { "Casper", "Laramie" }),
    };

    /// <summary>
    /// Cities that never appear in the two-hop form during training (every fourth state's second city):
    /// the model sees "Dallas is in Texas." for them but must compose the two hops itself.
    /// </summary>
    public static readonly HashSet<string> HeldOutTwoHopCities =
        States.Where((_, i) => i % 4 == 3).Select(s => s.Cities[1]).ToHashSet();

    /// <summary>People's names (one word each).</summary>
    public static readonly string[] Names =
    {
        "Mary", "John", "Anna", "Tom", "Lucy", "Sam", "Emma", "Jack", "Lily", "Ben", "Sarah", "David", "Kate", "Peter", "Alice",
        "Mark", "Rose", "Paul", "Grace", "Adam", "Julia", "Henry", "Clara", "Oscar", "Ella", "Leo", "Nora", "Max", "Ruby", "Hugo",
        "Ivy", "Felix", "Zoe", "Owen", "Maya", "Noah", "Iris", "Eric", "Jane", "Luke",
    };

    /// <summary>Places people go.</summary>
    public static readonly string[] Places =
    {
        "store", "park", "school", "beach", "library", "market", "garden", "zoo", "museum", "river", "farm", "station", "bakery", "forest", "lake",
    };

    /// <summary>Things people give each other.</summary>
    public static readonly string[] Objects =
    {
        "drink", "book", "ball", "apple", "cake", "letter", "flower", "kite", "hat", "toy", "pencil", "cookie", "map", "ring", "box",
    };

    /// <summary>Words for the repeated random sequences (induction).</summary>
    public static readonly string[] RandomWords =
    {
        "red", "blue", "green", "small", "big", "happy", "quiet", "fast", "slow", "warm", "cold", "bright", "dark", "soft", "loud",
        "tree", "stone", "cloud", "door", "window", "road", "bird", "fish", "horse", "dog", "cat", "moon", "sun", "star", "rain",
        "snow", "wind", "song", "dream", "boat", "bridge", "chair", "table", "cup", "spoon", "shoe", "coat", "bell", "clock", "lamp",
        "paper", "glass", "honey", "bread", "milk",
    };
}
