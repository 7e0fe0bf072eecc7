using System.Net;
using System.Net.Http.Headers;

namespace Mechanist.IO.Hub;

/// <summary>Progress of one file download.</summary>
/// <param name="File">File name within the repository.</param>
/// <param name="Done">Bytes present so far (resumed bytes included).</param>
/// <param name="Total">Total bytes, when the server says.</param>
public readonly record struct DownloadProgress(string File, long Done, long? Total);

/// <summary>
/// Downloads model files from a Hugging Face-compatible hub (<c>{endpoint}/{repo}/resolve/{revision}/{file}</c>)
/// into the same cache layout the Python client uses: blobs named by ETag, snapshot symlinks, refs.
/// Interrupted downloads resume from <c>blobs/&lt;etag&gt;.incomplete</c> with an HTTP Range request.
/// </summary>
public sealed class HubDownloader : IDisposable
{
    readonly HttpClient _http;
    readonly string _endpoint;
    readonly string? _token;

    /// <summary>Creates a downloader; null arguments come from HF_ENDPOINT and HF_TOKEN.</summary>
    public HubDownloader(HubCache cache, string? endpoint = null, string? token = null, HttpMessageHandler? handler = null)
    {
        Cache = cache;
        _endpoint = (endpoint ?? Environment.GetEnvironmentVariable("HF_ENDPOINT") ?? "https://huggingface.co").TrimEnd('/');
        _token = token ?? Environment.GetEnvironmentVariable("HF_TOKEN") ?? Environment.GetEnvironmentVariable("HUGGING_FACE_HUB_TOKEN");
        _http = new HttpClient(handler ?? new SocketsHttpHandler { AllowAutoRedirect = false, ConnectTimeout = TimeSpan.FromSeconds(20) })
        { Timeout = Timeout.InfiniteTimeSpan };
        _http.DefaultRequestHeaders.UserAgent.ParseAdd("mechanist/0.1");
    }

    /// <summary>The cache files are written into.</summary>
    public HubCache Cache { get; }

    /// <summary>Files fetched when a model is missing: required ones first.</summary>
    public static readonly string[] OptionalModelFiles =
    {
        "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "tokenizer.model", "vocab.json", "merges.txt",
    };

    /// <summary>
    /// Downloads config.json, the weights (single file or every shard of the index) and the tokenizer
    /// files of a model; returns the snapshot folder.
    /// </summary>
    public async Task<string> DownloadModelAsync(string repoId, string revision = "main",
        IProgress<DownloadProgress>? progress = null, CancellationToken ct = default)
    {
        string snapshot = await DownloadFileAsync(repoId, revision, "config.json", required: true, progress, ct) ?? throw new InvalidOperationException();
        snapshot = Path.GetDirectoryName(snapshot)!;
        string? index = await DownloadFileAsync(repoId, revision, "model.safetensors.index.json", required: false, progress, ct);
        if (index != null)
        {
            var weightMap = System.Text.Json.Nodes.JsonNode.Parse(await File.ReadAllTextAsync(index, ct))?["weight_map"]?.AsObject()
                ?? throw new InvalidCheckpointException(index, "no \"weight_map\" object");
            foreach (var shard in weightMap.Select(kv => kv.Value!.GetValue<string>()).Distinct())
                await DownloadFileAsync(repoId, revision, shard, required: true, progress, ct);
        }
        else await DownloadFileAsync(repoId, revision, "model.safetensors", required: true, progress, ct);
        foreach (var file in OptionalModelFiles)
            await DownloadFileAsync(repoId, revision, file, required: false, progress, ct);
        return snapshot;
    }

