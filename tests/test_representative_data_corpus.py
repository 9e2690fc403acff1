"""Tests for representative_data.corpus: reading corpora and rejecting bad files early."""

import hashlib
import json

import pytest

from representative_data import corpus


def _write_jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_builtin_source_returns_builtin_corpus_in_stable_order():
    documents = corpus.load_corpus(corpus.BUILTIN_CORPUS)

    assert documents == corpus.builtin_corpus()
    assert len(documents) > 10
    assert all(isinstance(document, str) and document.strip() for document in documents)


def test_txt_file_is_one_document_with_text_unchanged(tmp_path):
    text = "First paragraph.\n\nSecond paragraph, caf\u00e9.\n"
    path = tmp_path / "notes.txt"
    path.write_text(text, encoding="utf-8")

    assert corpus.load_corpus(str(path)) == [text]


def test_txt_file_accepts_path_object_and_uppercase_extension(tmp_path):
    path = tmp_path / "NOTES.TXT"
    path.write_text("hello", encoding="utf-8")

    assert corpus.load_corpus(path) == ["hello"]


def test_utf8_byte_order_mark_is_removed(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhello")

    assert corpus.load_corpus(path) == ["hello"]


def test_jsonl_gives_one_document_per_line_and_skips_blank_lines(tmp_path):
    path = _write_jsonl(
        tmp_path / "docs.jsonl",
        [
            json.dumps({"text": "alpha", "id": 1}),
            "",
            "   ",
            # Unescaped U+2028 is valid inside a JSON string and must not split the line.
            json.dumps({"text": "beta\u2028gamma"}, ensure_ascii=False),
        ],
    )

    assert corpus.load_corpus(path) == ["alpha", "beta\u2028gamma"]


def test_jsonl_with_windows_line_endings_is_read(tmp_path):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b'{"text": "alpha"}\r\n{"text": "beta"}\r\n')

    assert corpus.load_corpus(path) == ["alpha", "beta"]


def test_jsonl_reads_custom_text_field(tmp_path):
    path = _write_jsonl(tmp_path / "docs.jsonl", [json.dumps({"body": "alpha"})])

    assert corpus.load_corpus(path, text_field="body") == ["alpha"]


def test_jsonl_whitespace_only_documents_are_dropped(tmp_path):
    path = _write_jsonl(tmp_path / "docs.jsonl", [json.dumps({"text": " \n "}), json.dumps({"text": "kept"})])

    assert corpus.load_corpus(path) == ["kept"]


def test_missing_file_names_path_and_says_it_does_not_exist(tmp_path):
    path = tmp_path / "absent.txt"

    with pytest.raises(corpus.CorpusError, match=r"absent\.txt does not exist"):
        corpus.load_corpus(str(path))


def test_directory_source_raises_corpus_error(tmp_path):
    with pytest.raises(corpus.CorpusError, match="is a directory"):
        corpus.load_corpus(str(tmp_path))


def test_unsupported_extension_lists_supported_ones(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n", encoding="utf-8")

    with pytest.raises(corpus.CorpusError, match=r"'\.csv'.*Supported: \.txt, \.jsonl"):
        corpus.load_corpus(path)


def test_empty_file_raises_corpus_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")

    with pytest.raises(corpus.CorpusError, match=r"empty\.txt is empty"):
        corpus.load_corpus(path)


def test_whitespace_only_txt_raises_corpus_error(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text(" \n\t\n", encoding="utf-8")

    with pytest.raises(corpus.CorpusError, match="only whitespace"):
        corpus.load_corpus(path)


def test_jsonl_whose_documents_are_all_whitespace_raises_corpus_error(tmp_path):
    path = _write_jsonl(tmp_path / "blank.jsonl", [json.dumps({"text": "  "}), ""])

    with pytest.raises(corpus.CorpusError, match="only whitespace"):
        corpus.load_corpus(path)


def test_non_utf8_corpus_names_file_and_byte_offset(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("ok caf\u00e9".encode("latin-1"))  # 0xe9 at byte offset 6

    with pytest.raises(corpus.CorpusError) as raised:
        corpus.load_corpus(path)

    message = str(raised.value)
    assert "latin.txt" in message
    assert "byte offset 6" in message
    assert "iconv -f latin1 -t utf-8" in message


def test_non_utf8_jsonl_is_rejected_before_parsing(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')

    with pytest.raises(corpus.CorpusError, match="byte offset 28"):
        corpus.load_corpus(path)


def test_jsonl_invalid_json_names_file_and_line_number(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [json.dumps({"text": "a"}), "", "{not json}"])

    with pytest.raises(corpus.CorpusError, match=r"bad\.jsonl line 3 is not valid JSON"):
        corpus.load_corpus(path)


def test_jsonl_line_that_is_not_an_object_names_line(tmp_path):
    path = _write_jsonl(tmp_path / "list.jsonl", ['["a", "b"]'])

    with pytest.raises(corpus.CorpusError, match="line 1 is a JSON array, not an object"):
        corpus.load_corpus(path)


def test_jsonl_missing_text_field_names_line_and_field(tmp_path):
    path = _write_jsonl(tmp_path / "docs.jsonl", [json.dumps({"text": "a"}), json.dumps({"body": "b"})])

    with pytest.raises(corpus.CorpusError, match=r"line 2 has no field 'text'.*'body'"):
        corpus.load_corpus(path)


def test_jsonl_non_string_text_field_names_line_field_and_type(tmp_path):
    path = _write_jsonl(tmp_path / "docs.jsonl", [json.dumps({"text": 42})])

    with pytest.raises(corpus.CorpusError, match=r"line 1: field 'text' is a JSON number"):
        corpus.load_corpus(path)


def test_corpus_error_is_a_value_error():
    assert issubclass(corpus.CorpusError, ValueError)


def test_corpus_sha256_hashes_documents_with_nul_terminators():
    assert corpus.corpus_sha256(["ab", "c"]) == hashlib.sha256(b"ab\x00c\x00").hexdigest()


def test_corpus_sha256_differs_when_documents_are_split_differently():
    assert corpus.corpus_sha256(["ab", "c"]) != corpus.corpus_sha256(["a", "bc"])
