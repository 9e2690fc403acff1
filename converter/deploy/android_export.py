"""`export_android`: a converted model, its tokenizer and a manifest, ready for an app's assets.

An export of name `<name>` is these files in one folder:

    <name>.tflite       the model, its manifest embedded as metadata
    <name>.json         the manifest (android_manifest.schema.json)
    <name>.vocab.txt    the tokenizer's vocabulary (see tokenizer_export)
    <name>.merges.txt   BPE merges (byte-level BPE tokenizers only)

The manifest describes the signature (input and output names, dtypes, shapes,
quantization), seq_len, the vocabulary, special token ids, mode, minimum
runtime version, and the sha256 and size of every file. The `.tflite` file
carries the same manifest in its metadata (`METADATA_NAME`), so the model file
alone says what it is; the embedded copy lacks only the `.tflite` file's own
entry in `files`, since a file cannot contain its own hash.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

from converter import tflite_file
from converter.common.files import write_files_atomically
from converter.deploy import exported_tokenizer, manifest_schema, tokenizer_export
from converter.tflite_file import inspection

METADATA_NAME = "keras_lm_litert_manifest"
FORMAT = "keras-lm-litert-android"
FORMAT_VERSION = 1
DEFAULT_ASSETS_DIR = "android/app/src/main/assets"
MODEL_SUFFIX = ".tflite"
MANIFEST_SUFFIX = ".json"
_SUFFIXES = (MODEL_SUFFIX, MANIFEST_SUFFIX, tokenizer_export.VOCABULARY_SUFFIX, tokenizer_export.MERGES_SUFFIX)
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SPECIAL_KEYS = ("bos", "eos", "pad", "unk")
# Text the exporter tokenizes with keras-hub and with the exported files before
# writing anything: code, prose, and characters outside most vocabularies.
_CHECK_DOCUMENTS = 4
_CHECK_CHARS = 6000
_CHECK_EXTRA = (
    "Größe, naïve café, déjà vu — «quotes» and ‘curly’ ones…\n"
    "日本語のテキストと中文字符, 한국어, Ελληνικά, русский, العربية, हिन्दी\n"
    "emoji 🙂🚀 and a family 👩‍👩‍👧, tabs\there, CRLF\r\n, NBSP\u00a0and   three spaces 1234567\n"
)


@dataclasses.dataclass(frozen=True)
class AndroidExport:
    """An Android export: its files and manifest, and where it was written.

    Attributes:
      folder: the asset folder it was saved to (None until saved).
      name: the file name stem of every file.
      manifest: the manifest as written to `<name>.json`.
      contents: file name -> bytes of every file of the export.
    """

    folder: str | None
    name: str
    manifest: Mapping[str, Any]
    contents: Mapping[str, bytes] = dataclasses.field(repr=False, default_factory=dict)

    @property
    def files(self) -> dict[str, Mapping[str, Any]]:
        """File name -> {"sha256", "size_bytes"} for every file of the export."""
        return dict(self.manifest["files"])

    @property
    def model_path(self) -> pathlib.Path:
        return pathlib.Path(self.folder) / f"{self.name}{MODEL_SUFFIX}"

    @property
    def manifest_path(self) -> pathlib.Path:
        return pathlib.Path(self.folder) / f"{self.name}{MANIFEST_SUFFIX}"

    def to_json(self) -> str:
        return json.dumps(self.manifest, indent=2, ensure_ascii=False) + "\n"

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> AndroidExport:
        """Writes every file into the asset folder `path` at once (staged, then renamed into place).

        Files of an older export of the same name that this one lacks are removed.

        Returns:
          A copy with `folder` set.

        Raises:
          ValueError, NotADirectoryError, IsADirectoryError, FileExistsError: see `check_export_target`.
        """
        folder = check_export_target(path, self.name, overwrite=overwrite)
        # The manifest goes last: a reader that finds it finds the files it lists.
        ordered = dict(sorted(self.contents.items(), key=lambda item: item[0].endswith(MANIFEST_SUFFIX)))
        write_files_atomically(folder, ordered, remove=set(export_file_names(self.name)) - set(ordered))
        return dataclasses.replace(self, folder=str(folder))


def check_name(name: str) -> str:
    """Returns `name` if it is a plain file name stem.

    Raises:
      ValueError: the name is empty, holds a path separator or `..`, or has
        characters outside letters, digits, `.`, `_` and `-` (Android asset
        names starting with `.` are also left out of the APK).
    """
    text = str(name)
    if "/" in text or "\\" in text or ".." in text or (os.sep in text) or (os.altsep and os.altsep in text):
        raise ValueError(
            f"Export name {text!r} must be a plain file name: no path separators and no '..'. "
            "Pass the folder as out_dir and a name such as 'tiny-gpt2_int8'."
        )
    if not _NAME_PATTERN.fullmatch(text):
        raise ValueError(
            f"Export name {text!r} must start with a letter or digit and hold only letters, "
            "digits, '.', '_' and '-' (for example 'tiny-gpt2_int8')."
        )
    return text


def export_file_names(name: str) -> tuple[str, ...]:
    """Every file an export of `name` may write."""
    return tuple(f"{name}{suffix}" for suffix in _SUFFIXES)


def check_export_target(out_dir: str | os.PathLike, name: str, *, overwrite: bool) -> pathlib.Path:
    """Refuses an output folder that cannot take an export of `name`.

    Returns:
      The folder as a path.

    Raises:
      ValueError: a bad name (see `check_name`).
      NotADirectoryError: `out_dir`, or a folder above it, is a file.
      IsADirectoryError: a folder sits where an export file goes.
      FileExistsError: an export of `name` is there and `overwrite` is False.
    """
    check_name(name)
    folder = pathlib.Path(out_dir)
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise NotADirectoryError(
                    f"{str(ancestor)!r} is a file, so {str(folder)!r} cannot be the export folder. "
                    "Pass a folder, e.g. an app's src/main/assets."
                )
            break
    existing = [n for n in export_file_names(name) if (folder / n).exists() or (folder / n).is_symlink()]
    for file_name in existing:
        if (folder / file_name).is_dir():
            raise IsADirectoryError(f"{str(folder / file_name)!r} is a folder; remove it or choose another name.")
    if existing and not overwrite:
        raise FileExistsError(
            f"{str(folder)!r} already holds an export named {name!r} ({', '.join(existing)}). Pass "
            "overwrite=True (--overwrite, or OVERWRITE=1 with make) to replace it, or choose "
            "another name or folder."
        )
    return folder


def export_android(
    result: Any,
    out_dir: str | os.PathLike = DEFAULT_ASSETS_DIR,
    *,
    tokenizer: Any = None,
    name: str | None = None,
    special_token_ids: Mapping[str, int | None] | None = None,
    overwrite: bool = False,
) -> AndroidExport:
    """Writes a converted model, its tokenizer and a manifest into an asset folder.

    Args:
      result: a `ConversionResult` (from `convert_keras`).
      out_dir: the folder, typically an app's `src/main/assets`; created if
        missing.
      tokenizer: the model's keras-hub tokenizer (SentencePieceTokenizer with a
        unigram model, or BytePairTokenizer), e.g. `LoadedModel.tokenizer`,
        `causal_lm.preprocessor.tokenizer` or
        `keras_hub.tokenizers.Tokenizer.from_preset(folder)`.
      name: file name stem; defaults to `<model>_<mode>`.
      special_token_ids: overrides for the `bos`, `eos`, `pad`, `unk` ids the
        tokenizer declares (None removes one).
      overwrite: replace an existing export of the same name.

    Returns:
      The written export.

    Raises:
      ValueError: a bad name, no tokenizer, a tokenizer configuration the device
        tokenizers do not implement, a tokenizer larger than the model's
        vocabulary, or special ids out of range.
      TypeError: an unsupported tokenizer class.
      NotADirectoryError, IsADirectoryError, FileExistsError: see
        `check_export_target`.
      RuntimeError: the exported tokenizer or model does not reproduce the
        original (a bug; nothing is written).
    """
    model_bytes = getattr(result, "model", None)
    if not isinstance(model_bytes, (bytes, bytearray)) or not model_bytes:
        raise TypeError(
            f"export_android needs a ConversionResult with the model bytes, got {type(result).__name__}. "
            "Convert first: result = converter.convert_keras(model, mode, ...)."
        )
    name = check_name(name if name is not None else f"{result.model_name}_{result.mode}")
    folder = check_export_target(out_dir, name, overwrite=overwrite)
    if tokenizer is None:
        raise ValueError(
            f"No tokenizer for {result.model_name!r}: an app needs one to turn text into token ids. "
            "Pass the model's keras-hub tokenizer, e.g. tokenizer=loaded.tokenizer (from "
            "converter.load_model), causal_lm.preprocessor.tokenizer, or "
            "keras_hub.tokenizers.Tokenizer.from_preset(preset_folder)."
        )
    tokenizer_export.tokenizer_type(tokenizer)

    tokens = tokenizer_export.export_tokenizer(tokenizer, name=name)
    special = _special_ids(tokens, special_token_ids)
    _check_tokenizer_round_trip(tokenizer, tokens)
    described = _describe_model(bytes(model_bytes), result)
    if tokens.spec["vocabulary_size"] > described["vocabulary_size"]:
        raise ValueError(
            f"The tokenizer has {tokens.spec['vocabulary_size']} ids but the model only "
            f"{described['vocabulary_size']} logits; pass the model's own tokenizer."
        )
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "model": dict(described, file=f"{name}{MODEL_SUFFIX}"),
        "tokenizer": dict(tokens.spec),
        "special_token_ids": special,
        "files": {file_name: _digest(data) for file_name, data in tokens.files.items()},
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": {k: str(v) for k, v in dict(getattr(result, "versions", None) or {}).items()},
    }
    final_model = embed_manifest(bytes(model_bytes), manifest)
    _check_same_outputs(bytes(model_bytes), final_model, manifest["model"])
    model_file = manifest["model"]["file"]
    manifest["files"] = {model_file: _digest(final_model), **manifest["files"]}
    manifest_schema.validate_manifest(manifest)

    contents = {model_file: final_model, **tokens.files}
    export = AndroidExport(folder=None, name=name, manifest=manifest, contents=contents)
    contents[f"{name}{MANIFEST_SUFFIX}"] = export.to_json().encode("utf-8")
    return export.save(folder, overwrite=overwrite)


def _digest(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}


def _special_ids(tokens: tokenizer_export.TokenizerExport, overrides) -> dict[str, int | None]:
    special = {key: tokens.special_token_ids.get(key) for key in _SPECIAL_KEYS}
    for key, value in dict(overrides or {}).items():
        if key not in _SPECIAL_KEYS:
            raise ValueError(f"Unknown special token {key!r}; use {', '.join(_SPECIAL_KEYS)}.")
        special[key] = value
    size = tokens.spec["vocabulary_size"]
    for key, value in special.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size):
            raise ValueError(f"Special token id {key}={value!r} is not an id in [0, {size}).")
    return special


def _check_text() -> str:
    import representative_data  # pylint: disable=import-outside-toplevel

    documents = representative_data.builtin_corpus()[:_CHECK_DOCUMENTS]
    return "\n\n".join(document[: _CHECK_CHARS // _CHECK_DOCUMENTS] for document in documents) + "\n" + _CHECK_EXTRA


def _check_tokenizer_round_trip(tokenizer: Any, tokens: tokenizer_export.TokenizerExport) -> None:
    """Refuses an export whose files do not give keras-hub's ids on sample text."""
    import representative_data  # pylint: disable=import-outside-toplevel

    text = _check_text()
    expected = representative_data.TokenizerAdapter(tokenizer).encode(text).tolist()
    reader = exported_tokenizer.ExportedTokenizer(tokens.spec, tokens.files.__getitem__)
    actual = reader.encode(text)
    if actual != expected:
        first = next((i for i, (a, b) in enumerate(zip(expected, actual)) if a != b), min(len(expected), len(actual)))
        raise RuntimeError(
            f"The exported {tokens.spec['type']} tokenizer gives other ids than keras-hub's "
            f"{type(tokenizer).__name__} on sample text (first difference at token {first}: "
            f"{expected[first : first + 5]} vs {actual[first : first + 5]}). This is a gap in "
            "converter/tokenizer_export.py and the device tokenizers; nothing was written."
        )


