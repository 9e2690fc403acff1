"""Tests for representative_data.tokenization: chunking and the keras-hub tokenizer adapter."""

import io

import numpy as np
import pytest

from representative_data.tokenization import TokenizerAdapter, chunk_text

keras_hub = pytest.importorskip("keras_hub")

_TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "A tokenizer turns text into token ids for a language model.",
    "Calibration windows are cut from a long stream of tokens.",
]


@pytest.fixture(scope="module")
def sentence_piece():
    sentencepiece = pytest.importorskip("sentencepiece")
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_TRAINING_TEXT),
        model_writer=proto,
        vocab_size=60,
        hard_vocab_limit=False,  # the tiny text may not support 60 pieces
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        minloglevel=2,
    )
    return keras_hub.tokenizers.SentencePieceTokenizer(proto=proto.getvalue())


class _FakeTokenizer:
    """Byte-level ids (reversible), returned in one of the shapes keras-hub can give."""

    def __init__(self, output="list", vocabulary_size=256):
        self.output = output
        self.size = vocabulary_size
        self.calls = []

    def vocabulary_size(self):
        return self.size

    def __call__(self, texts):
        self.calls.append(list(texts))
        rows = [list(text.encode("utf-8")) for text in texts]
        if self.output == "ragged":
            import tensorflow as tf  # pylint: disable=import-outside-toplevel

            return tf.ragged.constant(rows, dtype=tf.int32)
        if self.output == "dense":
            return np.array(rows, dtype=np.int64)
        if self.output == "object":
            array = np.empty(len(rows), dtype=object)
            array[:] = [np.array(row, dtype=np.int32) for row in rows]
            return array
        return rows


# --- chunk_text -------------------------------------------------------------------


def test_chunk_text_cuts_at_paragraph_breaks_keeping_separators():
    text = "aaaa\n\nbbbb\n\ncccc"

    assert chunk_text(text, max_chars=8) == ["aaaa\n\n", "bbbb\n\n", "cccc"]


def test_chunk_text_packs_several_paragraphs_into_one_chunk_when_they_fit():
    text = "aa\n\nbb\n\ncccccccc"

    assert chunk_text(text, max_chars=8) == ["aa\n\nbb\n\n", "cccccccc"]


def test_chunk_text_falls_back_to_words_then_hard_cuts():
    text = "one two three " + "x" * 25

    chunks = chunk_text(text, max_chars=10)

    assert chunks == ["one two ", "three ", "x" * 10, "x" * 10, "x" * 5]


def test_chunk_text_loses_nothing_and_respects_limit():
    paragraphs = [" ".join(f"word{i}-{j}" for j in range(i % 7 + 1)) for i in range(40)]
    text = "\n\n".join(paragraphs) + "\n" + "y" * 75 + "\n \n\nend"

    for max_chars in (1, 9, 30, 1000):
        chunks = chunk_text(text, max_chars=max_chars)
        assert "".join(chunks) == text
        assert all(0 < len(chunk) <= max_chars for chunk in chunks)


def test_chunk_text_of_empty_text_is_empty():
    assert chunk_text("") == []


def test_chunk_text_with_max_chars_zero_raises():
    with pytest.raises(ValueError, match="max_chars must be at least 1"):
        chunk_text("abc", max_chars=0)


# --- TokenizerAdapter with real keras-hub tokenizers --------------------------------


def test_adapter_reports_class_name_and_vocabulary_size(sentence_piece):
    adapter = TokenizerAdapter(sentence_piece)

    assert adapter.name == "SentencePieceTokenizer"
    assert adapter.vocabulary_size == sentence_piece.vocabulary_size()
    assert adapter.vocabulary_size > 4


def test_encode_matches_tokenizer_and_returns_int32(sentence_piece):
    adapter = TokenizerAdapter(sentence_piece)

    ids = adapter.encode("the quick fox")

    assert ids.dtype == np.int32
    assert ids.ndim == 1
    np.testing.assert_array_equal(ids, np.asarray(sentence_piece("the quick fox")))


def test_encode_documents_puts_separator_only_between_documents(sentence_piece):
    adapter = TokenizerAdapter(sentence_piece)
    first, second = "the lazy dog", "a long stream"

    stream = adapter.encode_documents([first, second], separator_id=3)

    expected = np.concatenate([adapter.encode(first), [3], adapter.encode(second)])
    np.testing.assert_array_equal(stream, expected)
    assert stream.dtype == np.int32


def test_encode_documents_without_separator_concatenates(sentence_piece):
    adapter = TokenizerAdapter(sentence_piece)

    stream = adapter.encode_documents(["the fox", "the dog"])

    expected = np.concatenate([adapter.encode("the fox"), adapter.encode("the dog")])
    np.testing.assert_array_equal(stream, expected)


