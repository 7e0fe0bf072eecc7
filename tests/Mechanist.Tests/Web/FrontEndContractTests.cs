using System.Text.RegularExpressions;
using Mechanist.Attribution;

namespace Mechanist.Tests.Web;

/// <summary>What the front end's modules may import and which server vocabularies they spell.</summary>
public class FrontEndContractTests
{
    static readonly string Root = Path.Combine(SharedData.RepoRoot, "src", "Mechanist.Web", "wwwroot");

    [Fact]
    public void ViewsShareStateThroughItsModuleAndNeverImportTheShell()
    {
        var views = Directory.GetFiles(Path.Combine(Root, "views"), "*.js");
        Assert.NotEmpty(views);
        foreach (var view in views)
        {
            var imports = Regex.Matches(File.ReadAllText(view), @"from\s+'([^']+)'").Select(m => m.Groups[1].Value).ToList();
            Assert.DoesNotContain("../app.js", imports);
        }
        Assert.Contains("from '../state.js'", File.ReadAllText(Path.Combine(Root, "views", "graph.js")));
    }

    [Fact]
    public void EveryGraphNodeTypeTheViewComparesIsOneTheGraphFileWrites()
    {
        string js = File.ReadAllText(Path.Combine(Root, "views", "graph.js"));
        var compared = Regex.Matches(js, @"feature_type\s*[!=]==\s*'([^']+)'").Select(m => m.Groups[1].Value)
            .Concat(Regex.Matches(js, @"\[([^\]]*)\]\.includes\(n\.feature_type\)").SelectMany(m => Regex.Matches(m.Groups[1].Value, "'([^']+)'").Select(x => x.Groups[1].Value)))
            .Distinct().ToList();
        Assert.True(compared.Count >= 3, string.Join(", ", compared));
        Assert.All(compared, t => Assert.Contains(t, GraphFile.FeatureTypes.Names));
    }
}
