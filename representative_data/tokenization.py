"""One interface over keras-hub tokenizers: text in, int32 token ids out.

The adapter relies only on what every `keras_hub.tokenizers.Tokenizer` has
(calling it on a list of strings, `vocabulary_size()`), so this module imports
neither keras-hub nor TensorFlow; the tokenizer brings them.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

# keras-hub tokenizers slow down and use a lot of memory on very long strings.
MAX_CHUNK_CHARS = 20_000
# One tokenizer call per batch of chunks is much faster than one call per chunk.
BATCH_SIZE = 64

# Where a long text may be cut, best first: blank lines (paragraphs), line
# breaks, any whitespace. Past the last, a text is cut every max_chars.
_CUT_PATTERNS = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"\s+"))


def chunk_text(text: str, *, max_chars: int = MAX_CHUNK_CHARS) -> list[str]:
    """Cuts a text into pieces of at most `max_chars` characters, losing nothing.

    Cuts fall at paragraph breaks (blank lines) where possible, then at line
    breaks, then at whitespace, and only as a last resort inside a word. Each
    separator stays at the end of the piece before it, so
    `"".join(chunk_text(text)) == text`.

    Args:
      text: Any text.
      max_chars: The longest piece allowed, at least 1.

    Returns:
      The pieces in order; an empty text gives an empty list.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1; got {max_chars}.")
    return _chunk(text, max_chars, level=0)


def _chunk(text: str, max_chars: int, *, level: int) -> list[str]:
    if len(text) <= max_chars:
        return [text] if text else []
    if level == len(_CUT_PATTERNS):
        return [text[start : start + max_chars] for start in range(0, len(text), max_chars)]
    chunks: list[str] = []
    current: list[str] = []
    current_length = 0
    for piece in _split_keeping_separators(text, _CUT_PATTERNS[level]):
        if current and current_length + len(piece) > max_chars:
            chunks.append("".join(current))
            current, current_length = [], 0
        if len(piece) > max_chars:
            chunks.extend(_chunk(piece, max_chars, level=level + 1))
        else:
            current.append(piece)
            current_length += len(piece)
    if current:
        chunks.append("".join(current))
    return chunks


def _split_keeping_separators(text: str, pattern: re.Pattern[str]) -> list[str]:
    pieces = []
    start = 0
    for match in pattern.finditer(text):
        if match.end() > start:
            pieces.append(text[start : match.end()])
            start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


