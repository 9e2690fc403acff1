"""Writes a keras-hub tokenizer as plain files that a device reads without keras-hub.

Two tokenizer families are supported, each exactly as keras-hub 0.32 runs it
when called eagerly (the path `representative_data.TokenizerAdapter` and
therefore the converter use):

* `sentencepiece_unigram`: a `keras_hub.tokenizers.SentencePieceTokenizer`
  whose proto is a unigram model without a normalization table (rule
  `identity`), as the built-in tiny-gpt2 has. keras-hub calls the
  `sentencepiece` library, which segments with a Viterbi search over piece
  scores and falls back to `<0xNN>` byte pieces for characters outside the
  vocabulary.
* `byte_level_bpe`: a `keras_hub.tokenizers.BytePairTokenizer` (GPT-2,
  Llama 3 and SmolLM tokenizers are subclasses). keras-hub hands it to the
  Hugging Face `tokenizers` library: special tokens are cut out first, the
  rest is mapped byte by byte to GPT-2's printable characters and merged by
  merge rank.

  keras-hub 0.32 passes its Llama 3 split regex to `tokenizers` as a plain
  string, which `tokenizers` matches literally, so no regex pre-tokenization
  happens on the eager path: merges run over each text between special tokens
  as one word. (Inside `tf.data` keras-hub takes another path that does split
  with a regex, and can give other ids.) The export records the literal and
  refuses any other pre-tokenizer, so a keras-hub upgrade that changes this
  fails here instead of producing ids that differ from keras-hub's.

Files (all UTF-8, lines end in `\\n`; split on `\\n` only, not on other line
breaks such as U+2028). In every token, `\\` is written `\\\\`, a tab `\\t`, a
line feed `\\n` and a carriage return `\\r`:

* `<name>.vocab.txt`: line `i` is token id `i`. For `sentencepiece_unigram`
  a line is `piece<TAB>score<TAB>type`: the type is one of `normal`,
  `unknown`, `control`, `user_defined`, `unused`, `byte`, and the score is
  the float32 score the encoder gives the piece, written as a decimal. That is
  the model's own score, except for `user_defined` pieces, which
  `sentencepiece` 0.2.3 scores `float32(0.1 * (n - 1))` for a piece of `n`
  UTF-8 bytes (measured: it reproduces the library on every test text, where
  the formulas in older SentencePiece sources do not). For `byte_level_bpe` a
  line is the token.
* `<name>.merges.txt` (`byte_level_bpe` only): one merge per line,
  `left right`, highest priority first, each pair once.

Everything else a reader needs (flags, special tokens, scores derived from the
vocabulary) is in the manifest's `tokenizer` section, `TokenizerExport.spec`.
"""

from __future__ import annotations

import array
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

SENTENCEPIECE_UNIGRAM = "sentencepiece_unigram"
BYTE_LEVEL_BPE = "byte_level_bpe"

VOCABULARY_SUFFIX = ".vocab.txt"
MERGES_SUFFIX = ".merges.txt"

# SentencePiece piece types (sentencepiece_model.proto) by their file names.
_PIECE_TYPES = {1: "normal", 2: "unknown", 3: "control", 4: "user_defined", 5: "unused", 6: "byte"}
# An unknown character scores the lowest normal score minus this (float32).
_UNKNOWN_PENALTY = 10.0

_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}

# What keras-hub 0.32's BytePairTokenizer configures in `tokenizers`; see the
# module docstring.
_KERAS_HUB_BPE_SPLIT = {"behavior": "Isolated", "invert": False}
_BPE_MODEL_DEFAULTS = {
    "dropout": None,
    "unk_token": None,
    "continuing_subword_prefix": None,
    "end_of_word_suffix": None,
    "fuse_unk": False,
    "byte_fallback": False,
    "ignore_merges": False,
}


