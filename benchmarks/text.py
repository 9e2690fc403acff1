"""Text to token ids and back on the device, from the files `converter.deploy.export_device_tokenizer` writes.

Device side: the Hugging Face `tokenizers` library or `sentencepiece`, each
imported only when a tokenizer of its kind is loaded, and never TensorFlow,
Keras or keras-hub. An export named `<name>` is:

    <name>.tokenizer.json        a Hugging Face tokenizer.json (byte-level BPE tokenizers), or
    <name>.tokenizer.model       the SentencePiece model proto (SentencePiece tokenizers)
    <name>.tokenizer_spec.json   the sidecar: special ids, vocabulary size, hashes (`SPEC_FORMAT`)

`load_text_tokenizer` takes any of these paths; given a tokenizer file it reads
the sidecar next to it if there is one, and otherwise takes what the file
itself says (a SentencePiece model names its bos/eos ids, a tokenizer.json
does not). The exporter checked on sample text that these files give exactly
keras-hub's ids and `detokenize` text, through this module.

For generation, `TextTokenizer.stream()` returns a `TextStream` that turns ids
into text as they come without cutting a multi-byte UTF-8 character that spans
tokens (e.g. an emoji from byte-level tokens):

    stream = tokenizer.stream()
    generator.generate(prompt, max_new_tokens=64, on_token=lambda t: print(stream.push(t), end=""))
    print(stream.flush())
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

SPEC_FORMAT = "keras-lm-litert/device-tokenizer"
SPEC_FORMAT_VERSION = 1
HF_TOKENIZER_JSON = "hf_tokenizer_json"
SENTENCEPIECE_MODEL = "sentencepiece_model"
TOKENIZER_JSON_SUFFIX = ".tokenizer.json"
SENTENCEPIECE_SUFFIX = ".tokenizer.model"
SPEC_SUFFIX = ".tokenizer_spec.json"
SPECIAL_ID_KEYS = ("bos_id", "eos_id", "pad_id", "unk_id")

_REPLACEMENT = "\ufffd"


def spec_file_name(name: str) -> str:
    """The sidecar's file name for an export named `name`."""
    return f"{name}{SPEC_SUFFIX}"


