using System.Buffers.Text;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Mechanist.IO;

/// <summary>
/// One prepared statement run for many rows through SQLite's own bind and step calls, with JSON arrays written as UTF-8 straight
/// into a reused buffer. For bulk writes of hundreds of thousands of rows, where Microsoft.Data.Sqlite's per-execution parameter
/// handling (boxed values, type dispatch per parameter) and a serializer call per array cost several microseconds a row.
/// Parameters are numbered from 1, in the order they appear in the statement.
/// </summary>
internal sealed class SqliteRowWriter : IDisposable
{
    readonly sqlite3 _db;
    readonly sqlite3_stmt _statement;
    byte[] _json = new byte[4096];

    /// <summary>Prepares <paramref name="sql"/> on an open connection.</summary>
    public SqliteRowWriter(SqliteConnection connection, string sql)
    {
        _db = connection.Handle ?? throw new InvalidOperationException("the connection is not open");
        Check(raw.sqlite3_prepare_v2(_db, sql, out _statement));
    }

    /// <summary>Binds an integer.</summary>
    public SqliteRowWriter Int(int index, long value) { Check(raw.sqlite3_bind_int64(_statement, index, value)); return this; }

    /// <summary>Binds a real.</summary>
    public SqliteRowWriter Real(int index, double value) { Check(raw.sqlite3_bind_double(_statement, index, value)); return this; }

    /// <summary>Binds text (NULL for null).</summary>
    public SqliteRowWriter Text(int index, string? value)
    {
        Check(value is null ? raw.sqlite3_bind_null(_statement, index) : raw.sqlite3_bind_text(_statement, index, value));
        return this;
    }

    /// <summary>Binds a JSON array of integers as text (as <c>JsonSerializer</c> writes it: <c>[1,2,3]</c>).</summary>
    public SqliteRowWriter JsonArray(int index, ReadOnlySpan<long> values)
    {
        int n = 0;
        Put((byte)'[', ref n);
        for (int i = 0; i < values.Length; i++)
        {
            if (i > 0) Put((byte)',', ref n);
            int written;
            while (!Utf8Formatter.TryFormat(values[i], _json.AsSpan(n), out written)) Grow();
            n += written;
        }
        Put((byte)']', ref n);
        Check(raw.sqlite3_bind_text(_statement, index, _json.AsSpan(0, n)));
        return this;
    }

    /// <summary>
    /// Binds a JSON array of floats as text, each in its shortest round-trip form (as <c>JsonSerializer</c> writes them); the
    /// values must be finite.
    /// </summary>
    public SqliteRowWriter JsonArray(int index, ReadOnlySpan<float> values)
    {
        int n = 0;
        Put((byte)'[', ref n);
        for (int i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i])) throw new ArgumentException($"{values[i]} has no JSON form", nameof(values));
            if (i > 0) Put((byte)',', ref n);
            int written;
            while (!values[i].TryFormat(_json.AsSpan(n), out written, default, System.Globalization.CultureInfo.InvariantCulture)) Grow();
            n += written;
        }
        Put((byte)']', ref n);
        Check(raw.sqlite3_bind_text(_statement, index, _json.AsSpan(0, n)));
        return this;
    }

    /// <summary>Runs the statement with the values bound and readies it for the next row.</summary>
    public void Run()
    {
        int rc = raw.sqlite3_step(_statement);
        raw.sqlite3_reset(_statement);
        if (rc != raw.SQLITE_DONE) throw new SqliteException($"SQLite error {rc}: {raw.sqlite3_errmsg(_db).utf8_to_string()}", rc);
    }

    /// <inheritdoc/>
    public void Dispose() => _statement.Dispose();

    void Put(byte b, ref int n)
    {
        if (n == _json.Length) Grow();
        _json[n++] = b;
    }

    void Grow() => Array.Resize(ref _json, _json.Length * 2);

    void Check(int rc)
    {
        if (rc != raw.SQLITE_OK) throw new SqliteException($"SQLite error {rc}: {raw.sqlite3_errmsg(_db).utf8_to_string()}", rc);
    }
}
