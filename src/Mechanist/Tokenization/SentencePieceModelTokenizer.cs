using Microsoft.ML.Tokenizers;

namespace Mechanist.Tokenization;

/// <summary>A SentencePiece BPE tokenizer.model (protobuf, as Llama-2's), run by Microsoft.ML.Tokenizers.</summary>
public sealed class SentencePieceModelTokenizer : TextTokenizer
{
    readonly SentencePieceTokenizer _sp;

    SentencePieceModelTokenizer(SentencePieceTokenizer sp)
    {
        _sp = sp;
        BosId = sp.BeginningOfSentenceId >= 0 ? sp.BeginningOfSentenceId : null;
        EosId = sp.EndOfSentenceId >= 0 ? sp.EndOfSentenceId : null;
        PrependBosByDefault = BosId is not null;
    }

    /// <summary>
    /// Loads a tokenizer.model or spiece.model file: a BPE model (Llama-2) runs in Microsoft.ML.Tokenizers; a Unigram model (T5's
    /// spiece.model, which has no BOS, a case that library does not load) becomes a <see cref="UnigramTokenizer"/> that appends EOS.
    /// </summary>
    public static TextTokenizer Load(string path)
    {
        try
        {
            byte[] bytes = File.ReadAllBytes(path);
            var proto = ModelProtoReader.Read(bytes);
            if (proto.Unigram) return proto.ToUnigram();
            using var stream = new MemoryStream(bytes);
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
