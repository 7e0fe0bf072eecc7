using System.Text.Json;
using Mechanist.IO;
using Mechanist.Reporting;
using Microsoft.Data.Sqlite;

namespace Mechanist.Features;

/// <summary>
/// A feature store: one SQLite file holding, for every feature of a dictionary, its counts, histogram, logit effects,
/// top and sampled examples, automatic label and the user's labels and explanations. A build shard's state is a store
/// too (so a killed build resumes from it, and shards merge by reading stores). Stores are written whole to a temporary
/// file and renamed into place; label edits are SQLite transactions. Queries are by (layer, feature) and by text.
/// </summary>
public sealed class FeatureStore : IFeatureStore
{
    const int SchemaVersion = 1;

    FeatureStore(string path, FeatureStoreInfo info) { Path = path; Info = info; }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>What it holds.</summary>
    public FeatureStoreInfo Info { get; }

    static SqliteConnection Connect(string path, SqliteOpenMode mode)
    {
        var c = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Mode = mode, Pooling = false }.ToString());
        c.Open();
        return c;
    }

    static readonly string[] RequiredTables = { "meta", "vocab", "layers", "features", "examples", "labels" };

    /// <summary>Opens a store; a clear error for a missing file or one that is not a feature store.</summary>
    public static FeatureStore Open(string path)
    {
        if (!File.Exists(path)) throw new MechanistException($"{path}: feature store not found (build one with: mechanist features build)");
        return new FeatureStore(path, ReadInfo(path));
    }

    /// <summary>Reads only the meta row.</summary>
    public static FeatureStoreInfo ReadInfo(string path)
    {
        try
        {
            using var c = Connect(path, SqliteOpenMode.ReadOnly);
            string? Meta(string key)
            {
                using var cmd = c.CreateCommand();
                cmd.CommandText = "SELECT value FROM meta WHERE key = $k";
                cmd.Parameters.AddWithValue("$k", key);
                return cmd.ExecuteScalar() as string;
            }
            if (Meta("schema") is not { } schema || schema != SchemaVersion.ToString()) throw new MechanistException($"{path}: not a Mechanist feature store (schema {SchemaVersion})");
            var tables = new HashSet<string>(StringComparer.Ordinal);
            using (var list = c.CreateCommand())
            {
                list.CommandText = "SELECT name FROM sqlite_master WHERE type = 'table'";
                using var rows = list.ExecuteReader();
                while (rows.Read()) tables.Add(rows.Text("name"));
            }
            var missing = RequiredTables.Where(t => !tables.Contains(t)).ToList();
            if (missing.Count > 0) throw new MechanistException($"{path}: corrupt feature store: table(s) {string.Join(", ", missing)} missing (rebuild it with mechanist features build)");
            return JsonSerializer.Deserialize<FeatureStoreInfo>(Meta("info") ?? "null", JsonFormat.Options) ?? throw new JsonException("no info");
        }
        catch (SqliteException e) { throw new MechanistException($"{path}: not a feature store ({e.Message.Split('\n')[0]})"); }
        catch (JsonException e) { throw new MechanistException($"{path}: corrupt feature store meta ({e.Message})"); }
    }

    /// <summary>
    /// Writes a whole store atomically: <paramref name="sketches"/> (one per dictionary layer), their effects, the vocabulary
    /// strings, automatic labels, and <paramref name="labels"/> (user labels and explanations carried over).
    /// </summary>
    public static void Write(string path, FeatureStoreInfo info, IReadOnlyList<FeatureSketch> sketches, IReadOnlyList<FeatureEffects> effects, string[] vocab,
        IReadOnlyList<(int LayerIndex, int Feature, string? Label, string? Explanation, string Updated)>? labels = null)
    {
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        string tmp = System.IO.Path.Combine(dir, AtomicFile.TempName(path));
        try
        {
            using (var c = Connect(tmp, SqliteOpenMode.ReadWriteCreate))
            {
                Exec(c, "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;");
                Exec(c, """
                    CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                    CREATE TABLE vocab(id INTEGER PRIMARY KEY, text TEXT NOT NULL);
                    CREATE TABLE layers(layer_index INTEGER PRIMARY KEY, tokens INTEGER NOT NULL);
                    CREATE TABLE features(layer_index INTEGER, feature INTEGER, count INTEGER, sum REAL, max REAL, histogram TEXT,
                        top_logits TEXT, bottom_logits TEXT, decoder_norms TEXT, auto_label TEXT, search TEXT, PRIMARY KEY(layer_index, feature)) WITHOUT ROWID;
                    CREATE TABLE examples(layer_index INTEGER, feature INTEGER, kind INTEGER, interval INTEGER, rank INTEGER, text INTEGER, position INTEGER,
                        activation REAL, hash INTEGER, start INTEGER, ids TEXT, acts TEXT);
                    CREATE TABLE labels(layer_index INTEGER, feature INTEGER, label TEXT, explanation TEXT, updated TEXT, PRIMARY KEY(layer_index, feature));
                    CREATE TABLE similar(layer_index INTEGER, feature INTEGER, features TEXT, PRIMARY KEY(layer_index, feature)) WITHOUT ROWID;
                    """);
                using var tx = c.BeginTransaction();
                Insert(c, "INSERT INTO meta VALUES ($a, $b)", ("schema", SchemaVersion.ToString()));
                Insert(c, "INSERT INTO meta VALUES ($a, $b)", ("info", JsonFormat.Serialize(info)));
                using (var cmd = Prepared(c, "INSERT INTO vocab VALUES ($a, $b)", 2))
                    for (int i = 0; i < vocab.Length; i++) Run(cmd, (long)i, vocab[i]);
                using var feat = new SqliteRowWriter(c, "INSERT INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
                using var ex = new SqliteRowWriter(c, "INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
                using var layer = Prepared(c, "INSERT INTO layers VALUES ($a, $b)", 2);
                using var similar = Prepared(c, "INSERT INTO similar VALUES ($a, $b, $c)", 3);
                for (int li = 0; li < sketches.Count; li++)
                {
                    var s = sketches[li]; var eff = effects[li];
                    Run(layer, (long)li, s.Tokens);
                    for (int f = 0; f < s.DDict; f++)
                    {
                        var top = s.Top[f] ?? new List<FeatureExample>();
                        string auto = FeatureLabels.Auto(top, eff.TopLogits[f], vocab);
                        string search = FeatureLabels.SearchText(top, auto, vocab);
                        feat.Int(1, li).Int(2, f).Int(3, s.Count[f]).Real(4, s.Sum[f]).Real(5, s.Max[f])
                            .JsonArray(6, s.Histogram.AsSpan(f * FeatureSketch.HistogramBins, FeatureSketch.HistogramBins))
                            .Text(7, JsonFormat.Serialize(eff.TopLogits[f])).Text(8, JsonFormat.Serialize(eff.BottomLogits[f]))
                            .Text(9, eff.DecoderNorms is null ? null : JsonSerializer.Serialize(eff.DecoderNorms[f])).Text(10, auto).Text(11, search).Run();
                        if (eff.Similar?[f] is { Length: > 0 } near) Run(similar, (long)li, (long)f, JsonFormat.Serialize(near));
                        for (int r = 0; r < top.Count; r++) Example(ex, li, f, 0, -1, r, top[r]);
                        for (int i = 0; i < FeatureSketch.Intervals; i++)
                            if (s.Sampled[f * FeatureSketch.Intervals + i] is { } sample)
                                for (int r = 0; r < sample.Count; r++) Example(ex, li, f, 1, i, r, sample[r]);
                    }
                }
                if (labels is not null)
                    using (var lab = Prepared(c, "INSERT INTO labels VALUES ($a, $b, $c, $d, $e)", 5))
                        foreach (var l in labels) Run(lab, (long)l.LayerIndex, (long)l.Feature, l.Label, l.Explanation, l.Updated);
                tx.Commit();
                Exec(c, "CREATE INDEX examples_feature ON examples(layer_index, feature, kind, interval, rank);");
            }
            AtomicFile.Replace(tmp, path);
        }
        finally { if (File.Exists(tmp)) File.Delete(tmp); }
    }

    /// <summary>
    /// Writes <paramref name="source"/>'s contents to <paramref name="path"/> under another <paramref name="info"/> and with
    /// <paramref name="labels"/> (a one-shard merge: a file copy, not a rebuild), atomically.
    /// </summary>
    public static void CopyAs(string source, string path, FeatureStoreInfo info, IReadOnlyList<(int LayerIndex, int Feature, string? Label, string? Explanation, string Updated)>? labels)
    {
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        string tmp = System.IO.Path.Combine(dir, AtomicFile.TempName(path));
        try
        {
            File.Copy(source, tmp);
            using (var c = Connect(tmp, SqliteOpenMode.ReadWrite))
            {
                using var tx = c.BeginTransaction();
                using (var cmd = Prepared(c, "UPDATE meta SET value = $b WHERE key = $a", 2)) Run(cmd, "info", JsonFormat.Serialize(info));
                Exec(c, "DELETE FROM labels");
                if (labels is not null)
                    using (var lab = Prepared(c, "INSERT INTO labels VALUES ($a, $b, $c, $d, $e)", 5))
                        foreach (var l in labels) Run(lab, (long)l.LayerIndex, (long)l.Feature, l.Label, l.Explanation, l.Updated);
                tx.Commit();
            }
            AtomicFile.Replace(tmp, path);
        }
        finally { if (File.Exists(tmp)) File.Delete(tmp); }
    }

    static void Example(SqliteRowWriter row, int li, int f, int kind, int interval, int rank, FeatureExample e) =>
        row.Int(1, li).Int(2, f).Int(3, kind).Int(4, interval).Int(5, rank).Int(6, e.Text).Int(7, e.Position).Real(8, e.Activation)
            .Int(9, unchecked((long)e.Hash)).Int(10, e.Start).JsonArray(11, e.Ids).JsonArray(12, e.Acts).Run();

    /// <summary>Whether a table exists (tables added after a store was built, as <c>similar</c>, are optional).</summary>
    static bool HasTable(SqliteConnection c, string name)
    {
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $n";
        cmd.Parameters.AddWithValue("$n", name);
        return Convert.ToInt64(cmd.ExecuteScalar()) > 0;
    }

    static void Exec(SqliteConnection c, string sql) { using var cmd = c.CreateCommand(); cmd.CommandText = sql; cmd.ExecuteNonQuery(); }

    static void Insert(SqliteConnection c, string sql, (string A, string B) row) { using var cmd = Prepared(c, sql, 2); Run(cmd, row.A, row.B); }

    static SqliteCommand Prepared(SqliteConnection c, string sql, int n)
    {
        var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        for (int i = 0; i < n; i++) cmd.Parameters.Add(new SqliteParameter("$" + (char)('a' + i), null));
        return cmd;
    }

    static void Run(SqliteCommand cmd, params object?[] values)
    {
        for (int i = 0; i < values.Length; i++) cmd.Parameters[i].Value = values[i] ?? DBNull.Value;
        cmd.ExecuteNonQuery();
    }

    /// <summary>The vocabulary strings.</summary>
    public string[] Vocab()
    {
        using var c = Connect(Path, SqliteOpenMode.ReadOnly);
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT text FROM vocab ORDER BY id";
        var list = new List<string>();
        using var r = cmd.ExecuteReader();
        while (r.Read()) list.Add(r.Text("text"));
        return list.ToArray();
    }

    /// <summary>Reads the sketches and effects back (to resume a build or merge shards).</summary>
    public (FeatureSketch[] Sketches, FeatureEffects[] Effects) ReadSketches()
    {
        using var c = Connect(Path, SqliteOpenMode.ReadOnly);
        var sketches = Enumerable.Range(0, Info.Layers.Length).Select(li => new FeatureSketch(li, Info.DDict, Info.Settings)).ToArray();
        var top = Enumerable.Range(0, Info.Layers.Length).Select(_ => new TokenValue[Info.DDict][]).ToArray();
        var bottom = Enumerable.Range(0, Info.Layers.Length).Select(_ => new TokenValue[Info.DDict][]).ToArray();
        var norms = Enumerable.Range(0, Info.Layers.Length).Select(_ => (float[][]?)null).ToArray();
        using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = "SELECT layer_index, tokens FROM layers";
            using var r = cmd.ExecuteReader();
            while (r.Read()) sketches[r.Int("layer_index")].Tokens = r.Long("tokens");
        }
        using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = "SELECT layer_index, feature, count, sum, max, histogram, top_logits, bottom_logits, decoder_norms FROM features";
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                int li = r.Int("layer_index"), f = r.Int("feature"); var s = sketches[li];
                s.Count[f] = r.Long("count"); s.Sum[f] = r.Double("sum"); s.Max[f] = (float)r.Double("max");
                JsonSerializer.Deserialize<long[]>(r.Text("histogram"))!.CopyTo(s.Histogram, f * FeatureSketch.HistogramBins);
                top[li][f] = JsonSerializer.Deserialize<TokenValue[]>(r.Text("top_logits"), JsonFormat.Options)!;
                bottom[li][f] = JsonSerializer.Deserialize<TokenValue[]>(r.Text("bottom_logits"), JsonFormat.Options)!;
                if (r.TextOrNull("decoder_norms") is { } dn) (norms[li] ??= new float[Info.DDict][])[f] = JsonSerializer.Deserialize<float[]>(dn)!;
            }
        }
        using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = "SELECT layer_index, feature, kind, interval, text, position, activation, hash, start, ids, acts FROM examples ORDER BY layer_index, feature, kind, interval, rank";
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                var s = sketches[r.Int("layer_index")]; int f = r.Int("feature");
                var e = ReadExample(r);
                if (r.Int("kind") == 0) (s.Top[f] ??= new List<FeatureExample>()).Add(e);
                else (s.Sampled[f * FeatureSketch.Intervals + r.Int("interval")] ??= new List<FeatureExample>()).Add(e);
            }
        }
        var similar = Enumerable.Range(0, Info.Layers.Length).Select(_ => (SimilarFeature[][]?)null).ToArray();
        if (HasTable(c, "similar"))
        {
            using var cmd = c.CreateCommand();
            cmd.CommandText = "SELECT layer_index, feature, features FROM similar";
            using var r = cmd.ExecuteReader();
            while (r.Read())
                (similar[r.Int("layer_index")] ??= new SimilarFeature[Info.DDict][])[r.Int("feature")] = JsonSerializer.Deserialize<SimilarFeature[]>(r.Text("features"), JsonFormat.Options)!;
        }
        return (sketches, Enumerable.Range(0, sketches.Length).Select(li => new FeatureEffects(top[li], bottom[li], norms[li], similar[li])).ToArray());
    }

    static FeatureExample ReadExample(SqliteDataReader r) =>
        new(r.Long("text"), r.Int("position"), (float)r.Double("activation"), unchecked((ulong)r.Long("hash")), r.Int("start"),
            JsonSerializer.Deserialize<long[]>(r.Text("ids"))!, JsonSerializer.Deserialize<float[]>(r.Text("acts"))!);

    /// <summary>The user labels and explanations (carried over when a store is rebuilt).</summary>
    public List<(int LayerIndex, int Feature, string? Label, string? Explanation, string Updated)> Labels()
    {
        using var c = Connect(Path, SqliteOpenMode.ReadOnly);
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT layer_index, feature, label, explanation, updated FROM labels";
        using var r = cmd.ExecuteReader();
        var list = new List<(int, int, string?, string?, string)>();
        while (r.Read()) list.Add((r.Int("layer_index"), r.Int("feature"), r.TextOrNull("label"), r.TextOrNull("explanation"), r.Text("updated")));
        return list;
    }

    /// <summary>Parses "L:F" (L the model layer; for an SAE the layer may be left out: "F").</summary>
    public (int LayerIndex, int Feature) Resolve(string spec)
    {
        var (layer, feature) = FeatureStores.ParseSpec(spec, Info.Layers);
        return Check(layer, feature);
    }

    /// <summary>The dictionary layer index of model layer <paramref name="layer"/>, with the feature checked.</summary>
    public (int LayerIndex, int Feature) Check(int layer, int feature)
    {
        int li = Array.IndexOf(Info.Layers, layer);
        if (li < 0) throw new MechanistException($"the dictionary has no layer {layer} (it has {string.Join(", ", Info.Layers)})");
        if (feature < 0 || feature >= Info.DDict) throw new MechanistException($"feature {feature} is out of range (layer {layer} has {Info.DDict})");
        return (li, feature);
    }

    const string HitColumns = "f.layer_index, f.feature, f.auto_label, l.label, l.explanation, f.count, f.sum, f.max, y.tokens";
    const string HitFrom = "features f JOIN layers y ON y.layer_index = f.layer_index LEFT JOIN labels l ON l.layer_index = f.layer_index AND l.feature = f.feature";

    FeatureHit ReadHit(SqliteDataReader r)
    {
        int li = r.Int("layer_index");
        string auto = r.Text("auto_label"); string? user = r.TextOrNull("label");
        long count = r.Long("count"), tokens = r.Long("tokens");
        return new FeatureHit(li, Info.Layers[li], r.Int("feature"), string.IsNullOrWhiteSpace(user) ? auto : user, auto, user, r.TextOrNull("explanation"),
            count, tokens, tokens == 0 ? 0 : (double)count / tokens, (float)r.Double("max"), count == 0 ? 0 : r.Double("sum") / count);
    }

    /// <summary>
    /// Features matching <paramref name="query"/>: "L:F" names one; otherwise features whose labels, explanation or top tokens contain
    /// the text (case-insensitive); an empty query lists the most frequent. Optionally within one model layer.
    /// </summary>
    public List<FeatureHit> Search(string? query, int limit = 50, int? layer = null)
    {
        limit = Math.Clamp(limit, 1, 1000);
        using var c = Connect(Path, SqliteOpenMode.ReadOnly);
        using var cmd = c.CreateCommand();
        var where = new List<string>();
        query = query?.Trim();
        if (!string.IsNullOrEmpty(query) && System.Text.RegularExpressions.Regex.IsMatch(query, @"^\d+\s*[:/]\s*\d+$"))
        {
            var (li, f) = Resolve(query);
            where.Add("f.layer_index = $li AND f.feature = $f");
            cmd.Parameters.AddWithValue("$li", li); cmd.Parameters.AddWithValue("$f", f);
        }
        else if (!string.IsNullOrEmpty(query))
        {
            where.Add("(f.search LIKE $q ESCAPE '\\' OR l.label LIKE $q ESCAPE '\\' OR l.explanation LIKE $q ESCAPE '\\')");
            cmd.Parameters.AddWithValue("$q", "%" + query.ToLowerInvariant().Replace("\\", "\\\\").Replace("%", "\\%").Replace("_", "\\_") + "%");
        }
        if (layer is { } ml)
        {
            int li = Array.IndexOf(Info.Layers, ml);
            if (li < 0) throw new MechanistException($"the dictionary has no layer {ml} (it has {string.Join(", ", Info.Layers)})");
            where.Add("f.layer_index = $layer"); cmd.Parameters.AddWithValue("$layer", li);
        }
        bool text = !string.IsNullOrEmpty(query) && where.Count > 0 && where[0].StartsWith("(f.search", StringComparison.Ordinal);
        // A text query ranks every match by relevance first, so it reads them all (the LIKE filter keeps them few).
        cmd.CommandText = $"SELECT {HitColumns} FROM {HitFrom} {(where.Count > 0 ? "WHERE " + string.Join(" AND ", where) : "")} ORDER BY f.count DESC, f.layer_index, f.feature LIMIT {(text ? MaxRanked : limit)}";
        var hits = new List<FeatureHit>();
        using (var r = cmd.ExecuteReader()) while (r.Read()) hits.Add(ReadHit(r));
        if (!text) return hits;
        var relevance = Relevance(c, query!, hits);
        string q = query!.ToLowerInvariant();
        return hits.OrderByDescending(h => string.Equals(h.UserLabel?.Trim(), query, StringComparison.OrdinalIgnoreCase))
            .ThenByDescending(h => relevance.GetValueOrDefault((h.LayerIndex, h.Feature)))
            .ThenByDescending(h => h.Label.ToLowerInvariant().Contains(q))
            .ThenByDescending(h => h.Count).ThenBy(h => h.LayerIndex).ThenBy(h => h.Feature)
            .Take(limit).ToList();
    }

    /// <summary>Text matches ranked by relevance at most (more are cut by frequency first).</summary>
    const int MaxRanked = 20_000;

    /// <summary>
    /// The share of each feature's top-example activation that sits on a token that is the query (weight 1) or right
    /// after it (weight ½), times the feature's largest activation, damped by how many of its top examples do (n / (n + 2))
    /// and by how dense it is (1 − firing frequency): a strong feature whose top examples are the query (or what follows it)
    /// comes first; a weak one that fires on every name, a dense one, or one stray firing next to the query comes later.
    /// </summary>
    Dictionary<(int, int), double> Relevance(SqliteConnection c, string query, IReadOnlyList<FeatureHit> hits)
    {
        string wanted = NormalizeToken(query);
        var ids = new HashSet<long>();
        using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = "SELECT id, text FROM vocab";
            using var r = cmd.ExecuteReader();
            while (r.Read()) if (NormalizeToken(r.Text("text")) == wanted) ids.Add(r.Long("id"));
        }
        if (ids.Count == 0 || hits.Count == 0) return new();
        var candidates = hits.Select(h => (h.LayerIndex, h.Feature)).ToHashSet();
        var on = new Dictionary<(int, int), double>(); var all = new Dictionary<(int, int), double>(); var count = new Dictionary<(int, int), int>();
        var max = new Dictionary<(int, int), double>();
        using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = "SELECT layer_index, feature, position, start, activation, ids FROM examples WHERE kind = 0";
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                var key = (r.Int("layer_index"), r.Int("feature"));
                if (!candidates.Contains(key)) continue;
                double act = Math.Max(0, r.Double("activation"));
                int at = (int)(r.Long("position") - r.Long("start"));
                var tokens = JsonSerializer.Deserialize<long[]>(r.Text("ids")) ?? Array.Empty<long>();
                double weight = at >= 0 && at < tokens.Length && ids.Contains(tokens[at]) ? 1 : at >= 1 && at - 1 < tokens.Length && ids.Contains(tokens[at - 1]) ? 0.5 : 0;
                all[key] = all.GetValueOrDefault(key) + act;
                max[key] = Math.Max(max.GetValueOrDefault(key), act);
                if (weight == 0) continue;
                on[key] = on.GetValueOrDefault(key) + weight * act;
                count[key] = count.GetValueOrDefault(key) + 1;
            }
        }
        var density = hits.ToDictionary(h => (h.LayerIndex, h.Feature), h => h.Frequency);
        return on.Where(kv => all[kv.Key] > 0).ToDictionary(kv => kv.Key,
            kv => kv.Value / all[kv.Key] * max[kv.Key] * count[kv.Key] / (count[kv.Key] + 2.0) * (1 - density.GetValueOrDefault(kv.Key)));
    }

    /// <summary>A token's text as a word: without the leading space markers of byte-level and SentencePiece vocabularies, lower case.</summary>
    static string NormalizeToken(string token) => token.Replace('\u0120', ' ').Replace('\u2581', ' ').Trim().ToLowerInvariant();

    /// <summary>The shown label (the user's, else the automatic one) of each (model layer, feature) that exists, keyed "L:F".</summary>
    public Dictionary<string, string> LabelsOf(IReadOnlyList<(int Layer, int Feature)> features)
    {
        var result = new Dictionary<string, string>();
        using var c = Connect(Path, SqliteOpenMode.ReadOnly);
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT f.auto_label, l.label FROM features f LEFT JOIN labels l ON l.layer_index = f.layer_index AND l.feature = f.feature WHERE f.layer_index = $li AND f.feature = $f";
        var li = cmd.Parameters.Add("$li", SqliteType.Integer); var fp = cmd.Parameters.Add("$f", SqliteType.Integer);
        foreach (var (layer, feature) in features)
        {
            int index = Array.IndexOf(Info.Layers, layer);
            if (index < 0) continue;
            li.Value = index; fp.Value = feature;
            using var r = cmd.ExecuteReader();
            if (r.Read()) result[$"{layer}:{feature}"] = string.IsNullOrWhiteSpace(r.TextOrNull("label")) ? r.Text("auto_label") : r.Text("label");
        }
        return result;
    }

    /// <summary>Every feature that fired at least once, as (model layer, feature).</summary>
    public List<(int Layer, int Feature)> Fired()
    {
        using var c = Connect(Path, SqliteOpenMode.ReadOnly);
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT layer_index, feature FROM features WHERE count > 0 ORDER BY layer_index, feature";
        using var r = cmd.ExecuteReader();
        var list = new List<(int, int)>();
        while (r.Read()) list.Add((Info.Layers[r.Int("layer_index")], r.Int("feature")));
        return list;
    }

    /// <summary>A token id's text from the store's vocabulary (looked up once per id; "#id" for an id the vocabulary lacks).</summary>
    static Func<long, string> TokenTexts(SqliteConnection c)
    {
        var vocab = new Dictionary<long, string>();
        return id =>
        {
            if (vocab.TryGetValue(id, out var s)) return s;
            using var cmd = c.CreateCommand();
            cmd.CommandText = "SELECT text FROM vocab WHERE id = $id";
            cmd.Parameters.AddWithValue("$id", id);
            return vocab[id] = cmd.ExecuteScalar() as string ?? $"#{id}";
        };
    }

    /// <summary>Everything about one feature (model layer, feature index).</summary>
    public FeatureDashboard Dashboard(int layer, int feature)
    {
        var (li, f) = Check(layer, feature);
        using var c = Connect(Path, SqliteOpenMode.ReadOnly);
        var Tok = TokenTexts(c);
        FeatureHit hit; long[] hist; TokenValue[] topLogits, bottomLogits; float[]? norms;
        using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = $"SELECT {HitColumns}, f.histogram, f.top_logits, f.bottom_logits, f.decoder_norms FROM {HitFrom} WHERE f.layer_index = $li AND f.feature = $f";
            cmd.Parameters.AddWithValue("$li", li); cmd.Parameters.AddWithValue("$f", f);
            using var r = cmd.ExecuteReader();
            if (!r.Read()) throw new MechanistException($"{Path}: feature {layer}:{feature} is missing from the store");
            hit = ReadHit(r);
            hist = JsonSerializer.Deserialize<long[]>(r.Text("histogram"))!;
            topLogits = JsonSerializer.Deserialize<TokenValue[]>(r.Text("top_logits"), JsonFormat.Options)!;
            bottomLogits = JsonSerializer.Deserialize<TokenValue[]>(r.Text("bottom_logits"), JsonFormat.Options)!;
            norms = r.TextOrNull("decoder_norms") is { } dn ? JsonSerializer.Deserialize<float[]>(dn) : null;
        }
        var top = new List<ShownExample>(); var sampled = new Dictionary<int, List<ShownExample>>();
        using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = "SELECT kind, interval, text, position, activation, hash, start, ids, acts FROM examples WHERE layer_index = $li AND feature = $f ORDER BY kind, interval DESC, rank";
            cmd.Parameters.AddWithValue("$li", li); cmd.Parameters.AddWithValue("$f", f);
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                var e = ReadExample(r);
                var shown = new ShownExample(e.Text, e.Position, e.Activation, e.Ids.Select(Tok).ToArray(), e.Acts, e.Position - e.Start);
                int interval = r.Int("interval");
                if (r.Int("kind") == 0) top.Add(shown);
                else (sampled.TryGetValue(interval, out var list) ? list : sampled[interval] = new List<ShownExample>()).Add(shown);
            }
        }
        var bins = Enumerable.Range(0, FeatureSketch.HistogramBins).Where(b => hist[b] > 0)
            .Select(b => new HistogramBin(FeatureSketch.BinLow(b), b + 1 == FeatureSketch.HistogramBins ? double.PositiveInfinity : FeatureSketch.BinLow(b + 1), hist[b])).ToArray();
        var intervals = sampled.OrderByDescending(kv => kv.Key).Select(kv =>
        {
            int i = kv.Key;
            long count = Enumerable.Range(0, FeatureSketch.HistogramBins).Where(b => IntervalOfBin(b) == i).Sum(b => hist[b]);
            return new ExampleInterval(FeatureSketch.IntervalLow(i), i + 1 == FeatureSketch.Intervals ? double.PositiveInfinity : FeatureSketch.IntervalLow(i + 1), count, kv.Value.ToArray());
        }).ToArray();
        SimilarFeature[] near = Array.Empty<SimilarFeature>();
        if (HasTable(c, "similar"))
        {
            using var cmd = c.CreateCommand();
            cmd.CommandText = "SELECT features FROM similar WHERE layer_index = $li AND feature = $f";
            cmd.Parameters.AddWithValue("$li", li); cmd.Parameters.AddWithValue("$f", f);
            if (cmd.ExecuteScalar() is string json) near = JsonSerializer.Deserialize<SimilarFeature[]>(json, JsonFormat.Options)!;
        }
        return new FeatureDashboard(hit, Info.DictionaryKind, bins, topLogits, bottomLogits, norms, top.ToArray(), intervals, near);
    }

    /// <summary>The interval a histogram bin falls in (four quarter-octave bins per octave; the open ends agree).</summary>
    static int IntervalOfBin(int b) => Math.Clamp(b / 4, 0, FeatureSketch.Intervals - 1);

    /// <summary>Sets (or with null/empty clears) the user's label of a feature, in one transaction.</summary>
    public void SetLabel(int layer, int feature, string? label) => Upsert(layer, feature, "label", label is null ? null : Clean(label, 200));

    /// <summary>Stores an explanation of a feature, in one transaction.</summary>
    public void SetExplanation(int layer, int feature, string? explanation) => Upsert(layer, feature, "explanation", explanation is null ? null : Clean(explanation, 2000));

    /// <summary>
    /// Up to <paramref name="count"/> example windows (token ids and their texts) of any features of model layer <paramref name="layer"/>,
    /// one per text, in a seeded order: candidate contexts for scoring another feature.
    /// </summary>
    public List<(long[] Ids, string[] Tokens)> Windows(int layer, int count, int seed = 0)
    {
        var (li, _) = Check(layer, 0);
        using var c = Connect(Path, SqliteOpenMode.ReadOnly);
        var byText = new Dictionary<long, long[]>();
        using (var cmd = c.CreateCommand())
        {
            cmd.CommandText = "SELECT kind, interval, text, position, activation, hash, start, ids, acts FROM examples WHERE layer_index = $li ORDER BY feature, kind, interval DESC, rank LIMIT 20000";
            cmd.Parameters.AddWithValue("$li", li);
            using var r = cmd.ExecuteReader();
            while (r.Read()) { var e = ReadExample(r); byText.TryAdd(e.Text, e.Ids); }
        }
        var rng = new Random(seed);
        var picked = byText.OrderBy(kv => kv.Key).Select(kv => kv.Value).OrderBy(_ => rng.Next()).Take(count).ToList();
        var Tok = TokenTexts(c);
        return picked.Select(ids => (ids, ids.Select(Tok).ToArray())).ToList();
    }

    const string ScoresTable = "CREATE TABLE IF NOT EXISTS scores(layer_index INTEGER, feature INTEGER, method TEXT, balanced_accuracy REAL, positives INTEGER, negatives INTEGER, " +
        "true_positives INTEGER, true_negatives INTEGER, explanation TEXT, model TEXT, updated TEXT, PRIMARY KEY(layer_index, feature, method))";

    /// <summary>Stores (or replaces) a feature's score for its method; stores built before scores existed gain the table.</summary>
    public void SetScore(int layer, int feature, FeatureScore score)
    {
        var (li, f) = Check(layer, feature);
        using var c = Connect(Path, SqliteOpenMode.ReadWrite);
        using var tx = c.BeginTransaction();
        using (var create = c.CreateCommand()) { create.Transaction = tx; create.CommandText = ScoresTable; create.ExecuteNonQuery(); }
        using var cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = "INSERT OR REPLACE INTO scores VALUES ($li, $f, $m, $ba, $p, $n, $tp, $tn, $e, $model, $u)";
        cmd.Parameters.AddWithValue("$li", li); cmd.Parameters.AddWithValue("$f", f); cmd.Parameters.AddWithValue("$m", score.Method);
        cmd.Parameters.AddWithValue("$ba", score.BalancedAccuracy); cmd.Parameters.AddWithValue("$p", score.Positives); cmd.Parameters.AddWithValue("$n", score.Negatives);
        cmd.Parameters.AddWithValue("$tp", score.TruePositives); cmd.Parameters.AddWithValue("$tn", score.TrueNegatives);
        cmd.Parameters.AddWithValue("$e", Clean(score.Explanation, 2000) ?? ""); cmd.Parameters.AddWithValue("$model", score.Model);
        cmd.Parameters.AddWithValue("$u", DateTime.UtcNow.ToString("o"));
        cmd.ExecuteNonQuery();
        tx.Commit();
    }

    /// <inheritdoc/>
    public FeatureScore[] Scores(int layer, int feature)
    {
        var (li, f) = Check(layer, feature);
        using var c = Connect(Path, SqliteOpenMode.ReadOnly);
        using (var exists = c.CreateCommand())
        {
            exists.CommandText = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'scores'";
            if (Convert.ToInt64(exists.ExecuteScalar()) == 0) return Array.Empty<FeatureScore>();
        }
        using var cmd = c.CreateCommand();
        cmd.CommandText = "SELECT method, balanced_accuracy, positives, negatives, true_positives, true_negatives, explanation, model FROM scores WHERE layer_index = $li AND feature = $f ORDER BY method";
        cmd.Parameters.AddWithValue("$li", li); cmd.Parameters.AddWithValue("$f", f);
        using var r = cmd.ExecuteReader();
        var list = new List<FeatureScore>();
        while (r.Read())
            list.Add(new FeatureScore(r.GetString(0), r.GetDouble(1), r.GetInt32(2), r.GetInt32(3), r.GetInt32(4), r.GetInt32(5), r.GetString(6), r.GetString(7)));
        return list.ToArray();
    }

    static string? Clean(string s, int max)
    {
        s = new string(s.Where(ch => !char.IsControl(ch) || ch == '\n').ToArray()).Trim();
        if (s.Length > max) throw new MechanistException($"a label or explanation may have at most {max} characters");
        return s.Length == 0 ? null : s;
    }

    void Upsert(int layer, int feature, string column, string? value)
    {
        var (li, f) = Check(layer, feature);
        using var c = Connect(Path, SqliteOpenMode.ReadWrite);
        using var tx = c.BeginTransaction();
        using var cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = $"INSERT INTO labels(layer_index, feature, {column}, updated) VALUES ($li, $f, $v, $u) ON CONFLICT(layer_index, feature) DO UPDATE SET {column} = $v, updated = $u";
        cmd.Parameters.AddWithValue("$li", li); cmd.Parameters.AddWithValue("$f", f);
        cmd.Parameters.AddWithValue("$v", (object?)value ?? DBNull.Value); cmd.Parameters.AddWithValue("$u", DateTime.UtcNow.ToString("o"));
        cmd.ExecuteNonQuery();
        tx.Commit();
    }
}

/// <summary>Reads SQLite columns by name, so a query's column order can change without shifting what is read.</summary>
static class SqliteColumns
{
    public static int Int(this SqliteDataReader r, string column) => r.GetInt32(r.GetOrdinal(column));
    public static long Long(this SqliteDataReader r, string column) => r.GetInt64(r.GetOrdinal(column));
    public static double Double(this SqliteDataReader r, string column) => r.GetDouble(r.GetOrdinal(column));
    public static string Text(this SqliteDataReader r, string column) => r.GetString(r.GetOrdinal(column));
    public static string? TextOrNull(this SqliteDataReader r, string column) => r.IsDBNull(r.GetOrdinal(column)) ? null : r.GetString(r.GetOrdinal(column));
}
