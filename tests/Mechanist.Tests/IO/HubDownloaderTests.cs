using System.Collections.Concurrent;
using System.Net;
using Mechanist.IO;
using Mechanist.IO.Hub;

namespace Mechanist.Tests.IO;

/// <summary>
/// The hub client against a loopback HTTP server that answers like the hub's resolve endpoint:
/// ETag / X-Repo-Commit headers, a redirect to a blob URL for the weights, Range requests, 404s.
/// </summary>
public sealed class HubDownloaderTests : IDisposable
{
    const string Commit = "0123456789abcdef0123456789abcdef01234567";
    readonly HttpListener _listener = new();
    readonly Dictionary<string, byte[]> _files = new();
    readonly ConcurrentQueue<string> _log = new();
    readonly string _endpoint;
    readonly TempDir _cache = new();

    public HubDownloaderTests()
    {
        _endpoint = Loopback.Start(_listener);
        string gpt2 = SharedData.PathOf("golden", "models", "gpt2");
        _files["config.json"] = File.ReadAllBytes(Path.Combine(gpt2, "config.json"));
        _files["model.safetensors"] = File.ReadAllBytes(Path.Combine(gpt2, "model.safetensors"));
        _files["tokenizer.json"] = File.ReadAllBytes(SharedData.PathOf("tokenizers", "gpt2", "tokenizer.json"));
        _ = Task.Run(Serve);
    }

    async Task Serve()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext ctx;
            try { ctx = await _listener.GetContextAsync(); } catch { return; }
            var req = ctx.Request; var res = ctx.Response;
            string path = req.Url!.AbsolutePath;
            _log.Enqueue($"{req.HttpMethod} {path} range={req.Headers["Range"]} auth={req.Headers["Authorization"]}");
            const string resolve = "/org/tiny/resolve/main/";
            if (path.StartsWith(resolve) && _files.TryGetValue(path[resolve.Length..], out var body))
            {
                string name = path[resolve.Length..];
                res.AddHeader("X-Repo-Commit", Commit);
                res.AddHeader("ETag", $"\"etag-{name.Replace('.', '-')}\"");
                if (name.EndsWith(".safetensors"))
                {
                    // Large files live elsewhere: the hub answers with a redirect and X-Linked-* headers.
                    res.AddHeader("X-Linked-Etag", "\"sha256-weights\"");
                    res.AddHeader("X-Linked-Size", body.Length.ToString());
                    res.StatusCode = 302;
                    res.RedirectLocation = "/blobs/model.safetensors";
                    res.Close();
                    continue;
                }
                await Send(res, req, body);
            }
            else if (path == "/blobs/model.safetensors") await Send(res, req, _files["model.safetensors"]);
            else { res.StatusCode = 404; res.Close(); }
        }
    }

    static async Task Send(HttpListenerResponse res, HttpListenerRequest req, byte[] body)
    {
        long start = 0;
        if (req.Headers["Range"] is { } range && range.StartsWith("bytes="))
        {
            start = long.Parse(range[6..].TrimEnd('-'));
            res.StatusCode = 206;
            res.AddHeader("Content-Range", $"bytes {start}-{body.Length - 1}/{body.Length}");
        }
        res.ContentLength64 = body.Length - start;
        if (req.HttpMethod != "HEAD") await res.OutputStream.WriteAsync(body.AsMemory((int)start));
        res.Close();
    }

    [Fact]
    public async Task DownloadsIntoThePythonCacheLayoutAndLoads()
    {
        var cache = new HubCache(_cache.Path);
        using var downloader = new HubDownloader(cache, _endpoint, token: "secret");
        var progress = new List<DownloadProgress>();
        string snapshot = await downloader.DownloadModelAsync("org/tiny", progress: new SyncProgress(progress));

        string repo = Path.Combine(_cache.Path, "models--org--tiny");
        Assert.Equal(Path.Combine(repo, "snapshots", Commit), snapshot);
        Assert.Equal(Commit, File.ReadAllText(Path.Combine(repo, "refs", "main")));
        var link = new FileInfo(Path.Combine(snapshot, "model.safetensors"));
        Assert.Equal("../../blobs/sha256-weights", link.LinkTarget);
        Assert.Equal(_files["model.safetensors"], File.ReadAllBytes(link.FullName));
        Assert.True(File.Exists(Path.Combine(repo, "blobs", "etag-config-json")));
        Assert.False(File.Exists(Path.Combine(snapshot, "merges.txt")));
        Assert.Contains(progress, p => p.File == "model.safetensors" && p.Done == p.Total);
        Assert.Contains(_log, l => l.StartsWith("HEAD /org/tiny/resolve/main/config.json") && l.EndsWith("auth=Bearer secret"));

        // The cached snapshot now resolves offline by repository id, and loads.
        using var source = ModelSource.Open("org/tiny", new ModelOpenOptions { Offline = true, Cache = cache });
        Assert.Equal(snapshot, source.Location);
        Assert.Equal(50257, source.Tokenizer!.VocabSize);
    }

    [Fact]
    public async Task ResumesAnInterruptedDownloadWithARangeRequest()
    {
        var cache = new HubCache(_cache.Path);
        string blobs = Path.Combine(_cache.Path, "models--org--tiny", "blobs");
        Directory.CreateDirectory(blobs);
        var weights = _files["model.safetensors"];
        File.WriteAllBytes(Path.Combine(blobs, "sha256-weights.incomplete"), weights[..1000]);
        using var downloader = new HubDownloader(cache, _endpoint, token: "");
        string? file = await downloader.DownloadFileAsync("org/tiny", "main", "model.safetensors", required: true);
        Assert.Equal(weights, File.ReadAllBytes(file!));
        Assert.Contains(_log, l => l.StartsWith("GET /blobs/model.safetensors range=bytes=1000-"));
        Assert.False(File.Exists(Path.Combine(blobs, "sha256-weights.incomplete")));
    }

    [Fact]
    public async Task MissingModelsFailClearly()
    {
        var cache = new HubCache(_cache.Path);
        var offline = Assert.Throws<MechanistException>(() => ModelSource.Open("org/absent", new ModelOpenOptions { Offline = true, Cache = cache }));
        Assert.Contains("is not in the hub cache", offline.Message);
        using var downloader = new HubDownloader(cache, _endpoint);
        var missing = await Assert.ThrowsAsync<MechanistException>(() => downloader.DownloadModelAsync("org/absent"));
        Assert.Contains("'config.json' not found", missing.Message);
        Assert.Throws<MechanistException>(() => cache.RepoFolder("../etc"));
    }

    sealed class SyncProgress(List<DownloadProgress> sink) : IProgress<DownloadProgress>
    {
        public void Report(DownloadProgress value) { lock (sink) sink.Add(value); }
    }

    public void Dispose()
    {
        _listener.Stop();
        _listener.Close();
        _cache.Dispose();
    }
}
