"""Reads an exported tokenizer with the Python standard library alone.

The same algorithms as the Java tokenizer in `android/tokenizer/`, written from
the format `tokenizer_export` documents. `export_android` runs it on sample
text and refuses to write an export whose ids differ from keras-hub's, so a
tokenizer feature the device readers lack fails at export time and not in an
app.
"""

from __future__ import annotations

import array
import heapq
from collections.abc import Callable, Mapping
from typing import Any

_SPACE_SYMBOL = "\u2581"
_TRIE_ID = ""  # no piece character is the empty string


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out, index = [], 0
    escapes = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
    while index < len(text):
        if text[index] == "\\":
            out.append(escapes[text[index + 1]])
            index += 2
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def _lines(data: bytes) -> list[str]:
    # Line feeds only: tokens may hold U+2028 and friends, which
    # str.splitlines() would also split on.
    text = data.decode("utf-8")
    return text[:-1].split("\n") if text.endswith("\n") else (text.split("\n") if text else [])


def bytes_to_unicode() -> list[str]:
    """GPT-2's printable character for each byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for value in range(256):
        if value in printable:
            table[value] = chr(value)
        else:
            table[value] = chr(256 + extra)
            extra += 1
    return [table[value] for value in range(256)]


class ExportedTokenizer:
    """Encodes and decodes with an exported tokenizer's files.

    Args:
      spec: the manifest's `tokenizer` section.
      read_file: returns the bytes of an exported file by name.
    """

    def __init__(self, spec: Mapping[str, Any], read_file: Callable[[str], bytes]):
        self.type = spec["type"]
        vocabulary = _lines(read_file(spec["vocabulary_file"]))
        if len(vocabulary) != spec["vocabulary_size"]:
            raise ValueError(
                f"{spec['vocabulary_file']} has {len(vocabulary)} lines; the manifest says {spec['vocabulary_size']}."
            )
        if self.type == "sentencepiece_unigram":
            self._unigram_init(vocabulary, spec["sentencepiece"])
        elif self.type == "byte_level_bpe":
            self._bpe_init(vocabulary, _lines(read_file(spec["merges_file"])), spec["byte_level_bpe"])
        else:
            raise ValueError(f"Unknown tokenizer type {self.type!r}.")
        self.vocabulary_size = len(vocabulary)

    def encode(self, text: str) -> list[int]:
        """Token ids of a text, as the keras-hub tokenizer gives them."""
        return self._unigram_encode(text) if self.type == "sentencepiece_unigram" else self._bpe_encode(text)

    def decode(self, ids: list[int]) -> str:
        """Text of token ids, as keras-hub's `detokenize` gives it."""
        for token_id in ids:
            if not 0 <= token_id < self.vocabulary_size:
                raise ValueError(f"Token id {token_id} is not in [0, {self.vocabulary_size}).")
        return self._unigram_decode(ids) if self.type == "sentencepiece_unigram" else self._bpe_decode(ids)

    # SentencePiece unigram.

    def _unigram_init(self, vocabulary: list[str], options: Mapping[str, Any]) -> None:
        self._pieces, self._scores, self._types = [], [], []
        self._trie: dict = {}
        self._byte_ids = {}
        for token_id, line in enumerate(vocabulary):
            piece, score, kind = line.split("\t")
            piece = _unescape(piece)
            self._pieces.append(piece)
            self._scores.append(float(score))
            self._types.append(kind)
            if kind in ("normal", "user_defined", "unused"):
                node = self._trie
                for character in piece:
                    node = node.setdefault(character, {})
                node[_TRIE_ID] = token_id
            elif kind == "byte":
                self._byte_ids[int(piece[3:5], 16)] = token_id
        self._options = dict(options)

    def _normalize(self, text: str) -> str:
        options = self._options
        remove = options["remove_extra_whitespaces"]
        start = 0
        if remove:
            while start < len(text) and text[start] == " ":
                start += 1
        if start == len(text):
            return ""
        space = _SPACE_SYMBOL if options["escape_whitespaces"] else " "
        out = [space] if options["add_dummy_prefix"] else []
        previous_is_space = remove
        for character in text[start:]:
            if character == " ":
                if previous_is_space:
                    continue
                out.append(space)
                previous_is_space = remove
            else:
                out.append(character)
                previous_is_space = False
        normalized = "".join(out)
        if remove:
            while normalized.endswith(space):
                normalized = normalized[: -len(space)]
        return normalized

    def _unigram_encode(self, text: str) -> list[int]:
        symbols = self._normalize(text)
        size = len(symbols)
        # SentencePiece adds float32 scores; an array('f') rounds like C++ does.
        best = array.array("f", [0.0] * (size + 1))
        candidate = array.array("f", [0.0])
        starts = [-1] * (size + 1)
        best_ids = [0] * (size + 1)
        scores, types = self._scores, self._types
        unknown_score, unknown_id = self._options["unknown_score"], self._options["unk_id"]
        for start in range(size):
            till = best[start]
            single = False
            node = self._trie
            for end in range(start + 1, size + 1):
                node = node.get(symbols[end - 1])
                if node is None:
                    break
                token_id = node.get(_TRIE_ID)
                if token_id is None or types[token_id] == "unused":
                    continue
                candidate[0] = scores[token_id] + till
                if starts[end] == -1 or candidate[0] > best[end]:
                    best[end], starts[end], best_ids[end] = candidate[0], start, token_id
                if end == start + 1:
                    single = True
            if not single:
                candidate[0] = unknown_score + till
                if starts[start + 1] == -1 or candidate[0] > best[start + 1]:
                    best[start + 1], starts[start + 1], best_ids[start + 1] = candidate[0], start, unknown_id
        path, end = [], size
        while end > 0:
            path.append((starts[end], end, best_ids[end]))
            end = starts[end]
        ids: list[int] = []
        previous_unknown = False
        for start, end, token_id in reversed(path):
            unknown = token_id == unknown_id
            if unknown and self._options["byte_fallback"]:
                ids.extend(self._byte_ids[b] for b in symbols[start:end].encode("utf-8"))
            elif not (unknown and previous_unknown):
                ids.append(token_id)
            previous_unknown = unknown
        return ids

    def _unigram_decode(self, ids: list[int]) -> str:
        options = self._options
        text: list[str] = []
        pending = bytearray()
        # Whether the next piece starts the text, where SentencePiece drops the
        # space that add_dummy_prefix put before the first word.
        at_start = True

        def emit(part: str) -> None:
            if part:
                text.append(part)

        for token_id in ids:
            kind = self._types[token_id]
            if kind == "byte":
                pending.append(int(self._pieces[token_id][3:5], 16))
                continue
            emit(_decode_bytes_per_byte(pending))
            pending.clear()
            at_start = at_start and not text
            if kind == "control":
                continue
            piece, dropped = self._pieces[token_id], False
            if (
                at_start
                and (options["add_dummy_prefix"] or options["remove_extra_whitespaces"])
                and piece.startswith(_SPACE_SYMBOL)
            ):
                piece = piece[len(_SPACE_SYMBOL) :]
                dropped = not options["remove_extra_whitespaces"]
            emit(options["unk_surface"] if kind == "unknown" else piece.replace(_SPACE_SYMBOL, " "))
            at_start = at_start and not dropped and not text
        emit(_decode_bytes_per_byte(pending))
        return "".join(text)

    # Byte-level BPE.

    def _bpe_init(self, vocabulary: list[str], merges: list[str], options: Mapping[str, Any]) -> None:
        self._tokens = [_unescape(line) for line in vocabulary]
        self._ids = {token: token_id for token_id, token in enumerate(self._tokens)}
        self._merges = {}
        for rank, line in enumerate(merges):
            left, right = (_unescape(part) for part in line.split(" "))
            pair = (self._ids[left], self._ids[right])
            self._merges[pair] = (rank, self._ids[left + right])
        self._special = list(options["special_tokens"])
        self._split_literal = options["split_literal"]
        self._add_prefix_space = options["add_prefix_space"]
        self._byte_chars = bytes_to_unicode()
        self._char_bytes = {character: value for value, character in enumerate(self._byte_chars)}

    def _bpe_encode(self, text: str) -> list[int]:
        ids: list[int] = []
        position = piece_start = 0
        while position < len(text):
            matches = [s for s in self._special if text.startswith(s, position)]
            if not matches:
                position += 1
                continue
            special = max(matches, key=len)
            self._bpe_segment(text[piece_start:position], ids)
            ids.append(self._ids[special])
            position += len(special)
            piece_start = position
        self._bpe_segment(text[piece_start:], ids)
        return ids

    def _bpe_segment(self, segment: str, ids: list[int]) -> None:
        parts = segment.split(self._split_literal)
        for index, part in enumerate(parts):
            if index:
                self._bpe_word(self._split_literal, ids)
            self._bpe_word(part, ids)

    def _bpe_word(self, word: str, ids: list[int]) -> None:
        if not word:
            return
        if self._add_prefix_space and not word.startswith(" "):
            word = " " + word
        symbols = [self._ids.get(self._byte_chars[b]) for b in word.encode("utf-8")]
        symbols = [s for s in symbols if s is not None]
        count = len(symbols)
        previous = list(range(-1, count - 1))
        following = list(range(1, count)) + [-1]
        removed = [False] * count
        merges = self._merges
        queue = []
        for position in range(count - 1):
            merge = merges.get((symbols[position], symbols[position + 1]))
            if merge:
                queue.append((merge[0], position, merge[1]))
        heapq.heapify(queue)
        while queue:
            _, position, merged = heapq.heappop(queue)
            right = following[position]
            if removed[position] or right == -1:
                continue
            merge = merges.get((symbols[position], symbols[right]))
            if merge is None or merge[1] != merged:
                continue
            symbols[position] = merged
            removed[right] = True
            following[position] = following[right]
            if following[right] != -1:
                previous[following[right]] = position
            left = previous[position]
            if left != -1 and (merge := merges.get((symbols[left], merged))):
                heapq.heappush(queue, (merge[0], left, merge[1]))
            after = following[position]
            if after != -1 and (merge := merges.get((merged, symbols[after]))):
                heapq.heappush(queue, (merge[0], position, merge[1]))
        ids.extend(s for s, gone in zip(symbols, removed) if not gone)

    def _bpe_decode(self, ids: list[int]) -> str:
        data = bytearray()
        for token_id in ids:
            token = self._tokens[token_id]
            if all(character in self._char_bytes for character in token):
                data.extend(self._char_bytes[character] for character in token)
            else:
                data.extend(token.encode("utf-8"))
        return data.decode("utf-8", errors="replace")


def _decode_bytes_per_byte(data: bytearray) -> str:
    """UTF-8 text of bytes, one U+FFFD for each byte that starts no valid character."""
    out, index = [], 0
    while index < len(data):
        for length in (1, 2, 3, 4):
            try:
                out.append(bytes(data[index : index + length]).decode("utf-8"))
                index += length
                break
            except UnicodeDecodeError:
                continue
        else:
            out.append("\ufffd")
            index += 1
    return "".join(out)