def _tensor_entry(info: inspection.TensorInfo) -> dict[str, Any]:
    quantization = None
    if info.quantization is not None:
        quantization = {
            "scale": list(info.quantization.scale),
            "zero_point": list(info.quantization.zero_point),
            "quantized_dimension": info.quantization.quantized_dimension,
        }
    return {"name": "", "dtype": info.dtype, "shape": list(info.shape), "quantization": quantization}


def _describe_model(model: bytes, result: Any) -> dict[str, Any]:
    """The manifest's `model` section, read from the model itself."""
    inspected = inspection.inspect_model(model)
    if getattr(result, "generation", None):
        return _describe_generation_model(inspected, result)
    model_object = inspection.load_model_object(model)
    signatures = model_object.signatureDefs or []
    if len(signatures) != 1:
        raise ValueError(f"The model has {len(signatures)} signatures; an export needs exactly one.")
    inputs = [dict(_tensor_entry(t), name=n) for n, t in inspected.inputs.items()]
    outputs = [dict(_tensor_entry(t), name=n) for n, t in inspected.outputs.items()]
    logits = outputs[0]["shape"]
    if len(logits) != 3:
        raise ValueError(f"The model's first output has shape {logits}; expected [1, seq_len, vocab] logits.")
    token_ids = [entry for entry in inputs if entry["name"] == "token_ids"]
    if not token_ids or token_ids[0]["shape"] != [1, int(result.seq_len)]:
        raise ValueError(
            f"The model has no token_ids input of shape [1, {result.seq_len}] (inputs: "
            f"{[(e['name'], e['shape']) for e in inputs]}); export a model from convert_keras."
        )
    return {
        "file": "",
        "model_name": str(result.model_name),
        "source": str(getattr(result, "model_source", "")),
        "mode": str(result.mode),
        "seq_len": int(result.seq_len),
        "vocabulary_size": int(logits[-1]),
        "min_runtime_version": inspected.min_runtime_version,
        "signature_key": inspection.decode_name(signatures[0].signatureKey),
        "inputs": inputs,
        "outputs": outputs,
        "check": dict(result.check) if getattr(result, "check", None) else None,
    }


