"""Text sources for calibration and evaluation: the built-in corpus, .txt and .jsonl."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

BUILTIN_CORPUS = "builtin"
SUPPORTED_EXTENSIONS = (".txt", ".jsonl")


class CorpusError(ValueError):
    """A corpus source cannot be read as text documents."""


def builtin_corpus() -> list[str]:
    """Returns the built-in corpus: Python's own documentation topics.

    `pydoc_data.topics` ships with every CPython (about 465 kB of English
    technical prose), so calibration and the built-in model need no download.

    Returns:
      One document per topic, in sorted topic order so that the result is the
      same on every machine.
    """
    from pydoc_data import topics  # pylint: disable=import-outside-toplevel

    return [topics.topics[key] for key in sorted(topics.topics)]


def load_corpus(source: str | os.PathLike[str], *, text_field: str = "text") -> list[str]:
    """Reads a corpus as a list of documents.

    Everything that can be wrong with a file is checked here, before any
    tokenizer sees a byte, so a bad corpus fails in a second and not after a
    long tokenization.

    Args:
      source: `"builtin"` (`BUILTIN_CORPUS`) for Python's documentation topics,
        a `.txt` file (the whole file is one document) or a `.jsonl` file (one
        JSON object per line; its `text_field` string is one document, blank
        lines are skipped).
      text_field: The key holding the text in each `.jsonl` object.

    Returns:
      The documents in file order. Documents that are only whitespace are
      left out; a leading UTF-8 byte-order mark is removed.

    Raises:
      CorpusError: The file is missing, is a folder, has an unsupported
        extension, is not valid UTF-8, is empty or all whitespace, or (for
        `.jsonl`) has a line that is not a JSON object with a string
        `text_field`.
    """
    if str(source) == BUILTIN_CORPUS:
        return builtin_corpus()

    path = Path(source)
    if not path.exists():
        raise CorpusError(
            f"Corpus file {path} does not exist. Pass an existing .txt or .jsonl "
            f"file, or {BUILTIN_CORPUS!r} for the built-in corpus."
        )
    if path.is_dir():
        raise CorpusError(
            f"Corpus {path} is a directory. Pass one .txt or .jsonl file "
            "(concatenate several files into one .jsonl first)."
        )
    extension = path.suffix.lower()
    if extension not in SUPPORTED_EXTENSIONS:
        raise CorpusError(
            f"Corpus file {path} has unsupported extension {path.suffix!r}. "
            f"Supported: {', '.join(SUPPORTED_EXTENSIONS)}, or {BUILTIN_CORPUS!r}."
        )

    text = _read_utf8(path)
    if not text:
        raise CorpusError(f"Corpus file {path} is empty. Pass a file that contains text.")

    if extension == ".txt":
        documents = [text]
    else:
        documents = _parse_jsonl(path, text, text_field=text_field)

    documents = [document for document in documents if document.strip()]
    if not documents:
        raise CorpusError(f"Corpus file {path} contains only whitespace: no document has any text.")
    return documents


def corpus_sha256(documents: Sequence[str]) -> str:
    """Fingerprints a corpus so that metadata can say which text made the windows.

    The hash covers each document's UTF-8 bytes followed by one NUL byte, so
    the same text split into documents differently (which tokenizes
    differently) hashes differently.

    Args:
      documents: The documents, as returned by `load_corpus`.

    Returns:
      The hex sha256 digest.
    """
    digest = hashlib.sha256()
    for document in documents:
        digest.update(document.encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")  # strict: a corrupted corpus must not pass silently
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"Corpus file {path} is not valid UTF-8: byte 0x{data[error.start]:02x} at "
            f"byte offset {error.start} cannot be decoded ({error.reason}). Re-encode "
            f"the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path} > fixed{path.suffix}`."
        ) from None
    # Editors on Windows often start UTF-8 files with a byte-order mark; it is not text.
    return text.removeprefix("\ufeff")


def _parse_jsonl(path: Path, text: str, *, text_field: str) -> list[str]:
    documents = []
    # Split on "\n" only: str.splitlines() would also break at U+2028, which
    # JSON allows unescaped inside strings.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CorpusError(
                f"{path} line {line_number} is not valid JSON ({error.msg} at column "
                f"{error.colno}). Each line of a .jsonl file must be one JSON object, "
                f'e.g. {{"{text_field}": "..."}}.'
            ) from None
        if not isinstance(record, dict):
            raise CorpusError(
                f"{path} line {line_number} is a JSON {_json_type_name(record)}, not an "
                f'object. Each line must be a JSON object, e.g. {{"{text_field}": "..."}}.'
            )
        if text_field not in record:
            present = ", ".join(repr(key) for key in record) or "none"
            raise CorpusError(
                f"{path} line {line_number} has no field {text_field!r} (fields present: "
                f"{present}). Add it, or pass text_field= (--text-field) to name the "
                "field that holds the text."
            )
        value = record[text_field]
        if not isinstance(value, str):
            raise CorpusError(
                f"{path} line {line_number}: field {text_field!r} is a JSON "
                f"{_json_type_name(value)}, not a string. The text field must hold the "
                "document as one string."
            )
        documents.append(value)
    return documents


def _json_type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
