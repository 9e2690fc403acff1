"""Tests for representative_data.pipeline: corpus to calibration and evaluation windows."""

import json

import numpy as np
import pytest

from representative_data.corpus import CorpusError, builtin_corpus, corpus_sha256
from representative_data.pipeline import build_windows
from representative_data.tokenization import TokenizerAdapter
from representative_data.windows import load_windows, save_windows, validate_windows


class _ByteTokenizer:
    """UTF-8 bytes as ids; records calls so tests can see whether tokenization ran."""

    def __init__(self, vocabulary_size=256):
        self.size = vocabulary_size
        self.calls = 0

    def vocabulary_size(self):
        return self.size

    def __call__(self, texts):
        self.calls += 1
        return [list(text.encode("utf-8")) for text in texts]


def _jsonl(tmp_path, documents):
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": d}) for d in documents), encoding="utf-8")
    return path


def test_builtin_corpus_gives_disjoint_splits_with_full_metadata():
    calibration, evaluation = build_windows("builtin", _ByteTokenizer(), seq_len=64, seed=5)

    expected = {
        "source": "builtin",
        "corpus_sha256": corpus_sha256(builtin_corpus()),
        "num_documents": len(builtin_corpus()),
        "tokenizer": "_ByteTokenizer",
        "vocabulary_size": 256,
        "separator_id": None,
        "text_field": "text",
        "seq_len": 64,
        "seed": 5,
    }
    for split in (calibration, evaluation):
        assert {key: split.metadata[key] for key in expected} == expected
        assert split.seq_len == 64
    assert calibration.metadata["split"] == "calibration"
    assert evaluation.metadata["split"] == "evaluation"
    assert set(calibration.metadata["window_indices"]).isdisjoint(evaluation.metadata["window_indices"])
    total = calibration.metadata["source_num_windows"]
    assert evaluation.num_windows == round(total * 0.1)
    assert calibration.num_windows + evaluation.num_windows == total


def test_windows_reassemble_into_the_separated_token_stream(tmp_path):
    # 14 + 1 + 10 + 1 + 24 = 50 tokens: six full windows and a padded one of 2.
    documents = ["first document", "second one", "third and final document"]
    path = _jsonl(tmp_path, documents)

    calibration, evaluation = build_windows(
        str(path), _ByteTokenizer(), seq_len=8, separator_id=0, evaluation_fraction=0.3
    )

    rows = {}
    for split in (calibration, evaluation):
        for index, ids, mask in zip(split.metadata["window_indices"], split.token_ids, split.padding_mask):
            rows[index] = ids[mask == 1]
    stream = np.concatenate([rows[index] for index in sorted(rows)])
    expected = b"\x00".join(document.encode() for document in documents)
    assert bytes(stream.astype(np.uint8)) == expected
    assert calibration.metadata["padded_windows"] == 1


def test_caps_limit_calibration_and_evaluation_windows():
    calibration, evaluation = build_windows(
        "builtin", _ByteTokenizer(), seq_len=32, max_calibration=7, max_evaluation=3
    )

    assert (calibration.num_windows, evaluation.num_windows) == (7, 3)


def test_corpus_error_is_raised_before_tokenizing(tmp_path):
    tokenizer = _ByteTokenizer()
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9")

    with pytest.raises(CorpusError, match="byte offset 3"):
        build_windows(str(path), tokenizer, seq_len=8)
    assert tokenizer.calls == 0


def test_bad_seq_len_is_raised_before_reading_or_tokenizing(tmp_path):
    tokenizer = _ByteTokenizer()

    # The missing file would raise CorpusError if the corpus were read first.
    with pytest.raises(ValueError, match="seq_len must be at least 2"):
        build_windows(str(tmp_path / "missing.txt"), tokenizer, seq_len=1)
    assert tokenizer.calls == 0


def test_separator_outside_vocabulary_is_raised_before_tokenizing():
    tokenizer = _ByteTokenizer()

    with pytest.raises(ValueError, match="separator_id 999"):
        build_windows("builtin", tokenizer, seq_len=8, separator_id=999)
    assert tokenizer.calls == 0


def test_corpus_too_small_for_two_windows_says_so(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("abc", encoding="utf-8")

    with pytest.raises(ValueError, match="need at least 2.*smaller seq_len"):
        build_windows(str(path), _ByteTokenizer(), seq_len=8)


def test_tokenizer_ids_beyond_its_vocabulary_are_caught():
    # Claims 100 ids but emits bytes up to 255 (like undeclared special tokens).
    with pytest.raises(ValueError, match="vocabulary size 100"):
        build_windows("builtin", _ByteTokenizer(vocabulary_size=100), seq_len=16)


def test_adapter_can_be_passed_instead_of_raw_tokenizer(tmp_path):
    path = _jsonl(tmp_path, ["abcdefgh" * 4])
    adapter = TokenizerAdapter(_ByteTokenizer())

    calibration, _ = build_windows(str(path), adapter, seq_len=4)

    assert calibration.metadata["tokenizer"] == "_ByteTokenizer"


def test_saved_split_loads_and_validates_against_the_model(tmp_path):
    calibration, _ = build_windows("builtin", _ByteTokenizer(), seq_len=16, max_calibration=4)

    loaded = load_windows(save_windows(calibration, tmp_path / "calibration.npz"))

    assert validate_windows(loaded, vocabulary_size=256, seq_len=16) is None
    assert loaded.metadata["corpus_sha256"] == calibration.metadata["corpus_sha256"]