def _describe_generation_model(inspected: inspection.ModelInspection, result: Any) -> dict[str, Any]:
    """The `model` section of a generation model: its decode signature, and every context's signatures."""
    described = dict(result.generation)
    context_length = int(described["context_length"])
    contexts = []
    for context in (*described.get("smaller_contexts", ()), context_length):
        prefix = "" if context == context_length else f"ctx{context}_"
        contexts.append(
            {
                "context": int(context),
                "decode": f"{prefix}decode",
                "prefill": {str(t): f"{prefix}prefill_{t}" for t in described["prefill_lengths"]},
                "cache_shape": list(described["cache"]["shape_by_context"][str(context)]),
            }
        )
    named = [c["decode"] for c in contexts] + [k for c in contexts for k in c["prefill"].values()]
    missing = [key for key in named if key not in inspected.signatures]
    if missing:
        raise ValueError(
            f"The report describes signatures {', '.join(missing)} that the model lacks; export the .tflite its "
            "report was written for."
        )
    decode = inspected.signatures["decode"]
    inputs = [dict(_tensor_entry(t), name=n) for n, t in decode.inputs.items()]
    outputs = [dict(_tensor_entry(t), name=n) for n, t in decode.outputs.items()]
    logits = decode.outputs["logits"].shape
    return {
        "file": "",
        "model_name": str(result.model_name),
        "source": str(getattr(result, "model_source", "")),
        "mode": str(result.mode),
        "seq_len": context_length,
        "vocabulary_size": int(logits[-1]),
        "min_runtime_version": inspected.min_runtime_version,
        "signature_key": "decode",
        "inputs": inputs,
        "outputs": outputs,
        "check": dict(result.check) if getattr(result, "check", None) else None,
        "generation": {
            "context_length": context_length,
            "contexts": contexts,
            "tokens": "tokens",
            "input_pos": "input_pos",
            "logits": "logits",
            "cache_names": list(described["cache"]["names"]),
            "cache_dtype": described["cache"]["dtype"],
            "cache_layout": described["cache"]["layout"],
            "start_token_id": described.get("start_token_id"),
            "stop_token_ids": list(described.get("stop_token_ids") or []),
        },
    }