@dataclasses.dataclass(frozen=True)
class TokenizerExport:
    """A tokenizer as plain files plus the manifest section that describes them.

    Attributes:
      spec: the manifest's `tokenizer` section (type, file names, flags).
      special_token_ids: `bos`, `eos`, `pad`, `unk` ids, None where the
        tokenizer has no such token.
      files: file name -> content, the files named in `spec`.
    """

    spec: Mapping[str, Any]
    special_token_ids: Mapping[str, int | None]
    files: Mapping[str, bytes]


def escape_token(token: str) -> str:
    """Escapes backslash, tab, line feed and carriage return for the line files."""
    return "".join(_ESCAPES.get(character, character) for character in token)


def tokenizer_type(tokenizer: Any) -> str:
    """The export family of a keras-hub tokenizer.

    Raises:
      TypeError: neither a SentencePieceTokenizer nor a BytePairTokenizer.
    """
    import keras_hub  # pylint: disable=import-outside-toplevel

    if isinstance(tokenizer, keras_hub.tokenizers.SentencePieceTokenizer):
        return SENTENCEPIECE_UNIGRAM
    if isinstance(tokenizer, keras_hub.tokenizers.BytePairTokenizer):
        return BYTE_LEVEL_BPE
    raise TypeError(
        f"Cannot export a {type(tokenizer).__name__} for Android: supported are "
        "keras_hub.tokenizers.SentencePieceTokenizer (unigram) and "
        "keras_hub.tokenizers.BytePairTokenizer (and their subclasses). Pass the "
        "model's own keras-hub tokenizer (tokenizer=...)."
    )


def export_tokenizer(tokenizer: Any, *, name: str) -> TokenizerExport:
    """Turns a keras-hub tokenizer into plain files.

    Args:
      tokenizer: a keras-hub SentencePieceTokenizer (unigram, identity
        normalization) or BytePairTokenizer.
      name: file name stem; files are `<name>.vocab.txt` and, for BPE,
        `<name>.merges.txt`.

    Returns:
      The files and their manifest section.

    Raises:
      TypeError: an unsupported tokenizer class.
      ValueError: a supported class configured in a way the device
        tokenizers do not implement; the message says which setting.
    """
    kind = tokenizer_type(tokenizer)
    if kind == SENTENCEPIECE_UNIGRAM:
        return _export_sentencepiece(tokenizer, name=name)
    return _export_byte_pair(tokenizer, name=name)


def _special_ids_from_attributes(tokenizer: Any) -> dict[str, int | None]:
    """bos/eos/pad/unk ids that keras-hub tokenizer subclasses declare."""
    names = {
        "bos": ("start_token_id", "bos_token_id"),
        "eos": ("end_token_id", "eos_token_id"),
        "pad": ("pad_token_id",),
        "unk": ("unk_token_id",),
    }
    found: dict[str, int | None] = {}
    for key, attributes in names.items():
        found[key] = None
        for attribute in attributes:
            value = getattr(tokenizer, attribute, None)
            if value is not None:
                found[key] = int(value)
                break
    return found


def _float32(value: float) -> float:
    """Rounds a double to the nearest float32, as C++ does on assignment to float."""
    return array.array("f", [value])[0]


def _encoder_score(piece) -> float:
    """The score sentencepiece's encoder gives a piece (see the module docstring)."""
    if _PIECE_TYPES.get(piece.type) == "user_defined":
        return _float32(0.1 * (len(piece.piece.encode("utf-8")) - 1))
    return piece.score


def _lines(rows: list[str]) -> bytes:
    return ("".join(row + "\n" for row in rows)).encode("utf-8")