@dataclasses.dataclass(frozen=True)
class TokenizerAdapter:
    """Wraps a keras-hub tokenizer so callers need not know which kind it is.

    Works with any `keras_hub.tokenizers.Tokenizer` that returns integer ids
    (SentencePieceTokenizer, BytePairTokenizer, WordPieceTokenizer,
    ByteTokenizer, and the model-specific subclasses of these).

    Long texts are cut with `chunk_text` and tokenized in batches. Tokens at a
    cut can differ slightly from tokenizing the whole text in one call (e.g.
    SentencePiece marks the start of every input); cuts fall at paragraph
    breaks at most once every `max_chunk_chars` characters.

    Attributes:
      tokenizer: The keras-hub tokenizer. It must not truncate or pad
        (`sequence_length=None`) and must return ids (`dtype="int32"`).
      batch_size: Chunks per tokenizer call.
      max_chunk_chars: Longest text passed to the tokenizer in one piece.
    """

    tokenizer: Any
    batch_size: int = BATCH_SIZE
    max_chunk_chars: int = MAX_CHUNK_CHARS
    _vocabulary_size: int = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.tokenizer, TokenizerAdapter):
            raise TypeError("tokenizer is already a TokenizerAdapter; use it directly.")
        vocabulary_size = getattr(self.tokenizer, "vocabulary_size", None)
        if not callable(self.tokenizer) or not callable(vocabulary_size):
            raise TypeError(
                "tokenizer must be a keras-hub tokenizer (a keras_hub.tokenizers.Tokenizer "
                f"such as SentencePieceTokenizer); got {type(self.tokenizer).__name__}. For a "
                "keras-hub task or preprocessor, pass its .tokenizer."
            )
        if getattr(self.tokenizer, "sequence_length", None) is not None:
            raise ValueError(
                f"{self.name} has sequence_length={self.tokenizer.sequence_length}, so it "
                "would truncate and pad every text. Build it with sequence_length=None."
            )
        size = vocabulary_size()
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"{self.name}.vocabulary_size() returned {size!r}; expected an int >= 1.")
        for option in ("batch_size", "max_chunk_chars"):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be an int >= 1; got {value!r}.")
        object.__setattr__(self, "_vocabulary_size", int(size))

    @property
    def name(self) -> str:
        """The tokenizer's class name, e.g. `"SentencePieceTokenizer"`."""
        return type(self.tokenizer).__name__

    @property
    def vocabulary_size(self) -> int:
        """The number of token ids; every id is in `[0, vocabulary_size)`."""
        return self._vocabulary_size

    @property
    def end_token_id(self) -> int | None:
        """The tokenizer's end-of-text id if it declares one (a natural separator)."""
        end_token_id = getattr(self.tokenizer, "end_token_id", None)
        return None if end_token_id is None else int(end_token_id)

    def encode(self, text: str) -> np.ndarray:
        """Tokenizes one text of any length.

        Args:
          text: The text.

        Returns:
          1-D int32 token ids.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str; got {type(text).__name__}.")
        return _concatenate(self._encode_chunks(chunk_text(text, max_chars=self.max_chunk_chars)))

    def encode_documents(
        self,
        documents: Iterable[str],
        *,
        separator_id: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Tokenizes documents into one token stream.

        Args:
          documents: The documents, e.g. from `load_corpus`.
          separator_id: An id put between consecutive documents (like
            `str.join`: none before the first or after the last), e.g. the
            end-of-text id (`end_token_id`). None joins them directly.
          progress: Print a progress line to stderr after every batch.

        Returns:
          1-D int32 token ids.

        Raises:
          TypeError: `documents` is a single string or holds a non-string.
          ValueError: `separator_id` is not in `[0, vocabulary_size)`, or the
            tokenizer does not return integer ids.
        """
        if isinstance(documents, str):
            raise TypeError("documents must be a list of strings; for a single text use encode().")
        documents = list(documents)
        for index, document in enumerate(documents):
            if not isinstance(document, str):
                raise TypeError(f"Document {index} is a {type(document).__name__}, not a str.")
        separator = self._separator_array(separator_id)

        chunks: list[str] = []
        chunk_counts: list[int] = []
        for document in documents:
            pieces = chunk_text(document, max_chars=self.max_chunk_chars)
            chunks.extend(pieces)
            chunk_counts.append(len(pieces))
        encoded = self._encode_chunks(chunks, progress=progress)

        parts: list[np.ndarray] = []
        position = 0
        for index, count in enumerate(chunk_counts):
            if separator is not None and index > 0:
                parts.append(separator)
            parts.extend(encoded[position : position + count])
            position += count
        return _concatenate(parts)

    def _separator_array(self, separator_id: int | None) -> np.ndarray | None:
        if separator_id is None:
            return None
        if isinstance(separator_id, bool) or not isinstance(separator_id, (int, np.integer)):
            raise TypeError(f"separator_id must be an int or None; got {separator_id!r}.")
        if not 0 <= separator_id < self.vocabulary_size:
            raise ValueError(
                f"separator_id {separator_id} is not a token id of {self.name} (vocabulary "
                f"size {self.vocabulary_size}); pass an id in [0, {self.vocabulary_size})."
            )
        return np.array([separator_id], dtype=np.int32)

    def _encode_chunks(self, chunks: Sequence[str], *, progress: bool = False) -> list[np.ndarray]:
        encoded: list[np.ndarray] = []
        for start in range(0, len(chunks), self.batch_size):
            batch = list(chunks[start : start + self.batch_size])
            encoded.extend(_rows_to_arrays(self.tokenizer(batch), len(batch), self.name))
            if progress:
                print(f"tokenize {len(encoded)}/{len(chunks)} chunks", file=sys.stderr, flush=True)
        return encoded


def _rows_to_arrays(output: Any, expected_rows: int, name: str) -> list[np.ndarray]:
    # keras-hub returns python lists of lists for ragged output with the
    # TensorFlow backend, but tf.RaggedTensor inside tf.function or with other
    # keras-hub versions, and dense tensors when every row has the same length.
    if hasattr(output, "to_list"):
        output = output.to_list()
    elif hasattr(output, "numpy") and not isinstance(output, np.ndarray):
        output = output.numpy()
    if isinstance(output, np.ndarray) and output.dtype != object and output.ndim != 2:
        raise ValueError(
            f"{name} returned an array of shape {output.shape} for {expected_rows} texts; "
            "expected one row of ids per text."
        )
    rows = list(output)
    if len(rows) != expected_rows:
        raise ValueError(f"{name} returned {len(rows)} rows for {expected_rows} texts.")
    arrays = []
    for row in rows:
        if hasattr(row, "numpy") and not isinstance(row, np.ndarray):
            row = row.numpy()
        array = np.asarray(row)
        if array.size == 0:
            # np.asarray([]) is float64; an empty row is still a valid id list.
            arrays.append(np.zeros(0, dtype=np.int32))
            continue
        if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"{name} returned {array.dtype} values of shape {array.shape} instead of a "
                "list of integer ids. Build the tokenizer with dtype='int32' (not 'string')."
            )
        arrays.append(array.astype(np.int32, copy=False))
    return arrays


def _concatenate(parts: Sequence[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=np.int32)
    return np.concatenate(parts).astype(np.int32, copy=False)
