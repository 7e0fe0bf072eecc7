using Microsoft.ML.Tokenizers;

namespace Mechanist.Tokenization;

/// <summary>A SentencePiece tokenizer.model (protobuf), run by Microsoft.ML.Tokenizers.</summary>
public sealed class SentencePieceModelTokenizer : TextTokenizer
{
    readonly SentencePieceTokenizer _sp;

    SentencePieceModelTokenizer(SentencePieceTokenizer sp)
    {
        _sp = sp;
        BosId = sp.BeginningOfSentenceId;
        EosId = sp.EndOfSentenceId;
        PrependBosByDefault = true;
    }

    /// <summary>Loads a tokenizer.model file.</summary>
    public static SentencePieceModelTokenizer Load(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            return new SentencePieceModelTokenizer(LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false));
        }
        catch (Exception e) when (e is not MechanistException)
        {
            throw new InvalidCheckpointException(path, $"not a readable SentencePiece model: {e.Message}");
        }
    }

    /// <inheritdoc/>
    public override int VocabSize => _sp.Vocabulary.Count;

    /// <inheritdoc/>
    public override string Kind => "SentencePiece (tokenizer.model)";

    /// <inheritdoc/>
    protected override IEnumerable<int> EncodeOrdinary(string text, bool atTextStart) =>
        _sp.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false, considerPreTokenization: true, considerNormalization: true);

    /// <inheritdoc/>
    protected override string DecodeOrdinary(IReadOnlyList<int> ids, bool atTextStart) => _sp.Decode(ids) ?? "";

    /// <inheritdoc/>
    protected override string IdToModelToken(int id) =>
        _sp.Vocabulary.FirstOrDefault(kv => kv.Value == id).Key ?? throw new MechanistException($"token id {id} has no vocabulary entry");

    /// <inheritdoc/>
    public override int? TokenToId(string token) => _sp.Vocabulary.TryGetValue(token, out int id) ? id : null;
}