def _export_sentencepiece(tokenizer: Any, *, name: str) -> TokenizerExport:
    from sentencepiece import sentencepiece_model_pb2  # pylint: disable=import-outside-toplevel

    proto = tokenizer.proto
    if proto is None:
        raise ValueError("The SentencePieceTokenizer has no proto; load or build it first.")
    model = sentencepiece_model_pb2.ModelProto.FromString(proto)
    trainer, normalizer = model.trainer_spec, model.normalizer_spec
    kind = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(trainer.model_type)
    if trainer.model_type != sentencepiece_model_pb2.TrainerSpec.UNIGRAM:
        raise ValueError(
            f"The SentencePiece model is of type {kind}; the Android tokenizer implements "
            "unigram models only. Train it with model_type='unigram'."
        )
    if normalizer.precompiled_charsmap:
        raise ValueError(
            f"The SentencePiece model normalizes text with rule {normalizer.name!r}, a "
            "character map the Android tokenizer does not implement. Train it with "
            "normalization_rule_name='identity' (as tiny_gpt2.train_tokenizer_proto does)."
        )
    if trainer.treat_whitespace_as_suffix:
        raise ValueError(
            "The SentencePiece model treats whitespace as a suffix "
            "(treat_whitespace_as_suffix), which the Android tokenizer does not implement."
        )
    if tokenizer.add_bos or tokenizer.add_eos:
        raise ValueError(
            "The SentencePieceTokenizer adds BOS/EOS ids (add_bos/add_eos); build it with "
            "add_bos=False, add_eos=False and add those ids in the app."
        )

    rows, scores_normal = [], []
    for piece in model.pieces:
        type_name = _PIECE_TYPES.get(piece.type)
        if type_name is None:
            raise ValueError(f"Unknown SentencePiece piece type {piece.type} for {piece.piece!r}.")
        if type_name == "normal":
            scores_normal.append(piece.score)
        # Scores are float32 values held in doubles; repr names them exactly.
        rows.append(f"{escape_token(piece.piece)}\t{_encoder_score(piece)!r}\t{type_name}")
    if not scores_normal:
        raise ValueError("The SentencePiece model has no normal pieces.")
    vocabulary_file = f"{name}{VOCABULARY_SUFFIX}"
    special = {
        "bos": trainer.bos_id if trainer.bos_id >= 0 else None,
        "eos": trainer.eos_id if trainer.eos_id >= 0 else None,
        "pad": trainer.pad_id if trainer.pad_id >= 0 else None,
        "unk": trainer.unk_id,
    }
    special.update({k: v for k, v in _special_ids_from_attributes(tokenizer).items() if v is not None})
    spec = {
        "type": SENTENCEPIECE_UNIGRAM,
        "keras_hub_class": type(tokenizer).__name__,
        "vocabulary_size": len(model.pieces),
        "vocabulary_file": vocabulary_file,
        "sentencepiece": {
            "unk_id": int(trainer.unk_id),
            "unk_surface": trainer.unk_surface,
            "byte_fallback": bool(trainer.byte_fallback),
            "add_dummy_prefix": bool(normalizer.add_dummy_prefix),
            "remove_extra_whitespaces": bool(normalizer.remove_extra_whitespaces),
            "escape_whitespaces": bool(normalizer.escape_whitespaces),
            # The score of a character no piece covers: the lowest normal
            # score minus 10, in float32 as SentencePiece computes it.
            "unknown_score": _float32(min(scores_normal) - _UNKNOWN_PENALTY),
        },
    }
    return TokenizerExport(spec=spec, special_token_ids=special, files={vocabulary_file: _lines(rows)})


def _hugging_face_config(tokenizer: Any) -> dict[str, Any]:
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        tokenizer._maybe_initialized_tokenizers()  # pylint: disable=protected-access
        backend = tokenizer._tokenizer  # pylint: disable=protected-access
    return json.loads(backend.to_str())