def embed_manifest(model: bytes, manifest: Mapping[str, Any]) -> bytes:
    """Returns the model with `manifest` as UTF-8 JSON metadata named `METADATA_NAME`.

    An existing entry of that name is replaced; everything else is kept.
    """
    payload = json.dumps(manifest, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return tflite_file.embed_metadata(model, METADATA_NAME, payload)


def read_embedded_manifest(model: bytes | str | os.PathLike) -> dict[str, Any] | None:
    """The manifest embedded in a `.tflite` model, or None if it has none."""
    text = tflite_file.read_metadata(model, METADATA_NAME)
    return None if text is None else json.loads(text)


def _check_same_outputs(original: bytes, final: bytes, model_section: Mapping[str, Any]) -> None:
    """Refuses a rewritten model whose outputs differ from the original's."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel

    rng = np.random.default_rng(0)
    feed = {}
    for entry in model_section["inputs"]:
        if entry["name"] in ("token_ids", "tokens"):
            values = rng.integers(0, model_section["vocabulary_size"], entry["shape"])
        elif entry["name"] == "input_pos":
            values = np.arange(int(np.prod(entry["shape"]))).reshape(entry["shape"])
        else:  # the padding mask, or a generation model's KV caches
            values = np.ones(entry["shape"]) if entry["dtype"] == "bool" else rng.normal(0, 1, entry["shape"])
        feed[entry["name"]] = values.astype(entry["dtype"])
    key = model_section["signature_key"]
    before = litert.Interpreter(model_content=original).get_signature_runner(key)(**feed)
    after = litert.Interpreter(model_content=final).get_signature_runner(key)(**feed)
    for output, value in before.items():
        if not np.array_equal(value, after[output]):
            raise RuntimeError(
                f"Embedding the manifest changed output {output!r} of the model; this is a bug "
                "in converter/android_export.py and nothing was written."
            )
