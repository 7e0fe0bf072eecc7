using Mechanist.Web;

namespace Mechanist.Tests.Web;

/// <summary>What a browser sees of a library error.</summary>
public sealed class AnswersTests
{
    [Theory]
    [InlineData("/opt/mechanist/bin/models/toy-4l/clt: missing W_enc_0", "clt: missing W_enc_0")]
    [InlineData("'/tmp/x y/features.db' is not a store", "'x y/features.db' is not a store")] // a space ends the path it can see
    [InlineData("feature store not found at /srv/data/features.db (build one)", "feature store not found at features.db (build one)")]
    [InlineData("cannot reach https://huggingface.co/gpt2/resolve/main", "cannot reach https://huggingface.co/gpt2/resolve/main")]
    [InlineData("give LAYER:FEATURE, e.g. 0:12 or 3/4", "give LAYER:FEATURE, e.g. 0:12 or 3/4")]
    public void ErrorsNeverCarryTheServersAbsolutePaths(string message, string shown) => Assert.Equal(shown, Answers.Redact(message));
}
