using Mechanist.Dictionaries.Formats;

namespace Mechanist.Cli;

/// <summary>A dictionary argument: a local folder, or a hub repository (org/name[@revision]) found in the cache or downloaded, as --model is.</summary>
public static class DictionaryInput
{
    /// <summary>The local folder of <paramref name="spec"/>.</summary>
    public static string Resolve(string spec, bool offline, CliContext ctx) =>
        DictionaryLocation.Resolve(spec, new DictionaryOpenOptions(Offline: offline || new Mechanist.IO.ModelOpenOptions().Offline, Progress: new DownloadProgressPrinter(ctx.Err)));
}
