using System.Text;

namespace Mechanist.Tokenization;

/// <summary>
/// The parts of a SentencePiece ModelProto (sentencepiece_model.proto) a tokenizer needs, read from protobuf's wire format:
/// the pieces with their scores and types, the trainer spec's model type, special ids and byte fallback, and the normalizer spec.
/// </summary>
public sealed class ModelProtoReader
{
    /// <summary>Pieces by id: text, log-probability, type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).</summary>
    public List<(string Piece, float Score, int Type)> Pieces { get; } = new();
    /// <summary>trainer_spec.model_type: 1 Unigram (the default), 2 BPE, 3 word, 4 char.</summary>
    public int ModelType { get; private set; } = 1;
    /// <summary>Whether the model is Unigram.</summary>
    public bool Unigram => ModelType == 1;
    /// <summary>unk_id (default 0).</summary>
    public int UnkId { get; private set; }
    /// <summary>bos_id (default 1; −1 when the model has none, as T5's).</summary>
    public int BosId { get; private set; } = 1;
    /// <summary>eos_id (default 2).</summary>
    public int EosId { get; private set; } = 2;
    /// <summary>pad_id (default −1).</summary>
    public int PadId { get; private set; } = -1;
    /// <summary>trainer_spec.byte_fallback.</summary>
    public bool ByteFallback { get; private set; }
    /// <summary>normalizer_spec.name ("nmt_nfkc", "identity", ...).</summary>
    public string NormalizerName { get; private set; } = "nmt_nfkc";
    /// <summary>Whether the normalizer spec carries a precompiled character map.</summary>
    public bool HasCharsMap { get; private set; }
    /// <summary>normalizer_spec.add_dummy_prefix (default true): a "▁" before the first word.</summary>
    public bool AddDummyPrefix { get; private set; } = true;

    /// <summary>Reads a serialized ModelProto.</summary>
    public static ModelProtoReader Read(byte[] proto)
    {
        var r = new ModelProtoReader();
        foreach (var (field, _, bytes) in Fields(proto))
        {
            if (field == 1 && bytes is not null) r.ReadPiece(bytes);
            else if (field == 2 && bytes is not null) r.ReadTrainer(bytes);
            else if (field == 3 && bytes is not null) r.ReadNormalizer(bytes);
        }
        if (r.Pieces.Count == 0) throw new FormatException("no pieces");
        return r;
    }

    void ReadPiece(byte[] b)
    {
        string piece = ""; float score = 0; int type = 1;
        foreach (var (field, value, bytes) in Fields(b))
        {
            if (field == 1 && bytes is not null) piece = Encoding.UTF8.GetString(bytes);
            else if (field == 2) score = BitConverter.Int32BitsToSingle((int)value);
            else if (field == 3) type = (int)value;
        }
        Pieces.Add((piece, score, type));
    }

    void ReadTrainer(byte[] b)
    {
        foreach (var (field, value, _) in Fields(b))
            switch (field)
            {
                case 3: ModelType = (int)value; break;
                case 35: ByteFallback = value != 0; break;
                case 40: UnkId = unchecked((int)(long)value); break;
                case 41: BosId = unchecked((int)(long)value); break;
                case 42: EosId = unchecked((int)(long)value); break;
                case 43: PadId = unchecked((int)(long)value); break;
            }
    }

    void ReadNormalizer(byte[] b)
    {
        foreach (var (field, value, bytes) in Fields(b))
        {
            if (field == 1 && bytes is not null) NormalizerName = Encoding.UTF8.GetString(bytes);
            else if (field == 2 && bytes is { Length: > 0 }) HasCharsMap = true;
            else if (field == 3) AddDummyPrefix = value != 0;
        }
    }

    /// <summary>
    /// The Unigram tokenizer this model describes: control and unknown pieces are special tokens matched whole, EOS follows the text
    /// (T5's convention), and NFKC's folds stand in for the precompiled nmt_nfkc map.
    /// </summary>
    public UnigramTokenizer ToUnigram()
    {
        if (UnkId < 0 || UnkId >= Pieces.Count) throw new FormatException($"unk_id {UnkId} is outside the {Pieces.Count} pieces");
        var tok = new UnigramTokenizer(Pieces.Select(p => (p.Piece, (double)p.Score)).ToList(), UnkId, ByteFallback,
            nfkc: HasCharsMap || NormalizerName.Contains("nfkc", StringComparison.OrdinalIgnoreCase), addPrefixSpace: AddDummyPrefix);
        for (int i = 0; i < Pieces.Count; i++) if (Pieces[i].Type is 2 or 3) tok.AddSpecialToken(Pieces[i].Piece, i);
        if (EosId >= 0 && EosId < Pieces.Count) { tok.EosId = EosId; tok.SuffixId = EosId; }
        if (BosId >= 0 && BosId < Pieces.Count) tok.BosId = BosId;
        if (PadId >= 0 && PadId < Pieces.Count) tok.PadId = PadId;
        return tok;
    }

    /// <summary>The fields of a message: number, varint or fixed value, and bytes for length-delimited ones.</summary>
    static IEnumerable<(int Field, ulong Value, byte[]? Bytes)> Fields(byte[] b)
    {
        int i = 0;
        while (i < b.Length)
        {
            ulong key = Varint(b, ref i);
            int field = (int)(key >> 3), wire = (int)(key & 7);
            switch (wire)
            {
                case 0: yield return (field, Varint(b, ref i), null); break;
                case 1: Need(b, i, 8); yield return (field, BitConverter.ToUInt64(b, i), null); i += 8; break;
                case 2:
                    int length = checked((int)Varint(b, ref i));
                    Need(b, i, length);
                    yield return (field, 0, b.AsSpan(i, length).ToArray());
                    i += length;
                    break;
                case 5: Need(b, i, 4); yield return (field, BitConverter.ToUInt32(b, i), null); i += 4; break;
                default: throw new FormatException($"unexpected protobuf wire type {wire}");
            }
        }
    }

    static void Need(byte[] b, int i, int n) { if (n < 0 || i + n > b.Length) throw new FormatException("truncated protobuf"); }

    static ulong Varint(byte[] b, ref int i)
    {
        ulong v = 0;
        for (int shift = 0; ; shift += 7)
        {
            if (i >= b.Length || shift > 63) throw new FormatException("truncated varint");
            byte x = b[i++];
            v |= (ulong)(x & 0x7F) << shift;
            if ((x & 0x80) == 0) return v;
        }
    }
}