def test_long_document_is_tokenized_in_chunks_without_losing_text():
    tokenizer = keras_hub.tokenizers.ByteTokenizer(lowercase=False)
    adapter = TokenizerAdapter(tokenizer, max_chunk_chars=16)
    text = "First paragraph here.\n\nSecond one, caf\u00e9.\n\n" + "z" * 40

    stream = adapter.encode_documents([text])

    # ByteTokenizer ids are the UTF-8 bytes, so decoding proves nothing was lost.
    assert bytes(stream.astype(np.uint8)).decode("utf-8") == text


def test_word_piece_tokenizer_is_supported():
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=["[PAD]", "[UNK]", "the", "fox", "dog"], lowercase=True
    )
    adapter = TokenizerAdapter(tokenizer)

    stream = adapter.encode_documents(["The fox", "the cat"], separator_id=0)

    np.testing.assert_array_equal(stream, [2, 3, 0, 2, 1])
    assert adapter.vocabulary_size == 5


def test_end_token_id_comes_from_tokenizer_when_it_has_one():
    gpt2 = keras_hub.models.GPT2Tokenizer(
        vocabulary={"<|endoftext|>": 0, "a": 1, "b": 2, "\u0120": 3, "ab": 4},
        merges=["a b"],
    )

    assert TokenizerAdapter(gpt2).end_token_id == 0
    assert TokenizerAdapter(keras_hub.tokenizers.ByteTokenizer()).end_token_id is None


def test_tokenizer_with_sequence_length_is_refused():
    tokenizer = keras_hub.tokenizers.ByteTokenizer(sequence_length=8)

    with pytest.raises(ValueError, match="sequence_length=8.*sequence_length=None"):
        TokenizerAdapter(tokenizer)


def test_tokenizer_returning_strings_says_to_use_int32():
    tokenizer = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=["[PAD]", "[UNK]", "the"], dtype="string")

    with pytest.raises(ValueError, match="dtype='int32'"):
        TokenizerAdapter(tokenizer).encode("the")


# --- TokenizerAdapter behaviour (fake tokenizer, no TensorFlow) ---------------------


@pytest.mark.parametrize("output", ["list", "ragged", "dense", "object"])
def test_every_keras_hub_output_shape_converts_to_the_same_ids(output):
    adapter = TokenizerAdapter(_FakeTokenizer(output=output))

    stream = adapter.encode_documents(["ab", "cd"])  # equal lengths allow a dense output

    np.testing.assert_array_equal(stream, [97, 98, 99, 100])
    assert stream.dtype == np.int32


def test_documents_are_tokenized_in_batches():
    tokenizer = _FakeTokenizer()
    adapter = TokenizerAdapter(tokenizer, batch_size=2)

    adapter.encode_documents(["a", "b", "c", "d", "e"])

    assert tokenizer.calls == [["a", "b"], ["c", "d"], ["e"]]


def test_long_document_reaches_tokenizer_only_as_short_chunks():
    tokenizer = _FakeTokenizer()
    adapter = TokenizerAdapter(tokenizer, max_chunk_chars=10)

    adapter.encode("para one\n\npara two\n\npara three")

    chunks = [chunk for call in tokenizer.calls for chunk in call]
    assert chunks == ["para one\n\n", "para two\n\n", "para three"]


def test_empty_document_still_gets_separators_like_str_join():
    adapter = TokenizerAdapter(_FakeTokenizer())

    stream = adapter.encode_documents(["", "a"], separator_id=0)

    np.testing.assert_array_equal(stream, [0, 97])


def test_no_documents_give_an_empty_stream_without_calling_tokenizer():
    tokenizer = _FakeTokenizer()

    stream = TokenizerAdapter(tokenizer).encode_documents([])

    assert stream.shape == (0,) and stream.dtype == np.int32
    assert tokenizer.calls == []


def test_separator_outside_vocabulary_raises_before_tokenizing():
    tokenizer = _FakeTokenizer()

    with pytest.raises(ValueError, match=r"separator_id 300 .*vocabulary size 256.*\[0, 256\)"):
        TokenizerAdapter(tokenizer).encode_documents(["a"], separator_id=300)
    assert tokenizer.calls == []


def test_single_string_as_documents_raises_type_error():
    with pytest.raises(TypeError, match="use encode"):
        TokenizerAdapter(_FakeTokenizer()).encode_documents("abc")


def test_object_that_is_not_a_tokenizer_is_refused():
    with pytest.raises(TypeError, match="must be a keras-hub tokenizer.*got dict"):
        TokenizerAdapter({"vocab": 1})


def test_progress_prints_chunk_counts_to_stderr(capsys):
    adapter = TokenizerAdapter(_FakeTokenizer(), batch_size=2)

    adapter.encode_documents(["a", "b", "c"], progress=True)

    assert capsys.readouterr().err.splitlines() == ["tokenize 2/3 chunks", "tokenize 3/3 chunks"]


def test_progress_is_silent_by_default(capsys):
    TokenizerAdapter(_FakeTokenizer()).encode_documents(["a"])

    assert capsys.readouterr().err == ""
