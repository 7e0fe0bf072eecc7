using System.Text.Json;
using Mechanist.IO;
using Microsoft.Data.Sqlite;

namespace Mechanist.Tests.IO;

/// <summary>The bulk row writer stores what the ordinary parameterised insert stores, JSON arrays included.</summary>
public sealed class SqliteRowWriterTests
{
    [Fact]
    public void RowsAndJsonArraysReadBackAsSystemTextJsonWritesThem()
    {
        var floats = new[] { 0f, -0f, 1f, 0.1f, 1f / 3, 1e-5f, 1e-45f, 3.4028235e38f, -2.5e-8f, 123456.79f, 7e10f, 0.30000001f };
        var rng = new Random(7);
        var random = Enumerable.Range(0, 2000).Select(_ => (float)(rng.NextDouble() * Math.Pow(10, rng.Next(-12, 12)) * (rng.Next(2) * 2 - 1))).ToArray();
        var longs = new[] { 0L, -1, 42, long.MaxValue, long.MinValue, 50256 };
        using var c = new SqliteConnection("Data Source=:memory:");
        c.Open();
        using (var create = c.CreateCommand()) { create.CommandText = "CREATE TABLE t(a INTEGER, b REAL, c TEXT, d TEXT, e TEXT, f TEXT)"; create.ExecuteNonQuery(); }
        using (var w = new SqliteRowWriter(c, "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)"))
        {
            w.Int(1, -7).Real(2, 0.25).Text(3, "naïve ✓").JsonArray(4, floats).JsonArray(5, longs).JsonArray(6, random).Run();
            w.Int(1, 8).Real(2, -1e300).Text(3, null).JsonArray(4, ReadOnlySpan<float>.Empty).JsonArray(5, ReadOnlySpan<long>.Empty).JsonArray(6, new float[] { 2f }).Run();
        }
        using var q = c.CreateCommand();
        q.CommandText = "SELECT a, b, c, d, e, f FROM t ORDER BY rowid";
        using var r = q.ExecuteReader();
        Assert.True(r.Read());
        Assert.Equal(-7, r.GetInt64(0));
        Assert.Equal(0.25, r.GetDouble(1));
        Assert.Equal("naïve ✓", r.GetString(2));
        Assert.Equal(JsonSerializer.Serialize(floats), r.GetString(3));
        Assert.Equal(JsonSerializer.Serialize(longs), r.GetString(4));
        Assert.Equal(JsonSerializer.Serialize(random), r.GetString(5));
        Assert.True(r.Read());
        Assert.Equal(-1e300, r.GetDouble(1));
        Assert.True(r.IsDBNull(2));
        Assert.Equal("[]", r.GetString(3));
        Assert.Equal("[]", r.GetString(4));
        Assert.Equal("[2]", r.GetString(5));
        Assert.False(r.Read());
    }

    [Fact]
    public void AFailedStepAndANonFiniteValueAreClearErrors()
    {
        using var c = new SqliteConnection("Data Source=:memory:");
        c.Open();
        using (var create = c.CreateCommand()) { create.CommandText = "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)"; create.ExecuteNonQuery(); }
        using var w = new SqliteRowWriter(c, "INSERT INTO t VALUES (?, ?)");
        w.Int(1, 1).Text(2, "x").Run();
        var duplicate = Assert.Throws<SqliteException>(() => w.Int(1, 1).Text(2, "y").Run());
        Assert.Contains("UNIQUE", duplicate.Message);
        w.Int(1, 2).Text(2, "z").Run();  // the statement is usable again after a failure
        Assert.Throws<ArgumentException>(() => w.JsonArray(2, new[] { float.NaN }));
        Assert.Throws<SqliteException>(() => new SqliteRowWriter(c, "INSERT INTO missing VALUES (?)"));
    }
}
