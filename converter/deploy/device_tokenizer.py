"""`export_device_tokenizer`: a keras-hub tokenizer as the files on-device text generation loads.

LiteRT-LM bundles take a Hugging Face `tokenizer.json` for BPE tokenizers and
the SentencePiece model for SentencePiece ones; `benchmarks.text` reads both
on the device. An export named `<name>` is:

* a `keras_hub.tokenizers.BytePairTokenizer` (GPT-2, Llama 3, SmolLM2 and the
  other subclasses): `<name>.tokenizer.json`, written with the `tokenizers`
  library (`type` `hf_tokenizer_json`);
* a `keras_hub.tokenizers.SentencePieceTokenizer` (and subclasses): its proto
  as `<name>.tokenizer.model` (`type` `sentencepiece_model`);
* always `<name>.tokenizer_spec.json`: `DeviceTokenizerExport.spec`, the
  vocabulary size, the bos/eos/pad/unk ids, whether encoding adds bos/eos, the
  files' sha256.

Byte-level BPE. keras-hub 0.32 tokenizes eagerly with `tokenizers` itself:
`models.BPE(vocab, merges)`, its special tokens (`unsplittable_tokens`) added
as special tokens, then `pre_tokenizers.Sequence([Split(pattern, "isolated"),
ByteLevel(add_prefix_space, use_regex=False)])` and `decoders.ByteLevel()`.
It passes its Llama 3 split regex as a plain `str`, which `tokenizers` takes
as a literal: no regex pre-split happens, merges run over each text between
special tokens as one word (what `tokenizer_export` and the Android reader
reproduce). So the tokenizer.json that gives keras-hub's ids keeps that
literal `Split` (`{"String": ...}`), not the `Regex` of Hugging Face's own
Llama 3 / SmolLM2 tokenizer.json: with the regex, ids differ on runs of spaces
and newlines (measured on SmolLM2: `"a  b   c\\n\\n\\nd"` and indented code). The
export rebuilds this pipeline from keras-hub's public attributes and refuses
one whose live `tokenizers` configuration differs from it, so a keras-hub
upgrade that changes the pipeline fails here.

SentencePiece. keras-hub runs the `sentencepiece` library on the proto, so the
model file gives its ids by construction. No tokenizer.json is written for
it: `tokenizers`' Unigram sums piece scores in float64 and SentencePiece in
float32, so paths whose scores tie in one and not the other come out
differently (measured on the tiny-gpt2 tokenizer: `"**" + "************" +
"*"` against `"*" + "**" + "************"`, equal in float64), and its
decoder spells unknown pieces differently. The spec records that reason
(`tokenizer_json_note`).

Before returning, the export loads its own files through `benchmarks.text`
and checks, on sample text (code, prose, accents, CJK, emoji, digits, runs of
spaces, tabs, newlines, CRLF, special tokens), that they give keras-hub's ids
and that decoding gives keras-hub's `detokenize` text, also for ids cut
inside multi-byte characters. Nothing is written: `save` (or the caller)
writes the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks import text as device_text
from converter.common.files import refuse_existing, write_files_atomically
from converter.deploy.android_export import check_name

BYTE_LEVEL_BPE = "byte_level_bpe"
SENTENCEPIECE = "sentencepiece"

# The pipeline keras-hub 0.32's BytePairTokenizer builds for its eager path
# (see the module docstring); anything else is refused before exporting.
_BPE_MODEL_OPTIONS = {
    "dropout": None,
    "unk_token": None,
    "continuing_subword_prefix": None,
    "end_of_word_suffix": None,
    "fuse_unk": False,
    "byte_fallback": False,
    "ignore_merges": False,
}
_SPECIAL_ATTRIBUTES = {
    "bos_id": ("start_token_id", "bos_token_id"),
    "eos_id": ("end_token_id", "eos_token_id"),
    "pad_id": ("pad_token_id",),
    "unk_id": ("unk_token_id",),
}
# Sample text the exported files must tokenize as keras-hub does.
_CHECK_DOCUMENTS = (0, 7, 21, 40)
_CHECK_DOCUMENT_CHARS = 1500
_CHECK_LINES = (
    "Größe, naïve café, déjà vu — «guillemets», ‘curly quotes’… Œuvre, Ærø, ß.\n"
    "日本語のテキストと中文字符、한국어 문장, Ελληνικά, русский текст, العربية, हिन्दी, ไทย\n"
    "emoji 🙂🚀🎉, a family 👩‍👩‍👧 (ZWJ), flags 🇫🇷, skin tone 👍🏽, math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢\n"
    "tabs\tand\t\ttabs, CRLF\r\nline, NBSP\u00a0here, thin\u2009space, ideographic\u3000space\n"
    "   leading spaces, trailing spaces   \n\n\nnumbers 1234567890 3.14159 1e-10 0x1F 2026-12-01 100,000\n"
    "it's, we're, they'LL, don't, I'M, 'quoted' and \"double\" -- ~~~ ### @@@ $$$\n"
    "def f(x):\n    if x > 0:\n        return {'a': [1, 2, 3]}\n\treturn None  # done\n"
)
_CHECK_EDGES = ("", " ", "a", "  x  ", "\n", "\n\n", "   ", "🙂", "1", "The capital of France is")
_DECODE_CUTS = 24


@dataclasses.dataclass(frozen=True)
class DeviceTokenizerExport:
    """A tokenizer as on-device files.

    Attributes:
      files: file name -> content: the tokenizer file and the spec sidecar.
      spec: the sidecar's content: `format`, `format_version`, `name`,
        `type` (`hf_tokenizer_json` or `sentencepiece_model`), `file`,
        `vocabulary_size`, `bos_id`, `eos_id`, `pad_id`, `unk_id` (None where
        keras-hub declares none), `add_bos`/`add_eos`, `skip_special_tokens`
        (decoding drops special tokens: False, as keras-hub's `detokenize`),
        `special_tokens`, `tokenizer_json` (a tokenizer.json among the files, or
        None) with `tokenizer_json_note`, `algorithm`, `keras_hub_class`,
        versions, `sha256` of the tokenizer file and what the check covered.
    """

    files: Mapping[str, bytes]
    spec: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def spec_file(self) -> str:
        """The sidecar's name; `benchmarks.text.load_text_tokenizer` takes it, or the tokenizer file."""
        return device_text.spec_file_name(self.name)

    def to_json(self) -> str:
        return _spec_json(self.spec)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
        """Writes the files into the folder `path` (created if missing), the spec last; returns the spec's path.

        Raises:
          FileExistsError: one of the files exists and `overwrite` is False.
          NotADirectoryError: `path` is a file.
        """
        folder = pathlib.Path(path)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{str(folder)!r} is a file; pass the folder the tokenizer files go into.")
        refuse_existing([folder / name for name in self.files], overwrite=overwrite)
        ordered = dict(sorted(self.files.items(), key=lambda item: item[0] == self.spec_file))
        write_files_atomically(folder, ordered)
        return folder / self.spec_file


def export_device_tokenizer(tokenizer: Any, *, name: str) -> DeviceTokenizerExport:
    """Turns a keras-hub tokenizer into the files on-device generation loads, checked against keras-hub.

    Args:
      tokenizer: a `keras_hub.tokenizers.BytePairTokenizer` or
        `SentencePieceTokenizer` (or a subclass), returning int ids without
        padding (`sequence_length=None`). Pass a task's `.tokenizer`.
      name: file name stem (letters, digits, `.`, `_`, `-`).

    Returns:
      The files and their spec; nothing is written.

    Raises:
      TypeError: another kind of tokenizer (the message names the supported ones).
      ValueError: a bad name, or a supported tokenizer configured in a way the
        export cannot reproduce (the message says which setting).
      RuntimeError: the exported files give other ids or text than keras-hub
        on the sample text (the message names the first difference).
    """
    import keras_hub  # pylint: disable=import-outside-toplevel

    name = check_name(name)
    if isinstance(tokenizer, keras_hub.tokenizers.BytePairTokenizer):
        kind = BYTE_LEVEL_BPE
    elif isinstance(tokenizer, keras_hub.tokenizers.SentencePieceTokenizer):
        kind = SENTENCEPIECE
    else:
        raise TypeError(
            f"Cannot export a {type(tokenizer).__name__} for on-device generation: supported are "
            "keras_hub.tokenizers.BytePairTokenizer (GPT-2, Llama 3, SmolLM2 and other subclasses; exported "
            "as a Hugging Face tokenizer.json) and keras_hub.tokenizers.SentencePieceTokenizer (and subclasses; "
            "exported as the SentencePiece model). For a keras-hub task or preprocessor, pass its .tokenizer."
        )
    _check_call_options(tokenizer)
    if kind == BYTE_LEVEL_BPE:
        tokenizer_file, data, details = _byte_pair_file(tokenizer, name)
    else:
        tokenizer_file, data, details = _sentencepiece_file(tokenizer, name)

    spec: dict[str, Any] = {
        "format": device_text.SPEC_FORMAT,
        "format_version": device_text.SPEC_FORMAT_VERSION,
        "name": name,
        "type": details.pop("type"),
        "file": tokenizer_file,
        "vocabulary_size": int(tokenizer.vocabulary_size()),
        **_special_ids(tokenizer, details.pop("fallback_special_ids", {})),
        "add_bos": bool(getattr(tokenizer, "add_bos", False)),
        "add_eos": bool(getattr(tokenizer, "add_eos", False)),
        "skip_special_tokens": False,
        **details,
        "keras_hub_class": type(tokenizer).__name__,
        "versions": _versions(),
        "sha256": {tokenizer_file: hashlib.sha256(data).hexdigest()},
    }
    files = {tokenizer_file: data}
    spec["check"] = _check_against_keras_hub(tokenizer, files, spec)
    files[device_text.spec_file_name(name)] = _spec_json(spec).encode("utf-8")
    return DeviceTokenizerExport(files=files, spec=spec)


def _spec_json(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def _versions() -> dict[str, str]:
    from importlib import metadata  # pylint: disable=import-outside-toplevel

    found = {}
    for package in ("keras-hub", "tokenizers", "sentencepiece"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _check_call_options(tokenizer: Any) -> None:
    if getattr(tokenizer, "sequence_length", None) is not None:
        raise ValueError(
            f"The {type(tokenizer).__name__} has sequence_length={tokenizer.sequence_length}, so keras-hub pads and "
            "truncates every text; the device tokenizer does not. Build it with sequence_length=None."
        )
    dtype = str(getattr(tokenizer, "compute_dtype", "int32"))
    if "int" not in dtype:
        raise ValueError(
            f"The {type(tokenizer).__name__} returns {dtype} tokens, not ids; build it with dtype='int32'."
        )
    if getattr(tokenizer, "_allow_python_workflow", True) is False:
        raise ValueError(
            f"The {type(tokenizer).__name__} was built with _allow_python_workflow=False, so keras-hub tokenizes "
            "with TensorFlow ops (a regex split the exported files do not reproduce). Build it with the default "
            "(True), the path keras-hub takes when called eagerly."
        )


def _special_ids(tokenizer: Any, fallback: Mapping[str, int | None]) -> dict[str, int | None]:
    """bos/eos/pad/unk ids as the keras-hub tokenizer declares them, else `fallback`."""
    found: dict[str, int | None] = {}
    for key, attributes in _SPECIAL_ATTRIBUTES.items():
        values = [getattr(tokenizer, attribute, None) for attribute in attributes]
        declared = next((int(value) for value in values if value is not None), None)
        found[key] = declared if declared is not None else fallback.get(key)
    return found


# Byte-level BPE.


def _keras_hub_backend_config(tokenizer: Any) -> dict[str, Any]:
    """The `tokenizers` configuration keras-hub runs for this tokenizer (built on first use)."""
    tokenizer.tokenize("")  # builds keras-hub's `tokenizers` backend if it has not yet
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        raise ValueError(
            f"The {type(tokenizer).__name__} has no `tokenizers` backend after a call, so keras-hub does not "
            "tokenize it with the Hugging Face library here; the export reproduces that library's path only."
        )
    return json.loads(backend.to_str())


def _split_pattern(config: Mapping[str, Any]) -> Any:
    """The Split step's pattern from keras-hub's configuration, as `tokenizers` takes it; refuses other pipelines."""
    from tokenizers import Regex  # pylint: disable=import-outside-toplevel

    pre = config.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if config.get("normalizer") is not None:
        problem = f"a normalizer ({json.dumps(config['normalizer'])[:200]})"
    elif not steps or len(steps) != 2 or steps[0].get("type") != "Split" or steps[1].get("type") != "ByteLevel":
        problem = f"pre-tokenizer {json.dumps(pre)[:300]}"
    elif config.get("post_processor") is not None:
        problem = f"post-processor {json.dumps(config['post_processor'])[:200]}"
    else:
        pattern = steps[0].get("pattern") or {}
        if "String" in pattern:
            return pattern["String"]
        if "Regex" in pattern:
            return Regex(pattern["Regex"])
        problem = f"split pattern {pattern}"
    raise ValueError(
        f"This BytePairTokenizer runs with {problem}, which is not the pipeline keras-hub 0.32 builds (split, "
        "byte-level mapping, BPE merges); extend converter/deploy/device_tokenizer.py before exporting it."
    )


def _byte_pair_file(tokenizer: Any, name: str) -> tuple[str, bytes, dict[str, Any]]:
    import tokenizers  # pylint: disable=import-outside-toplevel
    from tokenizers import decoders, models, pre_tokenizers  # pylint: disable=import-outside-toplevel

    vocabulary = {str(token): int(index) for token, index in dict(tokenizer.vocabulary).items()}
    size = len(vocabulary)
    if sorted(vocabulary.values()) != list(range(size)):
        raise ValueError(
            f"The BytePairTokenizer's vocabulary ids are not 0..{size - 1} without gaps or repeats; a model's "
            "logits index every id, so the device tokenizer needs them dense."
        )
    merges = []
    for line in tokenizer.merges:
        if "#version:" in str(line).lstrip():
            continue
        left, right = str(line).split(" ")
        merges.append((left, right))
    live = _keras_hub_backend_config(tokenizer)
    pattern = _split_pattern(live)
    byte_level = live["pre_tokenizer"]["pretokenizers"][1]
    split = live["pre_tokenizer"]["pretokenizers"][0]

    backend = tokenizers.Tokenizer(models.BPE(vocab=vocabulary, merges=merges))
    special_tokens = [str(token) for token in (tokenizer.unsplittable_tokens or [])]
    missing = [token for token in special_tokens if token not in vocabulary]
    if missing:
        raise ValueError(
            f"Special token(s) {', '.join(repr(t) for t in missing)} are not in the vocabulary; keras-hub would "
            "give them ids past the model's logits. Add them to the vocabulary."
        )
    if special_tokens:
        backend.add_special_tokens(special_tokens)
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(pattern=pattern, behavior=split.get("behavior", "Isolated").lower(), invert=False),
            pre_tokenizers.ByteLevel(
                add_prefix_space=bool(tokenizer.add_prefix_space),
                trim_offsets=bool(byte_level.get("trim_offsets", True)),
                use_regex=False,
            ),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    built = json.loads(backend.to_str())
    _check_same_pipeline(built, live, vocabulary)
    return (
        f"{name}{device_text.TOKENIZER_JSON_SUFFIX}",
        (backend.to_str(pretty=True) + "\n").encode("utf-8"),
        {
            "type": device_text.HF_TOKENIZER_JSON,
            "algorithm": BYTE_LEVEL_BPE,
            "special_tokens": sorted(special_tokens),
            "tokenizer_json": f"{name}{device_text.TOKENIZER_JSON_SUFFIX}",
            "tokenizer_json_note": (
                "keras-hub's eager pipeline: Split on keras-hub's split pattern as a "
                + ("literal string (no regex pre-split)" if isinstance(pattern, str) else "regex")
                + ", ByteLevel(use_regex=False), BPE merges, ByteLevel decoder"
            ),
        },
    )


def _check_same_pipeline(built: Mapping[str, Any], live: Mapping[str, Any], vocabulary: Mapping[str, int]) -> None:
    """Refuses a rebuilt tokenizer.json whose configuration differs from what keras-hub runs."""
    model = live.get("model") or {}
    if model.get("type") != "BPE" or any(model.get(k) != v for k, v in _BPE_MODEL_OPTIONS.items()):
        options = {k: model.get(k) for k in ("type", *_BPE_MODEL_OPTIONS)}
        raise ValueError(f"keras-hub runs a BPE model with options {options}; the export writes plain BPE merges.")
    if dict(model.get("vocab") or {}) != dict(vocabulary):
        raise ValueError(
            "keras-hub's `tokenizers` vocabulary differs from tokenizer.vocabulary; rebuild the tokenizer."
        )
    for section in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens"):
        if built.get(section) != live.get(section):
            raise ValueError(
                f"The rebuilt tokenizer.json's {section} differs from what keras-hub runs: "
                f"{json.dumps(built.get(section))[:300]} vs {json.dumps(live.get(section))[:300]}. keras-hub's "
                "pipeline changed; update converter/deploy/device_tokenizer.py."
            )
    built_model = built.get("model") or {}
    if built_model.get("merges") != model.get("merges"):
        raise ValueError("keras-hub's `tokenizers` merges differ from tokenizer.merges; rebuild the tokenizer.")


# SentencePiece.


def _sentencepiece_file(tokenizer: Any, name: str) -> tuple[str, bytes, dict[str, Any]]:
    from sentencepiece import sentencepiece_model_pb2  # pylint: disable=import-outside-toplevel

    proto = tokenizer.proto
    if not proto:
        raise ValueError("The SentencePieceTokenizer has no proto; load or build it first.")
    try:
        model = sentencepiece_model_pb2.ModelProto.FromString(bytes(proto))
    except Exception as error:  # protobuf's DecodeError
        raise ValueError(f"The SentencePieceTokenizer's proto does not parse: {error}") from error
    trainer = model.trainer_spec
    algorithm = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(trainer.model_type).lower()
    fallback = {
        "bos_id": trainer.bos_id if trainer.bos_id >= 0 else None,
        "eos_id": trainer.eos_id if trainer.eos_id >= 0 else None,
        "pad_id": trainer.pad_id if trainer.pad_id >= 0 else None,
        "unk_id": trainer.unk_id if trainer.unk_id >= 0 else None,
    }
    return (
        f"{name}{device_text.SENTENCEPIECE_SUFFIX}",
        bytes(proto),
        {
            "type": device_text.SENTENCEPIECE_MODEL,
            "algorithm": f"{SENTENCEPIECE}_{algorithm}",
            "special_tokens": [
                p.piece for p in model.pieces if p.type == sentencepiece_model_pb2.ModelProto.SentencePiece.CONTROL
            ],
            "fallback_special_ids": fallback,
            "normalization": model.normalizer_spec.name,
            "tokenizer_json": None,
            "tokenizer_json_note": (
                "not written: tokenizers' Unigram adds piece scores in float64 and SentencePiece in float32, so "
                "near-tied segmentations differ; LiteRT-LM takes the SentencePiece model itself"
            ),
        },
    )


# The check.


def _check_texts(special_tokens: Sequence[str], split_literal: str | None) -> list[str]:
    import representative_data  # pylint: disable=import-outside-toplevel

    corpus = representative_data.builtin_corpus()
    texts = [corpus[index % len(corpus)][:_CHECK_DOCUMENT_CHARS] for index in _CHECK_DOCUMENTS]
    texts.append(_CHECK_LINES)
    if special_tokens:
        texts.append("".join(f"{token}text {i}\n" for i, token in enumerate(special_tokens)) + special_tokens[0] * 2)
    if split_literal:
        texts.append(f"before {split_literal} after")
    return texts + list(_CHECK_EDGES)


def _keras_hub_ids(tokenizer: Any, text: str) -> list[int]:
    import numpy as np  # pylint: disable=import-outside-toplevel

    return [int(i) for i in np.asarray(tokenizer.tokenize(text)).reshape(-1).tolist()]


def _keras_hub_text(tokenizer: Any, ids: list[int]) -> str:
    text = tokenizer.detokenize(ids)
    text = text.numpy() if hasattr(text, "numpy") else text
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)


def _first_difference(a: Sequence[Any], b: Sequence[Any]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _check_against_keras_hub(tokenizer: Any, files: Mapping[str, bytes], spec: Mapping[str, Any]) -> dict[str, int]:
    """Refuses files that give other ids or text than keras-hub on sample text; returns what was checked."""
    device = device_text.TextTokenizer.from_files(files.__getitem__, spec=spec)
    if device.vocabulary_size != spec["vocabulary_size"]:
        raise RuntimeError(
            f"The exported {spec['file']} has {device.vocabulary_size} tokens; keras-hub's tokenizer has "
            f"{spec['vocabulary_size']}."
        )
    literal = None
    if spec["type"] == device_text.HF_TOKENIZER_JSON:
        pattern = json.loads(files[spec["file"]])["pre_tokenizer"]["pretokenizers"][0]["pattern"]
        literal = pattern.get("String")
    texts = _check_texts(list(spec.get("special_tokens") or []), literal)
    where = f"The exported {spec['file']} ({spec['type']})"
    checked = {"texts": len(texts), "characters": 0, "tokens": 0, "decoded_prefixes": 0}
    for text in texts:
        expected = _keras_hub_ids(tokenizer, text)
        actual = device.encode(text)
        if actual != expected:
            first = _first_difference(expected, actual)
            raise RuntimeError(
                f"{where} gives other ids than keras-hub's {type(tokenizer).__name__} on {text[:40]!r}: first "
                f"difference at token {first}: keras-hub {expected[first : first + 6]} vs exported "
                f"{actual[first : first + 6]}. Nothing was written."
            )
        cuts = sorted({len(expected), *range(1, len(expected), max(1, len(expected) // _DECODE_CUTS))})
        for cut in cuts if expected else [0]:
            ids = expected[:cut]
            want, got = _keras_hub_text(tokenizer, ids), device.decode(ids)
            if got != want:
                first = _first_difference(want, got)
                raise RuntimeError(
                    f"{where} decodes {len(ids)} ids of {text[:40]!r} to other text than keras-hub's detokenize: "
                    f"first difference at character {first}: keras-hub {want[first : first + 20]!r} vs exported "
                    f"{got[first : first + 20]!r}. Nothing was written."
                )
            checked["decoded_prefixes"] += 1
        checked["characters"] += len(text)
        checked["tokens"] += len(expected)
    return checked