def _check_byte_pair_pipeline(config: Mapping[str, Any]) -> tuple[str, bool]:
    """Returns (split literal, add_prefix_space) or refuses an unknown pipeline."""
    problem = None
    pre = config.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    model = config.get("model") or {}
    if config.get("normalizer") is not None:
        problem = f"a normalizer ({config['normalizer'].get('type')})"
    elif not steps or len(steps) != 2:
        problem = f"pre-tokenizer {json.dumps(pre)[:200]}"
    elif (
        steps[0].get("type") != "Split"
        or "String" not in (steps[0].get("pattern") or {})
        or any(steps[0].get(k) != v for k, v in _KERAS_HUB_BPE_SPLIT.items())
    ):
        problem = f"split step {json.dumps(steps[0])[:200]}"
    elif steps[1].get("type") != "ByteLevel" or steps[1].get("use_regex") is not False:
        problem = f"byte-level step {json.dumps(steps[1])[:200]}"
    elif model.get("type") != "BPE" or any(model.get(k) != v for k, v in _BPE_MODEL_DEFAULTS.items()):
        problem = "BPE model options " + json.dumps({k: model.get(k) for k in _BPE_MODEL_DEFAULTS})
    elif (config.get("decoder") or {}).get("type") != "ByteLevel":
        problem = f"decoder {config.get('decoder')}"
    if problem:
        raise ValueError(
            f"This BytePairTokenizer runs with {problem}, which differs from what keras-hub "
            "0.32 configures and what the Android tokenizer implements (literal split, "
            "byte-level mapping, plain BPE merges). Exporting it would give other ids than "
            "keras-hub; extend converter/tokenizer_export.py and the device tokenizers first."
        )
    return steps[0]["pattern"]["String"], bool(steps[1].get("add_prefix_space"))


def _export_byte_pair(tokenizer: Any, *, name: str) -> TokenizerExport:
    if getattr(tokenizer, "_allow_python_workflow", True) is False:
        raise ValueError(
            f"{type(tokenizer).__name__} was built with _allow_python_workflow=False, so "
            "keras-hub tokenizes with TensorFlow ops that split text with a regex, which the "
            "Android tokenizer does not implement. Build it with the default (True)."
        )
    vocabulary = dict(tokenizer.vocabulary)
    size = len(vocabulary)
    if sorted(vocabulary.values()) != list(range(size)):
        raise ValueError(
            f"The BytePairTokenizer's vocabulary ids are not 0..{size - 1} without gaps or "
            "repeats; the vocabulary file stores one token per id."
        )
    config = _hugging_face_config(tokenizer)
    split_literal, add_prefix_space = _check_byte_pair_pipeline(config)
    special_tokens = []
    for added in config.get("added_tokens") or []:
        content = added["content"]
        if vocabulary.get(content) != added["id"]:
            raise ValueError(
                f"Special token {content!r} is not in the vocabulary (keras-hub gave it id "
                f"{added['id']}); add it to the vocabulary."
            )
        if added.get("single_word") or added.get("lstrip") or added.get("rstrip") or added.get("normalized"):
            raise ValueError(f"Special token {content!r} has matching options the Android tokenizer lacks: {added}.")
        special_tokens.append(content)

    tokens = [""] * size
    for token, index in vocabulary.items():
        tokens[index] = token
    # `tokenizers` ranks a pair by its last line; keeping only that line keeps
    # every pair's order and leaves each pair once in the file.
    merges: dict[tuple[str, str], None] = {}
    for line in tokenizer.merges:
        if "#version:" in line.lstrip():
            continue
        left, right = str(line).split(" ")
        merges.pop((left, right), None)
        merges[(left, right)] = None
    vocabulary_file, merges_file = f"{name}{VOCABULARY_SUFFIX}", f"{name}{MERGES_SUFFIX}"
    spec = {
        "type": BYTE_LEVEL_BPE,
        "keras_hub_class": type(tokenizer).__name__,
        "vocabulary_size": size,
        "vocabulary_file": vocabulary_file,
        "merges_file": merges_file,
        "byte_level_bpe": {
            "add_prefix_space": add_prefix_space,
            "special_tokens": sorted(special_tokens),
            # Text equal to this literal is cut out and merged on its own
            # (see the module docstring); it does not occur in real text.
            "split_literal": split_literal,
        },
    }
    files = {
        vocabulary_file: _lines([escape_token(token) for token in tokens]),
        merges_file: _lines([f"{escape_token(a)} {escape_token(b)}" for a, b in merges]),
    }
    return TokenizerExport(spec=spec, special_token_ids=_special_ids_from_attributes(tokenizer), files=files)
