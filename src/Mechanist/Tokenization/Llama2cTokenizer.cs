using System.Text;

namespace Mechanist.Tokenization;

/// <summary>
/// The tokenizer of llama2.c checkpoints (tokenizer.bin / tok512.bin): a vocabulary of byte strings
/// with scores; encoding prepends a space, maps each character to its piece (or to &lt;0xNN&gt; byte
/// pieces, id = byte + 3) and greedily merges the adjacent pair whose concatenation scores best.
/// BOS = 1, EOS = 2.
/// </summary>
public sealed class Llama2cTokenizer : TextTokenizer
{
    readonly string[] _pieces;
    readonly float[] _scores;
    readonly Dictionary<string, int> _lookup = new();

    /// <summary>Creates the tokenizer from pieces (spaces as spaces) and their scores.</summary>
    public Llama2cTokenizer(IReadOnlyList<string> pieces, IReadOnlyList<float> scores, int maxTokenLength)
    {
        _pieces = pieces.ToArray();
        _scores = scores.ToArray();
        MaxTokenLength = maxTokenLength;
        for (int i = 0; i < _pieces.Length; i++) _lookup.TryAdd(_pieces[i], i);
        BosId = 1; EosId = 2;
        PrependBosByDefault = true;
        // llama2.c stores these as "<unk>", "\n<s>\n", "\n</s>\n"; they are shown and matched by their usual names.
        string[] special = { "<unk>", "<s>", "</s>" };
        for (int id = 0; id < Math.Min(3, _pieces.Length); id++) AddSpecialToken(special[id], id);
    }

    /// <summary>The pieces, by id (llama2.c stores spaces as plain spaces).</summary>
    public IReadOnlyList<string> Pieces => _pieces;

    /// <summary>The merge scores, by id.</summary>
    public IReadOnlyList<float> Scores => _scores;

    /// <summary>The longest piece in bytes, from the file header.</summary>
    public int MaxTokenLength { get; }

    /// <inheritdoc/>
    public override int VocabSize => _pieces.Length;

    /// <inheritdoc/>
    public override string Kind => "llama2.c BPE";

    /// <summary>Reads a llama2.c tokenizer file; <paramref name="vocabSize"/> from the model, or all entries to the end.</summary>
    public static Llama2cTokenizer Load(string path, int? vocabSize = null)
    {
        if (!File.Exists(path)) throw new MechanistException($"{path}: file not found");
        byte[] data = File.ReadAllBytes(path);
        int pos = 0;
        int ReadInt()
        {
            if (pos + 4 > data.Length) throw new InvalidCheckpointException(path, $"truncated llama2.c tokenizer at byte {pos}");
            int v = BitConverter.ToInt32(data, pos); pos += 4; return v;
        }
        int maxLen = ReadInt();
        if (maxLen <= 0 || maxLen > 1 << 16) throw new InvalidCheckpointException(path, $"max_token_length {maxLen} is not plausible: not a llama2.c tokenizer");
        var pieces = new List<string>(); var scores = new List<float>();
        while (pos < data.Length && (vocabSize == null || pieces.Count < vocabSize))
        {
            float score = BitConverter.Int32BitsToSingle(ReadInt());
            int len = ReadInt();
            if (len < 0 || len > maxLen || pos + len > data.Length)
                throw new InvalidCheckpointException(path, $"token {pieces.Count}: byte length {len} is invalid or runs past the end of the file");
            pieces.Add(Encoding.UTF8.GetString(data, pos, len));
            scores.Add(score);
            pos += len;
        }
        if (vocabSize != null && pieces.Count < vocabSize)
            throw new InvalidCheckpointException(path, $"holds {pieces.Count} tokens but the model has a vocabulary of {vocabSize}");
        return new Llama2cTokenizer(pieces, scores, maxLen);
    }

    /// <inheritdoc/>
    protected override IEnumerable<int> EncodeOrdinary(string text, bool atTextStart)
    {
        var tokens = new List<int>();
        if (text.Length == 0) return tokens;
        if (atTextStart) tokens.Add(_lookup[" "]);
        for (int i = 0; i < text.Length;)
        {
            int len = char.IsSurrogatePair(text, i) ? 2 : 1;
            string ch = text.Substring(i, len);
            i += len;
            if (_lookup.TryGetValue(ch, out int id)) tokens.Add(id);
            else foreach (byte b in Encoding.UTF8.GetBytes(ch)) tokens.Add(b + 3);
        }
        while (true)
        {
            float best = float.NegativeInfinity; int bestId = -1, bestAt = -1;
            for (int i = 0; i + 1 < tokens.Count; i++)
            {
                if (_lookup.TryGetValue(_pieces[tokens[i]] + _pieces[tokens[i + 1]], out int id) && _scores[id] > best)
                { best = _scores[id]; bestId = id; bestAt = i; }
            }
            if (bestAt < 0) break;
            tokens[bestAt] = bestId;
            tokens.RemoveAt(bestAt + 1);
        }
        return tokens;
    }

    /// <inheritdoc/>
    protected override string DecodeOrdinary(IReadOnlyList<int> ids, bool atTextStart)
    {
        var bytes = new List<byte>();
        for (int i = 0; i < ids.Count; i++)
        {
            string piece = _pieces[ids[i]];
            if (i == 0 && atTextStart && piece.StartsWith(' ')) piece = piece[1..];
            if (SentencePieceBpeTokenizer.IsByteToken(piece, out byte b)) bytes.Add(b);
            else bytes.AddRange(Encoding.UTF8.GetBytes(piece));
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>
    /// Decodes one step of generation the llama2.c way: a leading space is dropped right after BOS,
    /// and &lt;0xNN&gt; pieces become their byte.
    /// </summary>
    public byte[] DecodeStep(int previous, int token)
    {
        string piece = _pieces[token];
        if (previous == BosId && piece.StartsWith(' ')) piece = piece[1..];
        return SentencePieceBpeTokenizer.IsByteToken(piece, out byte b) ? new[] { b } : Encoding.UTF8.GetBytes(piece);
    }

    /// <inheritdoc/>
    protected override string TokenText(int id)
    {
        CheckId(id);
        return SentencePieceBpeTokenizer.IsByteToken(_pieces[id], out byte b) ? Encoding.UTF8.GetString(new[] { b }) : _pieces[id];
    }

    /// <inheritdoc/>
    protected override string IdToModelToken(int id) => _pieces[id];

    /// <inheritdoc/>
    public override int? TokenToId(string token) =>
        AddedTokens.Where(kv => kv.Value == token).Select(kv => (int?)kv.Key).FirstOrDefault()
        ?? (_lookup.TryGetValue(token, out int id) ? id : null);
}
