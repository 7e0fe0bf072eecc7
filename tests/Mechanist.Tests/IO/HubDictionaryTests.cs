using System.Net;
using Mechanist.Dictionaries.Formats;
using Mechanist.IO.Hub;

namespace Mechanist.Tests.IO;

/// <summary>Dictionaries from the hub as models are: a loopback server answering like the hub's resolve endpoint serves a circuit-tracer transcoder set.</summary>
public sealed class HubDictionaryTests : IDisposable
{
    const string Commit = "89abcdef0123456789abcdef0123456789abcdef";
    readonly HttpListener _listener = new();
    readonly string _endpoint;
    readonly TempDir _cache = new();
    readonly string _local = SharedData.PathOf("golden", "attribution", "gpt2_plt_relu", "transcoders");
    readonly System.Collections.Concurrent.ConcurrentQueue<string> _asked = new();

    public HubDictionaryTests()
    {
        _endpoint = Loopback.Start(_listener);
        _ = Task.Run(Serve);
    }

    async Task Serve()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext ctx;
            try { ctx = await _listener.GetContextAsync(); } catch { return; }
            var res = ctx.Response;
            const string resolve = "/org/plt/resolve/main/";
            string path = ctx.Request.Url!.AbsolutePath;
            _asked.Enqueue($"{ctx.Request.HttpMethod} {path}");
            string file = path.StartsWith(resolve) ? Path.Combine(_local, path[resolve.Length..]) : "";
            if (file.Length == 0 || !File.Exists(file)) { res.StatusCode = 404; res.Close(); continue; }
            var body = await File.ReadAllBytesAsync(file);
            res.AddHeader("X-Repo-Commit", Commit);
            res.AddHeader("ETag", $"\"etag-{Path.GetFileName(file).Replace('.', '-')}\"");
            res.ContentLength64 = body.Length;
            if (ctx.Request.HttpMethod != "HEAD") await res.OutputStream.WriteAsync(body);
            res.Close();
        }
    }

    [Fact]
    public void ATranscoderSetIsDownloadedLayerByLayerThenFoundInTheCacheOffline()
    {
        var options = new DictionaryOpenOptions(Cache: new HubCache(_cache.Path), Endpoint: _endpoint);
        string folder = DictionaryLocation.Resolve("org/plt", options);
        Assert.Equal(new[] { "config.yaml", "layer_0.safetensors", "layer_1.safetensors", "layer_2.safetensors" },
            Directory.GetFiles(folder).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        // The layers were probed until the next was absent, and the files are the repository's, byte for byte.
        Assert.Contains("HEAD /org/plt/resolve/main/layer_3.safetensors", _asked);
        foreach (var f in Directory.GetFiles(_local)) Assert.Equal(File.ReadAllBytes(f), File.ReadAllBytes(Path.Combine(folder, Path.GetFileName(f))));
        using (var fromHub = CircuitTracerFormat.Load(folder)) using (var local = CircuitTracerFormat.Load(_local))
            TensorAssert.Close(((Mechanist.Dictionaries.Transcoder)local.Dictionary.Layer(2)!).WEnc, ((Mechanist.Dictionaries.Transcoder)fromHub.Dictionary.Layer(2)!).WEnc, 0, "W_enc of layer 2");
        // A second resolve (offline, or the same revision by name) reads the cache without asking the hub.
        int asked = _asked.Count;
        Assert.Equal(folder, DictionaryLocation.Resolve("org/plt@main", options with { Offline = true }));
        Assert.Equal(asked, _asked.Count);
        Assert.Contains("not in the hub cache", Assert.Throws<MechanistException>(() => DictionaryLocation.Resolve("org/other", options with { Offline = true })).Message);
        Assert.Contains("not a folder here, and not a hub repository id", Assert.Throws<MechanistException>(() => DictionaryLocation.Resolve("no such folder", options)).Message);
        Assert.Contains("neither a circuit-tracer transcoder repository", Assert.Throws<MechanistException>(() => DictionaryLocation.Resolve("org/empty", options)).Message);
    }

    public void Dispose() { _listener.Stop(); _listener.Close(); _cache.Dispose(); }
}