    /// <summary>
    /// Downloads one file into the cache and returns its snapshot path; null when the file does not
    /// exist and is not required.
    /// </summary>
    public async Task<string?> DownloadFileAsync(string repoId, string revision, string file, bool required,
        IProgress<DownloadProgress>? progress = null, CancellationToken ct = default)
    {
        if (file.Contains("..") || file.StartsWith('/') || file.Contains('\\'))
            throw new MechanistException($"'{file}' is not a valid file name in a repository");
        string repoDir = Cache.RepoFolder(repoId);
        var url = new Uri($"{_endpoint}/{repoId}/resolve/{Uri.EscapeDataString(revision)}/{file}");

        using var head = await SendAsync(HttpMethod.Head, url, null, followRedirects: false, ct);
        if (head.StatusCode == HttpStatusCode.NotFound)
            return required ? throw new MechanistException($"{repoId}: '{file}' not found on {_endpoint} (revision {revision})") : null;
        if (head.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
            throw new MechanistException($"{repoId}: access denied ({(int)head.StatusCode}); the model may be gated or private: set HF_TOKEN");
        if ((int)head.StatusCode >= 400)
            throw new MechanistException($"{repoId}: '{file}': the hub answered {(int)head.StatusCode} {head.ReasonPhrase}");

        string etag = Header(head, "X-Linked-Etag") ?? head.Headers.ETag?.Tag ?? Header(head, "ETag")
            ?? throw new MechanistException($"{repoId}: '{file}': the hub sent no ETag; cannot store the file in the cache");
        etag = etag.Replace("W/", "").Trim('"');
        if (etag.Length == 0 || etag.Contains('/') || etag.Contains("..")) throw new MechanistException($"{repoId}: invalid ETag '{etag}'");
        string commit = Header(head, "X-Repo-Commit") ?? (HubCache.IsCommit(revision) ? revision
            : throw new MechanistException($"{repoId}: the hub sent no X-Repo-Commit header"));
        if (!HubCache.IsCommit(commit)) throw new MechanistException($"{repoId}: invalid commit '{commit}'");
        long? total = long.TryParse(Header(head, "X-Linked-Size"), out long ls) ? ls : head.Content.Headers.ContentLength;
        Uri location = IsRedirect(head.StatusCode) && head.Headers.Location is { } loc ? new Uri(url, loc) : url;

        string blob = Path.Combine(repoDir, "blobs", etag);
        if (!File.Exists(blob)) await DownloadBlobAsync(location, blob, file, total, progress, ct);
        else progress?.Report(new DownloadProgress(file, new FileInfo(blob).Length, total));

        string snapshotFile = Path.Combine(repoDir, "snapshots", commit, file);
        LinkIntoSnapshot(blob, snapshotFile);
        if (!HubCache.IsCommit(revision)) AtomicFile.WriteText(Path.Combine(repoDir, "refs", revision), commit);
        return snapshotFile;
    }

    async Task DownloadBlobAsync(Uri location, string blob, string file, long? total, IProgress<DownloadProgress>? progress, CancellationToken ct)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
        string incomplete = blob + ".incomplete";
        long start = File.Exists(incomplete) ? new FileInfo(incomplete).Length : 0;
        if (total is { } t && start > t) { File.Delete(incomplete); start = 0; }
        using var response = await SendAsync(HttpMethod.Get, location, start > 0 ? start : null, followRedirects: true, ct);
        if (response.StatusCode == HttpStatusCode.RequestedRangeNotSatisfiable && total == start) { }
        else if (!response.IsSuccessStatusCode)
            throw new MechanistException($"'{file}': download failed with {(int)response.StatusCode} {response.ReasonPhrase}");
        bool append = response.StatusCode == HttpStatusCode.PartialContent;
        if (!append) start = 0;
        total ??= response.Content.Headers.ContentLength + start;
        if (response.StatusCode != HttpStatusCode.RequestedRangeNotSatisfiable)
        {
            await using var body = await response.Content.ReadAsStreamAsync(ct);
            await using var output = new FileStream(incomplete, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
            var buffer = new byte[1 << 20];
            long done = start;
            int n;
            while ((n = await body.ReadAsync(buffer, ct)) > 0)
            {
                await output.WriteAsync(buffer.AsMemory(0, n), ct);
                done += n;
                progress?.Report(new DownloadProgress(file, done, total));
            }
            await output.FlushAsync(ct);
        }
        long size = new FileInfo(incomplete).Length;
        if (total is { } expected && size != expected)
            throw new MechanistException($"'{file}': download incomplete ({size} of {expected} bytes); run again to resume");
        File.Move(incomplete, blob, overwrite: true);
    }

    static void LinkIntoSnapshot(string blob, string snapshotFile)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(snapshotFile)!);
        string relative = Path.GetRelativePath(Path.GetDirectoryName(snapshotFile)!, blob);
        string tmp = snapshotFile + ".link-" + Guid.NewGuid().ToString("N");
        try
        {
            File.CreateSymbolicLink(tmp, relative);
        }
        catch (IOException)
        {
            File.Copy(blob, tmp); // file systems without symbolic links: a copy, as the Python client does
        }
        File.Move(tmp, snapshotFile, overwrite: true);
    }

    async Task<HttpResponseMessage> SendAsync(HttpMethod method, Uri url, long? rangeStart, bool followRedirects, CancellationToken ct)
    {
        var original = url;
        for (int hop = 0; ; hop++)
        {
            using var request = new HttpRequestMessage(method, url);
            // The token goes only to the hub itself, never to the storage host a redirect points at.
            if (_token != null && url.Host == original.Host) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _token);
            if (rangeStart is { } r) request.Headers.Range = new RangeHeaderValue(r, null);
            HttpResponseMessage response;
            try { response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct); }
            catch (HttpRequestException e) { throw new MechanistException($"cannot reach {url.GetLeftPart(UriPartial.Authority)}: {e.Message} (use --offline to use only the local cache)"); }
            if (!followRedirects || !IsRedirect(response.StatusCode) || response.Headers.Location == null) return response;
            if (hop >= 10) throw new MechanistException($"too many redirects for {original}");
            url = new Uri(url, response.Headers.Location);
            response.Dispose();
        }
    }

    static bool IsRedirect(HttpStatusCode s) => (int)s is 301 or 302 or 303 or 307 or 308;

    static string? Header(HttpResponseMessage r, string name) =>
        r.Headers.TryGetValues(name, out var v) ? v.FirstOrDefault()
        : r.Content.Headers.TryGetValues(name, out var c) ? c.FirstOrDefault() : null;

    /// <inheritdoc/>
    public void Dispose() => _http.Dispose();
}
