using System.Text.Json;
using System.Text.Json.Nodes;
using Mechanist.IO;

namespace Mechanist.Web;

/// <summary>
/// The explorer's saved state of a graph file (pinned nodes, supernodes) in its <c>qParams</c>, where circuit-tracer's
/// frontend reads it too; written by streaming the file, so saving costs memory independent of the graph's size.
/// </summary>
public static class GraphState
{
    /// <summary>Writes <paramref name="pinned"/> and <paramref name="supernodes"/> into the file's qParams, keeping its other fields.</summary>
    /// <exception cref="MechanistException">The file is not a JSON object.</exception>
    public static void Save(string path, IReadOnlyList<string> pinned, IReadOnlyList<string[]> supernodes)
    {
        JsonStreaming.UpdateTopLevelProperty(path, "qParams", old =>
        {
            var q = old as JsonObject ?? new JsonObject();
            q["pinnedIds"] = new JsonArray(pinned.Select(p => (JsonNode?)p).ToArray());
            q["supernodes"] = new JsonArray(supernodes.Select(g => (JsonNode?)new JsonArray(g.Select(x => (JsonNode?)x).ToArray())).ToArray());
            return q;
        });
    }

    /// <summary>
    /// Carries the saved pins and supernodes of <paramref name="oldPath"/> into a freshly traced <paramref name="newPath"/>
    /// (the same prompt traced again keeps what the user built on it); a malformed old file carries nothing.
    /// </summary>
    public static void CarryOver(string oldPath, string newPath)
    {
        JsonObject? old;
        try { old = JsonStreaming.ReadTopLevelProperty(oldPath, "qParams") as JsonObject; }
        catch (MechanistException) { return; }
        if (old is null || (old["pinnedIds"] is not JsonArray { Count: > 0 } && old["supernodes"] is not JsonArray { Count: > 0 })) return;
        JsonStreaming.UpdateTopLevelProperty(newPath, "qParams", current =>
        {
            var fresh = current as JsonObject ?? new JsonObject();
            foreach (var key in new[] { "pinnedIds", "supernodes" })
                if (old[key] is { } value) fresh[key] = value.DeepClone();
            return fresh;
        });
    }
}
