using Mechanist.Reporting;
using System.Text.Json;
using Spectre.Console;

namespace Mechanist.Cli;

/// <summary>Small helpers for terminal output.</summary>
public static class Render
{
    /// <summary>A Spectre console writing to the command's stdout.</summary>
    public static IAnsiConsole Console(CliContext ctx)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(ctx.Out) });
        if (ReferenceEquals(ctx.Out, System.Console.Out) && !System.Console.IsOutputRedirected) return console;
        console.Profile.Width = 240; // wide tables stay readable when piped to a file
        return console;
    }

    /// <summary>A token as an escaped, quoted string (so spaces and newlines show).</summary>
    public static string Token(string token) => Markup.Escape(JsonSerializer.Serialize(token, JsonFormat.Options));

    /// <summary>A score as a coloured cell (blue negative, red positive).</summary>
    public static string Score(double v)
    {
        string colour = v > 0.5 ? "red" : v > 0.2 ? "orange3" : v < -0.2 ? "blue" : "grey";
        return $"[{colour}]{v,6:F2}[/]";
    }
}
