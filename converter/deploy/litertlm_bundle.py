"""`export_litertlm`: a generation model and its tokenizer as one `.litertlm` bundle that LiteRT-LM runs.

LiteRT-LM (the engine behind Google's on-device LLM samples) loads a
`.litertlm` file: sections for the LLM metadata, the tokenizer and the
`.tflite` with `prefill_<T>` / `decode` signatures. `litert-lm-builder`
(pinned) writes it; this module decides what goes in:

* the generation model, unchanged (LiteRT-LM looks its signatures up by name:
  `decode` and `prefill_<T>`, inputs `tokens`, `input_pos`, `kv_cache_k_<i>`,
  `kv_cache_v_<i>`, output `logits`; the shorter-context `ctx<C>_*`
  signatures stay in the file and are ignored by it);
* the tokenizer the conversion exported beside it: a Hugging Face
  `tokenizer.json` for byte-level BPE tokenizers (stored zlib-compressed by
  the builder) or the SentencePiece model for SentencePiece ones;
* `LlmMetadata`: the start token (the bos id, only when the tokenizer adds
  it, as the project's own loop does), the stop tokens (the eos id and the
  end-of-turn tokens the vocabulary has), the context as `max_num_tokens`,
  the model type (`generic_model`: LiteRT-LM's type for models it has no
  model-specific handling for, which Keras Llama and GPT-2 models are), the
  chat template where the model has one (Jinja, rendered by LiteRT-LM's
  conversation API), and a greedy default sampler (LiteRT-LM's CPU sampler
  implements top-p only; top-k 1 is the argmax).

Beside the bundle goes its record, `<name>.litertlm.json`
(`LitertLmBundle`): size, sha256, what went in. The device side
(`benchmarks.litertlm`) refuses a bundle that does not match it before
loading.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import importlib.metadata
import json
import os
import pathlib
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks import generation as device_generation
from benchmarks import litertlm as device_litertlm
from benchmarks import text as device_text
from converter import tflite_file
from converter.common import files

BUILDER = "litert-lm-builder"
# Tokens that end a turn in the vocabularies of the model families this project converts.
END_OF_TURN_TOKENS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "</s>")
# Tokenizer kinds LiteRT-LM reads, by the device tokenizer's `type`.
_TOKENIZER_KINDS = (device_text.HF_TOKENIZER_JSON, device_text.SENTENCEPIECE_MODEL)


@dataclasses.dataclass(frozen=True)
class LitertLmBundle:
    """A written `.litertlm` bundle: the record `benchmarks.litertlm.verify_bundle` checks it against.

    Attributes:
      path, size_bytes, sha256: the bundle file.
      model: the generation model inside (path, sha256, size_bytes, signatures, context).
      tokenizer: its type, file name and sha256.
      start_token_id: the token LiteRT-LM puts before the first turn (None: none).
      stop_token_ids: each ends a reply.
      max_num_tokens: the context, prompt and reply together.
      model_type: the `LlmModelType` LiteRT-LM treats it as.
      chat_template: the Jinja chat template, None where the model has none.
      versions: the builder that wrote it, the engine version it was made for.
    """

    schema: str
    created: str
    path: str
    size_bytes: int
    sha256: str
    model: dict[str, Any]
    tokenizer: dict[str, Any]
    start_token_id: int | None
    stop_token_ids: tuple[int, ...]
    max_num_tokens: int
    model_type: str
    chat_template: str | None
    versions: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike | None = None, *, overwrite: bool = False) -> pathlib.Path:
        """Writes the record (default: `<name>.litertlm.json` beside the bundle)."""
        target = pathlib.Path(path) if path is not None else device_litertlm.record_path(self.path)
        files.refuse_existing([target], overwrite=overwrite)
        return files.write_atomically(target, self.to_json())


def default_bundle_path(model_path: str | os.PathLike) -> pathlib.Path:
    """`<folder>/<model>_<mode>.litertlm` for `<folder>/<model>_<mode>_generate.tflite`."""
    path = pathlib.Path(model_path)
    stem = path.stem[: -len("_generate")] if path.stem.endswith("_generate") else path.stem
    return path.with_name(stem + device_litertlm.BUNDLE_SUFFIX)


def model_types() -> tuple[str, ...]:
    """The `LlmModelType` names the pinned builder knows."""
    from litert_lm_builder.runtime.proto import llm_model_type_pb2  # pylint: disable=import-outside-toplevel

    return tuple(field.name for field in llm_model_type_pb2.LlmModelType.DESCRIPTOR.fields)


def _check_generation_model(path: pathlib.Path) -> device_generation.GenerationSignatures:
    try:
        signatures = device_generation.read_signatures(path)
    except device_generation.NotAGenerationModelError as error:
        raise ValueError(
            f"{path.name} cannot go into a LiteRT-LM bundle: {error} The bundle takes the "
            "<model>_<mode>_generate.tflite that make convert GENERATE=1 writes."
        ) from None
    names = set(tflite_file.inspect_signatures(path))
    if "decode" not in names or not any(n.startswith("prefill_") for n in names):
        raise ValueError(
            f"{path.name} has no `decode` and `prefill_<T>` signatures (it has {', '.join(sorted(names))}), the "
            "names LiteRT-LM looks up: convert it again with generation=True (make convert GENERATE=1)."
        )
    return signatures


def _load_tokenizer(model: pathlib.Path, tokenizer: str | os.PathLike | None):
    """The tokenizer spec and its loaded tokenizer; refuses kinds LiteRT-LM does not read."""
    spec_path = pathlib.Path(tokenizer) if tokenizer is not None else device_generation.tokenizer_beside(model)
    if not spec_path.is_file():
        raise FileNotFoundError(
            f"No tokenizer spec at {str(spec_path)!r}: a bundle needs the tokenizer the conversion writes beside the "
            "generation model (make convert GENERATE=1), or pass tokenizer=<name>.tokenizer_spec.json."
        )
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{spec_path} is not a tokenizer spec (not JSON).") from None
    if not isinstance(spec, dict) or spec.get("format") != device_text.SPEC_FORMAT:
        raise ValueError(f"{spec_path} is not a tokenizer spec ({device_text.SPEC_FORMAT}).")
    if spec.get("type") not in _TOKENIZER_KINDS:
        raise ValueError(
            f"Tokenizer type {spec.get('type')!r} ({spec_path.name}) cannot go into a LiteRT-LM bundle: LiteRT-LM "
            f"reads a Hugging Face tokenizer.json ({device_text.HF_TOKENIZER_JSON}, byte-level BPE models) or a "
            f"SentencePiece model ({device_text.SENTENCEPIECE_MODEL}). Export the keras-hub tokenizer with "
            "converter.deploy.export_device_tokenizer, which writes one of them."
        )
    loaded = device_text.load_text_tokenizer(spec_path)  # checks the file against the spec's sha256
    return spec_path, spec, loaded


def _stop_tokens(loaded, spec: dict[str, Any], stop_token_ids: Iterable[int] | None) -> tuple[int, ...]:
    if stop_token_ids is not None:
        stops = [int(t) for t in stop_token_ids]
    else:
        stops = [] if loaded.eos_id is None else [int(loaded.eos_id)]
        for name in END_OF_TURN_TOKENS:
            if name not in spec.get("special_tokens", ()) and loaded.kind == device_text.HF_TOKENIZER_JSON:
                continue
            ids = loaded.encode(name)
            if len(ids) == 1 and loaded.decode(ids) == name and ids[0] not in stops:
                stops.append(int(ids[0]))
    bad = [t for t in stops if not 0 <= t < loaded.vocabulary_size]
    if not stops or bad:
        raise ValueError(
            f"Stop tokens {stops} are not ids of the {loaded.vocabulary_size}-token vocabulary: pass "
            "stop_token_ids= with at least one id the model ends a reply with."
        )
    return tuple(stops)


def _metadata(
    *,
    start_token_id: int | None,
    stop_token_ids: Sequence[int],
    max_num_tokens: int,
    model_type: str,
    chat_template: str | None,
):
    from litert_lm_builder.runtime.proto import llm_metadata_pb2  # pylint: disable=import-outside-toplevel

    metadata = llm_metadata_pb2.LlmMetadata()
    if start_token_id is not None:
        metadata.start_token.token_ids.ids.append(int(start_token_id))
    for token in stop_token_ids:  # each entry is one stop sequence, here of one token
        metadata.stop_tokens.add().token_ids.ids.append(int(token))
    metadata.max_num_tokens = int(max_num_tokens)
    getattr(metadata.llm_model_type, model_type).SetInParent()
    if chat_template:
        metadata.jinja_prompt_template = chat_template
    # What sessions that pass no sampler use (`litert-lm benchmark`, for one): greedy. The CPU sampler
    # implements TOP_P only (GREEDY is refused as "not implemented"); k=1 takes the argmax.
    metadata.sampler_params.type = metadata.sampler_params.TOP_P
    metadata.sampler_params.k = 1
    metadata.sampler_params.p = 1.0
    metadata.sampler_params.temperature = 1.0
    metadata.supports_thinking = False
    metadata.supports_function_calling = False
    return metadata


def export_litertlm(
    model_path: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    chat_template: str | None = None,
    stop_token_ids: Iterable[int] | None = None,
    model_type: str = "generic_model",
    overwrite: bool = False,
) -> LitertLmBundle:
    """Writes a generation model and its tokenizer as a `.litertlm` bundle, with its record beside it.

    Args:
      model_path: a generation `.tflite` (`convert_keras(..., generation=True)`,
        `make convert GENERATE=1`).
      out: the bundle's path; default `default_bundle_path(model_path)`.
      tokenizer: the tokenizer spec (`<name>.tokenizer_spec.json`); default the
        one beside the model.
      chat_template: the model's Jinja chat template, None where it has none.
      stop_token_ids: default: the eos id and the end-of-turn tokens
        (`END_OF_TURN_TOKENS`) of the vocabulary.
      model_type: the `LlmModelType` (see `model_types()`).
      overwrite: replace an existing bundle and record.

    Returns:
      The record, already saved beside the bundle.

    Raises:
      ValueError: a model without generation signatures (the message names
        the option), a tokenizer LiteRT-LM does not read or of another
        vocabulary size, an unknown model type, bad stop tokens.
      FileNotFoundError: no model or no tokenizer spec.
      FileExistsError: the bundle or its record exists and overwrite is False.
      All checked before anything is written; a failed write leaves nothing.
    """
    model = tflite_file.check_model_file(model_path)
    signatures = _check_generation_model(model)
    bundle = pathlib.Path(out) if out is not None else default_bundle_path(model)
    if bundle.suffix != device_litertlm.BUNDLE_SUFFIX:
        raise ValueError(f"out={str(bundle)!r}: a LiteRT-LM bundle's name ends in {device_litertlm.BUNDLE_SUFFIX}.")
    spec_path, spec, loaded = _load_tokenizer(model, tokenizer)
    if loaded.vocabulary_size != signatures.vocabulary_size:
        raise ValueError(
            f"The tokenizer {spec_path.name} has {loaded.vocabulary_size} tokens and the model "
            f"{signatures.vocabulary_size} logits: they come from different models."
        )
    known = model_types()
    if model_type not in known:
        raise ValueError(f"model_type={model_type!r}; LiteRT-LM {BUILDER} knows {', '.join(known)}.")
    if chat_template is not None and (not isinstance(chat_template, str) or not chat_template.strip()):
        raise ValueError("chat_template must be the Jinja template text, or None for a model without one.")
    stops = _stop_tokens(loaded, spec, stop_token_ids)
    start = int(loaded.bos_id) if loaded.add_bos and loaded.bos_id is not None else None
    record_file = device_litertlm.record_path(bundle)
    files.refuse_existing([bundle, record_file], overwrite=overwrite)

    # pylint: disable=import-outside-toplevel
    from google.protobuf import text_format
    from litert_lm_builder import litertlm_builder

    context = signatures.context_length
    metadata = _metadata(
        start_token_id=start,
        stop_token_ids=stops,
        max_num_tokens=context,
        model_type=model_type,
        chat_template=chat_template,
    )
    tokenizer_file = spec_path.with_name(spec["file"])
    builder = litertlm_builder.LitertLmFileBuilder()
    builder.add_system_metadata(
        litertlm_builder.Metadata(key="Authors", value="keras-lm-litert", dtype=litertlm_builder.DType.STRING)
    )
    with tempfile.TemporaryDirectory() as scratch:
        metadata_file = pathlib.Path(scratch) / "llm_metadata.textproto"  # the builder takes a file
        metadata_file.write_text(text_format.MessageToString(metadata), encoding="utf-8")
        builder.add_llm_metadata(str(metadata_file))
        builder.add_tflite_model(str(model), litertlm_builder.TfLiteModelType.PREFILL_DECODE, backend_constraint="cpu")
        if spec["type"] == device_text.HF_TOKENIZER_JSON:
            builder.add_hf_tokenizer(str(tokenizer_file))
        else:
            builder.add_sentencepiece_tokenizer(str(tokenizer_file))
        with files.atomic_output(bundle) as temporary, open(temporary, "wb") as stream:
            builder.build(stream, validate_metadata=True)
            stream.flush()
            os.fsync(stream.fileno())
    record = LitertLmBundle(
        schema=device_litertlm.RECORD_SCHEMA,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        path=str(bundle),
        size_bytes=bundle.stat().st_size,
        sha256=files.sha256_of(bundle),
        model={
            "path": str(model),
            "sha256": files.sha256_of(model),
            "size_bytes": model.stat().st_size,
            "signatures": sorted(tflite_file.inspect_signatures(model)),
            "context": context,
            "prefill_lengths": sorted(signatures.contexts[context]["prefill"]),
        },
        tokenizer={"type": spec["type"], "file": tokenizer_file.name, "sha256": files.sha256_of(tokenizer_file)},
        start_token_id=start,
        stop_token_ids=stops,
        max_num_tokens=context,
        model_type=model_type,
        chat_template=chat_template,
        versions={BUILDER: importlib.metadata.version(BUILDER)},
    )
    try:
        record.save(record_file, overwrite=overwrite)
    except BaseException:
        bundle.unlink(missing_ok=True)  # a bundle without its record cannot be loaded: leave neither
        raise
    # LiteRT-LM names its packed-weight caches after the bundle's mtime and size: those of a replaced
    # bundle are never read again (hundreds of MB each).
    for stale in bundle.parent.glob(f"{glob.escape(bundle.name)}_*.xnnpack_cache"):
        stale.unlink(missing_ok=True)
    return record