class TextTokenizer:
    """Encodes text to token ids and decodes ids to text, as the keras-hub tokenizer it was exported from.

    Build one with `load_text_tokenizer(path)` or `TextTokenizer.from_files`.

    Attributes:
      kind: `HF_TOKENIZER_JSON` or `SENTENCEPIECE_MODEL`.
      vocabulary_size: every id is in `[0, vocabulary_size)`.
      bos_id, eos_id, pad_id, unk_id: special ids, None where there is none.
      add_bos, add_eos: whether `encode` adds the bos/eos ids itself (as the
        keras-hub tokenizer did; the app adds them otherwise).
      source: where it was loaded from, for messages.
    """

    def __init__(
        self,
        *,
        kind: str,
        encode: Callable[[str], list[int]],
        decode: Callable[[list[int]], str],
        vocabulary_size: int,
        special_ids: Mapping[str, int | None],
        add_bos: bool = False,
        add_eos: bool = False,
        source: str = "",
    ):
        self.kind = kind
        self._encode = encode
        self._decode = decode
        self.vocabulary_size = int(vocabulary_size)
        self.bos_id = special_ids.get("bos_id")
        self.eos_id = special_ids.get("eos_id")
        self.pad_id = special_ids.get("pad_id")
        self.unk_id = special_ids.get("unk_id")
        self.add_bos = bool(add_bos)
        self.add_eos = bool(add_eos)
        self.source = source

    def __repr__(self) -> str:
        return (
            f"TextTokenizer(kind={self.kind!r}, vocabulary_size={self.vocabulary_size}, bos_id={self.bos_id}, "
            f"eos_id={self.eos_id}, source={self.source!r})"
        )

    @classmethod
    def from_files(
        cls, read_file: Callable[[str], bytes], *, spec: Mapping[str, Any] | None = None, file: str | None = None
    ) -> TextTokenizer:
        """A tokenizer from file contents: the one `spec` names, or `file` (then without a spec).

        Args:
          read_file: returns the bytes of a file by name.
          spec: the sidecar (`SPEC_FORMAT`); its `file` is loaded and checked
            against its hash, vocabulary size and special ids.
          file: with no spec, the tokenizer file to load; its kind is read from
            its content.

        Raises:
          ValueError: a spec of another format, a file that is neither a
            tokenizer.json nor a SentencePiece model, or a file that does not
            match its spec.
        """
        if spec is None:
            if file is None:
                raise ValueError("Pass spec= (a tokenizer spec) or file= (a tokenizer file name).")
            return _from_bytes(read_file(file), source=file, spec=None)
        _check_spec(spec, source=file or "the tokenizer spec")
        name = spec["file"] if file is None else file
        data = read_file(name)
        expected = (spec.get("sha256") or {}).get(name)
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise ValueError(
                f"{name} does not match the sha256 its tokenizer spec records: it comes from another export. "
                "Copy the tokenizer files of one export together."
            )
        return _from_bytes(data, source=name, spec=spec)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, as the keras-hub tokenizer gives them (bos/eos included if it added them)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str; got {type(text).__name__}.")
        return self._encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids, as keras-hub's `detokenize` gives it.

        Bytes that form no whole UTF-8 character (an id sequence cut inside a
        character) come out as U+FFFD; `stream()` holds them back instead.

        Raises:
          ValueError: an id outside `[0, vocabulary_size)`.
        """
        checked = []
        for token_id in ids:
            value = int(token_id)
            if not 0 <= value < self.vocabulary_size:
                raise ValueError(f"Token id {value} is not in [0, {self.vocabulary_size}) ({self.source}).")
            checked.append(value)
        return self._decode(checked) if checked else ""

    def stream(self) -> TextStream:
        """A streaming decoder for one generation (see `TextStream`)."""
        return TextStream(self.decode)


class TextStream:
    """Turns token ids into text one id at a time, never cutting a UTF-8 character.

    `push` returns the text the new ids complete: decoded ids end in U+FFFD
    while a character's bytes are still incomplete, and that text is held back
    until the character is whole. The concatenation of everything `push` and
    `flush` return equals `decode` of all ids. Each step decodes only the ids
    since the last complete character plus one before them (so tokenizers that
    drop a leading space at the start of a text still give the right spaces),
    not the whole generation.

    Args:
      decode: ids -> text, e.g. `TextTokenizer.decode`.
    """

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0  # ids before this are fully emitted and no longer decoded
        self._read_offset = 0  # ids before this are emitted
        self._parts: list[str] = []

    @property
    def ids(self) -> tuple[int, ...]:
        """Every id pushed so far."""
        return tuple(self._ids)

    @property
    def text(self) -> str:
        """Everything returned so far."""
        return "".join(self._parts)

    def push(self, ids: int | Iterable[int]) -> str:
        """Adds one id (or several) and returns the new complete text, possibly ''."""
        self._ids.extend((int(i) for i in ids) if isinstance(ids, Iterable) else [int(ids)])
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        current = self._decode(self._ids[self._prefix_offset :])
        if len(current) <= len(prefix) or current.endswith(_REPLACEMENT):
            return ""
        if not current.startswith(prefix):
            # Decoding is not prefix-stable here (rare): fall back on the whole text.
            return self._emit(self._decode(self._ids), len(self._ids))
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return self._add(current[len(prefix) :])

    def flush(self) -> str:
        """The text still held back (an incomplete character comes out as U+FFFD), at the end of a generation."""
        return self._emit(self._decode(self._ids), len(self._ids))

    def _emit(self, full: str, read: int) -> str:
        emitted = self.text
        new = full[len(emitted) :] if full.startswith(emitted) else ""
        self._prefix_offset = self._read_offset = read
        return self._add(new)

    def _add(self, text: str) -> str:
        if text:
            self._parts.append(text)
        return text


def load_text_tokenizer(path: str | os.PathLike) -> TextTokenizer:
    """Loads an exported tokenizer: `<name>.tokenizer_spec.json`, `<name>.tokenizer.json` or `<name>.tokenizer.model`.

    A plain Hugging Face `tokenizer.json` or SentencePiece `.model` works too
    (without a sidecar: bos/eos from the SentencePiece model, none for a
    tokenizer.json).

    Raises:
      FileNotFoundError: no file at `path` (or the file a spec names is missing).
      IsADirectoryError: `path` is a folder.
      ValueError: a file of an unknown kind, or one that does not match its spec.
    """
    path = pathlib.Path(path)
    data = _read(path)
    spec = _json_object(data)
    if spec is not None and spec.get("format") == SPEC_FORMAT:
        folder = path.parent
        return TextTokenizer.from_files(lambda name: _read(folder / name, named_by=path), spec=spec)
    sidecar = _sidecar_of(path)
    if sidecar is None:
        return _from_bytes(data, source=str(path), spec=None)
    sidecar_spec = _json_object(_read(sidecar))
    if sidecar_spec is None:
        raise ValueError(f"{str(sidecar)!r} is not a tokenizer spec (not a JSON object).")
    _check_spec(sidecar_spec, source=str(sidecar))
    listed = {sidecar_spec.get("file"), sidecar_spec.get("tokenizer_json")}
    if path.name not in listed:
        raise ValueError(
            f"{str(sidecar)!r} describes {sidecar_spec.get('file')!r}, not {path.name!r}: the files come from "
            "different exports. Keep the files of one export together, or load the spec file itself."
        )
    return TextTokenizer.from_files(lambda name: data, spec=sidecar_spec, file=path.name)


def _read(path: pathlib.Path, *, named_by: pathlib.Path | None = None) -> bytes:
    where = f" (named by {str(named_by)!r})" if named_by is not None else ""
    if path.is_dir():
        raise IsADirectoryError(
            f"{str(path)!r} is a folder; pass a tokenizer file (<name>{SPEC_SUFFIX}, <name>{TOKENIZER_JSON_SUFFIX} "
            f"or <name>{SENTENCEPIECE_SUFFIX})."
        )
    if not path.is_file():
        raise FileNotFoundError(f"No tokenizer file at {str(path)!r}{where}.")
    return path.read_bytes()


def _sidecar_of(path: pathlib.Path) -> pathlib.Path | None:
    for suffix in (TOKENIZER_JSON_SUFFIX, SENTENCEPIECE_SUFFIX):
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            sidecar = path.with_name(spec_file_name(path.name[: -len(suffix)]))
            return sidecar if sidecar.is_file() else None
    return None


def _json_object(data: bytes) -> dict[str, Any] | None:
    if data.lstrip()[:1] != b"{":
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _check_spec(spec: Mapping[str, Any], *, source: str) -> None:
    if spec.get("format") != SPEC_FORMAT:
        raise ValueError(
            f"{source} is not a tokenizer spec: its format is {spec.get('format')!r}, not {SPEC_FORMAT!r}."
        )
    if spec.get("format_version") != SPEC_FORMAT_VERSION:
        raise ValueError(
            f"{source} has tokenizer spec version {spec.get('format_version')!r}; this reader knows version "
            f"{SPEC_FORMAT_VERSION}. Export the tokenizer again with this project's version."
        )
    missing = [key for key in ("type", "file", "vocabulary_size", *SPECIAL_ID_KEYS) if key not in spec]
    if missing:
        raise ValueError(f"{source} lacks {', '.join(missing)}.")


def _from_bytes(data: bytes, *, source: str, spec: Mapping[str, Any] | None) -> TextTokenizer:
    if not data:
        raise ValueError(f"{source} is empty; expected a tokenizer.json or a SentencePiece model.")
    config = _json_object(data)
    if config is not None:
        if "model" not in config or not isinstance(config["model"], dict):
            raise ValueError(
                f"{source} is JSON but neither a Hugging Face tokenizer.json (it has no 'model') nor a tokenizer "
                f"spec (format {SPEC_FORMAT!r})."
            )
        tokenizer = _hugging_face(data, source=source, spec=spec)
    else:
        tokenizer = _sentencepiece(data, source=source, spec=spec)
    if spec is not None:
        _check_against_spec(tokenizer, spec, source=source)
    return tokenizer


def _hugging_face(data: bytes, *, source: str, spec: Mapping[str, Any] | None) -> TextTokenizer:
    try:
        import tokenizers  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise ImportError(
            f"{source} is a Hugging Face tokenizer.json, which needs the `tokenizers` package: "
            "pip install tokenizers==0.23.3"
        ) from error
    try:
        backend = tokenizers.Tokenizer.from_str(data.decode("utf-8"))
    except Exception as error:  # the Rust library raises a plain Exception
        raise ValueError(f"{source} looks like a tokenizer.json, but `tokenizers` cannot load it: {error}") from error
    skip_special = bool((spec or {}).get("skip_special_tokens", False))
    return TextTokenizer(
        kind=HF_TOKENIZER_JSON,
        encode=lambda text: list(backend.encode(text).ids),
        decode=lambda ids: backend.decode(ids, skip_special_tokens=skip_special),
        vocabulary_size=backend.get_vocab_size(with_added_tokens=True),
        special_ids={key: (spec or {}).get(key) for key in SPECIAL_ID_KEYS},
        add_bos=bool((spec or {}).get("add_bos", False)),
        add_eos=bool((spec or {}).get("add_eos", False)),
        source=source,
    )


def _sentencepiece(data: bytes, *, source: str, spec: Mapping[str, Any] | None) -> TextTokenizer:
    try:
        import sentencepiece  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise ImportError(
            f"{source} is read as a SentencePiece model, which needs the `sentencepiece` package: "
            "pip install sentencepiece==0.2.3"
        ) from error
    try:
        processor = sentencepiece.SentencePieceProcessor(model_proto=data)
    except Exception as error:  # sentencepiece raises RuntimeError or a protobuf error
        raise ValueError(
            f"{source} is neither a Hugging Face tokenizer.json nor a SentencePiece model ({error}). Pass "
            f"<name>{SPEC_SUFFIX}, <name>{TOKENIZER_JSON_SUFFIX} or <name>{SENTENCEPIECE_SUFFIX}."
        ) from error
    add_bos = bool((spec or {}).get("add_bos", False))
    add_eos = bool((spec or {}).get("add_eos", False))
    if spec is not None:
        special = {key: spec.get(key) for key in SPECIAL_ID_KEYS}
    else:
        found = {"bos_id": processor.bos_id(), "eos_id": processor.eos_id()}
        found.update(pad_id=processor.pad_id(), unk_id=processor.unk_id())
        special = {key: (value if value >= 0 else None) for key, value in found.items()}
    return TextTokenizer(
        kind=SENTENCEPIECE_MODEL,
        encode=lambda text: list(processor.Encode(text, out_type=int, add_bos=add_bos, add_eos=add_eos)),
        decode=lambda ids: processor.Decode(ids),
        vocabulary_size=processor.GetPieceSize(),
        special_ids=special,
        add_bos=add_bos,
        add_eos=add_eos,
        source=source,
    )


def _check_against_spec(tokenizer: TextTokenizer, spec: Mapping[str, Any], *, source: str) -> None:
    expected_kind = spec["type"] if source == spec["file"] else HF_TOKENIZER_JSON
    if tokenizer.kind != expected_kind:
        raise ValueError(f"{source} is a {tokenizer.kind} file; its tokenizer spec says {expected_kind}.")
    if tokenizer.vocabulary_size != spec["vocabulary_size"]:
        raise ValueError(
            f"{source} has {tokenizer.vocabulary_size} tokens; its tokenizer spec says {spec['vocabulary_size']}."
        )
    for key in SPECIAL_ID_KEYS:
        value = spec[key]
        if value is not None and not 0 <= value < tokenizer.vocabulary_size:
            raise ValueError(f"The tokenizer spec's {key} {value} is outside [0, {tokenizer.vocabulary_size}).")
