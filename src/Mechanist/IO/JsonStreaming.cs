using System.Buffers;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Mechanist.IO;

/// <summary>
/// Reads or updates one top-level property of a large JSON object file in a single streaming pass, holding only a
/// buffer and that property in memory (a graph file with saved pins may be hundreds of megabytes).
/// </summary>
public static class JsonStreaming
{
    const int InitialBuffer = 1 << 16;

    /// <summary>The value of top-level <paramref name="property"/> of the JSON object in <paramref name="path"/>, or null when absent.</summary>
    /// <exception cref="MechanistException">The file is not a JSON object.</exception>
    public static JsonNode? ReadTopLevelProperty(string path, string property)
    {
        using var input = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, InitialBuffer);
        var captured = new ArrayBufferWriter<byte>();
        bool found = false;
        using (var capture = new Utf8JsonWriter(captured))
            Pass(path, input, output: null, property, replacement: null, capture, ref found);
        return found ? JsonNode.Parse(captured.WrittenSpan) : null;
    }

    /// <summary>
    /// Rewrites <paramref name="path"/> atomically in one streaming pass with top-level <paramref name="property"/> replaced
    /// by <paramref name="update"/> of its old value (null when absent; the new value is then appended); every other token is
    /// copied as it streams.
    /// </summary>
    /// <exception cref="MechanistException">The file is not a JSON object.</exception>
    public static void UpdateTopLevelProperty(string path, string property, Func<JsonNode?, JsonNode> update)
    {
        AtomicFile.Write(path, output =>
        {
            using var input = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, InitialBuffer);
            using var writer = new Utf8JsonWriter(output, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
            var captured = new ArrayBufferWriter<byte>();
            using var capture = new Utf8JsonWriter(captured);
            bool found = false;
            Pass(path, input, writer, property, w =>
            {
                capture.Flush();
                update(captured.WrittenCount > 0 ? JsonNode.Parse(captured.WrittenSpan) : null).WriteTo(w);
            }, capture, ref found);
            writer.Flush();
        });
    }

    /// <summary>
    /// One pass over the object: tokens go to <paramref name="output"/> (when given), except the value of the top-level
    /// <paramref name="property"/>, which goes to <paramref name="capture"/> (when given) and is replaced by
    /// <paramref name="replacement"/>, called once that value has been captured (or before the closing brace when the
    /// property was absent).
    /// </summary>
    static void Pass(string path, Stream input, Utf8JsonWriter? output, string property, Action<Utf8JsonWriter>? replacement, Utf8JsonWriter? capture, ref bool found)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(InitialBuffer);
        try
        {
            int length = 0; bool final = false;
            var state = new JsonReaderState();
            bool inTarget = false, sawRoot = false;
            int targetDepth = -1;
            while (true)
            {
                if (!final && length < buffer.Length)
                {
                    int n = input.Read(buffer, length, buffer.Length - length);
                    if (n == 0) final = true; else length += n;
                }
                var reader = new Utf8JsonReader(buffer.AsSpan(0, length), final, state);
                try
                {
                    while (reader.Read())
                    {
                        if (!sawRoot)
                        {
                            if (reader.TokenType != JsonTokenType.StartObject) throw new MechanistException($"{path}: not a JSON object");
                            sawRoot = true;
                            output?.WriteStartObject();
                            continue;
                        }
                        if (!inTarget && reader.CurrentDepth == 1 && reader.TokenType == JsonTokenType.PropertyName && reader.ValueTextEquals(property))
                        {
                            found = inTarget = true; targetDepth = -1;
                            continue;
                        }
                        if (inTarget)
                        {
                            if (capture is not null) Copy(ref reader, capture);
                            if (targetDepth < 0) targetDepth = reader.CurrentDepth;
                            bool ends = reader.TokenType is JsonTokenType.StartObject or JsonTokenType.StartArray ? false : reader.CurrentDepth == targetDepth;
                            if (ends)
                            {
                                inTarget = false;
                                if (output is not null && replacement is not null) { output.WritePropertyName(property); replacement(output); }
                            }
                            continue;
                        }
                        if (reader.CurrentDepth == 0 && reader.TokenType == JsonTokenType.EndObject)
                        {
                            if (!found && output is not null && replacement is not null) { output.WritePropertyName(property); replacement(output); }
                            output?.WriteEndObject();
                            return;
                        }
                        if (output is not null) Copy(ref reader, output);
                        if (output is not null && output.BytesPending > InitialBuffer) output.Flush();
                    }
                }
                catch (JsonException e) { throw new MechanistException($"{path}: not valid JSON ({e.Message})"); }
                // The last block was read whole without closing the object: empty, or cut short.
                if (final) throw new MechanistException($"{path}: not valid JSON (it ends before the object closes)");
                state = reader.CurrentState;
                int consumed = (int)reader.BytesConsumed;
                int left = length - consumed;
                if (consumed == 0 && left == buffer.Length)
                {
                    // One token larger than the buffer: grow it.
                    var bigger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
                    Buffer.BlockCopy(buffer, 0, bigger, 0, length);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = bigger;
                }
                else Buffer.BlockCopy(buffer, consumed, buffer, 0, left);
                length = left;
            }
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    static void Copy(ref Utf8JsonReader reader, Utf8JsonWriter writer)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.StartObject: writer.WriteStartObject(); break;
            case JsonTokenType.EndObject: writer.WriteEndObject(); break;
            case JsonTokenType.StartArray: writer.WriteStartArray(); break;
            case JsonTokenType.EndArray: writer.WriteEndArray(); break;
            case JsonTokenType.PropertyName:
                if (reader.ValueIsEscaped) writer.WritePropertyName(reader.GetString()!); else writer.WritePropertyName(reader.ValueSpan);
                break;
            case JsonTokenType.String:
                if (reader.ValueIsEscaped) writer.WriteStringValue(reader.GetString()); else writer.WriteStringValue(reader.ValueSpan);
                break;
            case JsonTokenType.Number: writer.WriteRawValue(reader.ValueSpan, skipInputValidation: true); break;
            case JsonTokenType.True: writer.WriteBooleanValue(true); break;
            case JsonTokenType.False: writer.WriteBooleanValue(false); break;
            case JsonTokenType.Null: writer.WriteNullValue(); break;
        }
    }
}
