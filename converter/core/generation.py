"""Generation signatures: one `.tflite` with `prefill_<T>` and `decode`, a per-layer KV cache in and out.

The layout is the one litert-torch writes and LiteRT-LM's executor looks up:

* `prefill_<T>` (one per prompt-chunk length T) and `decode` (T = 1), over a
  cache of `context_length` positions;
* inputs `tokens` int32 `[1, T]`, `input_pos` int32 `[T]`, and per layer i
  `kv_cache_k_<i>`, `kv_cache_v_<i>` float32 `[1, kv_heads, context, head_dim]`;
* outputs `logits` float32 `[1, 1, vocab]` (prefill: the chunk's last real
  token only) and the updated caches under the same names.

A decode step reads every cache position it holds, so its cost follows the
cache's allocated length, not the filled part. Shorter contexts can be added
(`GenerationSettings.smaller_contexts`) as `ctx<C>_prefill_<T>` and
`ctx<C>_decode`: a generation that needs fewer positions runs on those, at a
fraction of the cache traffic. LiteRT-LM ignores them (it takes the
signatures named `prefill*` and `decode`). Every signature shares one copy of
the weights.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from converter.core import modes
from converter.core.cached_decoder import CachedDecoder, DecoderShape, decoder_shape
from converter.core.results import logit_agreement

DEFAULT_CONTEXT_LENGTH = 1024
DEFAULT_PREFILL_LENGTHS = (32, 128)
DEFAULT_SMALLER_CONTEXTS = (256,)
DECODE = "decode"
PREFILL = "prefill"
TOKENS, INPUT_POS, LOGITS = "tokens", "input_pos", "logits"
# Modes the generation signatures convert in. Calibrated modes need the passes to work per signature;
# int4 quantizes the shared weights once, GPTQ calibrated on a prefill signature.
SUPPORTED_MODES = (modes.Mode.FP32, modes.Mode.FP16, modes.Mode.DYNAMIC, modes.Mode.INT4)


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """The signatures of a generation model.

    Attributes:
      context_length: positions of the cache behind `prefill_<T>` and `decode`
        (the longest prompt plus reply the model serves).
      prefill_lengths: prompt-chunk lengths; one `prefill_<T>` each. A prompt
        longer than the largest is prefilled in chunks.
      smaller_contexts: extra cache lengths, each with its own prefill and
        decode signatures, for generations that need fewer positions.

    Left out (None), `prefill_lengths` and `smaller_contexts` take the defaults
    (32 and 128; 256) that fit `context_length`, so a short context needs
    only itself: `GenerationSettings(context_length=64)` has `prefill_32` and
    no smaller context. Given ones are checked as they are.
    """

    context_length: int = DEFAULT_CONTEXT_LENGTH
    prefill_lengths: tuple[int, ...] | None = None
    smaller_contexts: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.context_length, bool) or not isinstance(self.context_length, int) or self.context_length < 2:
            raise ValueError(f"context_length must be an integer of at least 2, got {self.context_length!r}.")
        if self.prefill_lengths is None:
            fitting = [t for t in DEFAULT_PREFILL_LENGTHS if t <= self.context_length]
            object.__setattr__(self, "prefill_lengths", tuple(fitting) or (self.context_length,))
        if self.smaller_contexts is None:
            longest = max(self.prefill_lengths)
            fitting = [c for c in DEFAULT_SMALLER_CONTEXTS if longest <= c < self.context_length]
            object.__setattr__(self, "smaller_contexts", tuple(fitting))
        object.__setattr__(self, "prefill_lengths", tuple(sorted({int(t) for t in self.prefill_lengths})))
        object.__setattr__(self, "smaller_contexts", tuple(sorted({int(c) for c in self.smaller_contexts})))
        if not self.prefill_lengths or min(self.prefill_lengths) < 2:
            raise ValueError(
                f"prefill_lengths must be integers of at least 2 (decode is T = 1), got {self.prefill_lengths!r}."
            )
        for context in self.contexts:
            if max(self.prefill_lengths) > context:
                raise ValueError(
                    f"A prefill chunk of {max(self.prefill_lengths)} tokens does not fit a cache of "
                    f"{context} positions; use shorter prefill_lengths or longer contexts."
                )
        if any(c >= self.context_length for c in self.smaller_contexts):
            raise ValueError(
                f"smaller_contexts {self.smaller_contexts} must be below context_length {self.context_length}."
            )

    @property
    def contexts(self) -> tuple[int, ...]:
        """Every cache length, smallest first (the last is `context_length`)."""
        return (*self.smaller_contexts, self.context_length)

    def signature_names(self) -> list[str]:
        """Every signature, for each context: its prefills, then its decode."""
        names = []
        for context in self.contexts:
            prefix = "" if context == self.context_length else f"ctx{context}_"
            names += [f"{prefix}{PREFILL}_{length}" for length in self.prefill_lengths] + [f"{prefix}{DECODE}"]
        return names

    def to_dict(self) -> dict[str, Any]:
        return {
            "context_length": self.context_length,
            "prefill_lengths": list(self.prefill_lengths),
            "smaller_contexts": list(self.smaller_contexts),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationSettings:
        return cls(
            context_length=int(data["context_length"]),
            prefill_lengths=tuple(data["prefill_lengths"]),
            smaller_contexts=tuple(data.get("smaller_contexts", ())),
        )


def check_mode(mode: modes.Mode) -> None:
    """Refuses a mode the generation signatures do not convert in yet, saying which ones they do.

    Raises:
      ValueError: an unsupported mode.
    """
    if mode not in SUPPORTED_MODES:
        raise ValueError(
            f"Generation signatures convert in {', '.join(m.value for m in SUPPORTED_MODES)} for now; mode "
            f"{mode.value} needs its calibration passes run per signature, which they are not yet. Use dynamic "
            "(int8 weights) for a small, fast generation model."
        )


def describe(settings: GenerationSettings, shape: DecoderShape, tokenizer: Any = None) -> dict[str, Any]:
    """The report's `generation` section: settings, signatures, cache layout, start and stop tokens."""
    start = getattr(tokenizer, "start_token_id", None) if tokenizer is not None else None
    end = getattr(tokenizer, "end_token_id", None) if tokenizer is not None else None
    return {
        **settings.to_dict(),
        "family": shape.family,
        "signatures": settings.signature_names(),
        "cache": {
            "names": shape.cache_names(),
            "dtype": "float32",
            "layout": "[1, kv_heads, context, head_dim]",
            "shape_by_context": {str(c): shape.cache_shape(c) for c in settings.contexts},
            "bytes_by_context": {str(c): shape.cache_bytes(c) for c in settings.contexts},
        },
        "start_token_id": None if start is None else int(start),
        "stop_token_ids": [] if end is None else [int(end)],
    }


def check_generation(model: Any, settings: GenerationSettings, mode: modes.Mode) -> DecoderShape:
    """Checks, before any tracing, that the model and mode can have generation signatures.

    Raises:
      ValueError: an unsupported model family or mode, or a context the model cannot hold.
    """
    shape = decoder_shape(model)
    check_mode(mode)
    if shape.max_context is not None and settings.context_length > shape.max_context:
        raise ValueError(
            f"context_length {settings.context_length} is above what the model supports: its position table has "
            f"{shape.max_context} entries. Pass context_length <= {shape.max_context}."
        )
    return shape


def _signatures(model: Any, settings: GenerationSettings):
    """A `tf.Module` holding the model's variables, and one concrete function per signature."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    module = tf.Module()
    # Keras 3 tracks its own variable wrappers; without the tf.Variables themselves on the module the
    # converter cannot freeze the weights and writes VAR_HANDLE ops that read garbage.
    module.tf_variables = [variable.value for variable in model.weights]
    functions = {}
    for context in settings.contexts:
        decoder = CachedDecoder(model, context=context)
        prefix = "" if context == settings.context_length else f"ctx{context}_"
        for length in (*settings.prefill_lengths, 1):
            name = f"{prefix}{DECODE}" if length == 1 else f"{prefix}{PREFILL}_{length}"
            functions[name] = _concrete(decoder, length, name)
    return module, functions


def _concrete(decoder: CachedDecoder, length: int, name: str):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    names = decoder.shape.cache_names()
    specs = [tf.TensorSpec([1, length], tf.int32, name=TOKENS), tf.TensorSpec([length], tf.int32, name=INPUT_POS)]
    specs += [tf.TensorSpec(decoder.shape.cache_shape(decoder.context), tf.float32, name=n) for n in names]

    def signature(*arguments):
        logits, caches = decoder.forward(arguments[0], arguments[1], list(arguments[2:]))
        return {LOGITS: logits, **dict(zip(names, caches))}

    signature.__name__ = name
    return tf.function(signature, input_signature=specs, autograph=False).get_concrete_function()


def convert_generation(model: Any, settings: GenerationSettings, mode: modes.Mode) -> bytes:
    """The generation `.tflite` of a keras-hub GPT-2 or Llama LM in `mode` (fp32, fp16 or dynamic; int4 as fp32).

    Raises:
      ValueError: see `check_generation`.
      RuntimeError: the TFLite converter failed.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    check_generation(model, settings, mode)
    module, functions = _signatures(model, settings)
    folder = tempfile.mkdtemp(prefix="generation-savedmodel-")
    try:
        tf.saved_model.save(module, folder, signatures=functions)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=list(functions))
        modes.configure_converter(converter, mode, representative_dataset=None)
        try:
            return converter.convert()
        except Exception as error:
            raise RuntimeError(f"The TFLite converter failed on the generation signatures: {error}") from error
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def reference_logits(model: Any, token_ids: Sequence[int]):
    """The Keras model's full-window logits `[len, vocab]` for one sequence (no cache)."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    from converter.core import wrapping  # pylint: disable=import-outside-toplevel

    wrapped = wrapping.wrap_model(model, seq_len=len(token_ids))
    return np.asarray(wrapped([np.asarray([token_ids], np.int32)])[wrapping.LOGITS])[0]


def check_against_keras(
    model: Any,
    model_bytes: bytes,
    settings: GenerationSettings,
    windows: Iterable[Sequence[int]],
    *,
    decode_steps: int = 8,
) -> dict[str, Any]:
    """Prefills each window's head through the converted model, decodes its next tokens, compares with Keras.

    The first `len - decode_steps` tokens go through the largest prefill
    signature in LiteRT-LM's way (chunks, the last one padded with token 0 at
    position 0), the rest through `decode` one by one; each position's logits
    are compared with the Keras model's full-window logits there.

    Returns:
      The report's `check`: largest logit error and top-1 agreement over the
      compared positions.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel

    interpreter = litert.Interpreter(model_content=model_bytes)
    runners = {name: interpreter.get_signature_runner(name) for name in interpreter.get_signature_list()}
    decode_details = runners[DECODE].get_input_details()
    cache_names = [name for name in decode_details if name.startswith("kv_cache_")]
    chunk = max(settings.prefill_lengths)
    expected_rows, actual_rows, windows_used = [], [], 0
    for window in windows:
        ids = [int(i) for i in window]
        expected = reference_logits(model, ids)
        caches = {name: np.zeros(decode_details[name]["shape"], np.float32) for name in cache_names}
        head = len(ids) - decode_steps
        for begin in range(0, head, chunk):
            piece = ids[:head][begin : begin + chunk]
            tokens = piece + [0] * (chunk - len(piece))
            positions = list(range(begin, begin + len(piece))) + [0] * (chunk - len(piece))
            out = runners[f"{PREFILL}_{chunk}"](
                tokens=np.asarray([tokens], np.int32), input_pos=np.asarray(positions, np.int32), **caches
            )
            caches = {name: out[name] for name in cache_names}
        expected_rows.append(expected[head - 1])
        actual_rows.append(out[LOGITS].reshape(-1))
        for position in range(head, len(ids)):
            out = runners[DECODE](
                tokens=np.asarray([[ids[position]]], np.int32), input_pos=np.asarray([position], np.int32), **caches
            )
            caches = {name: out[name] for name in cache_names}
            expected_rows.append(expected[position])
            actual_rows.append(out[LOGITS].reshape(-1))
        windows_used += 1
    return {
        "against": "keras model (full window)",
        "inputs": f"prefill_{chunk} in chunks, then {decode_steps} decode steps per window",
        "windows": windows_used,
        **logit_agreement(np.stack(expected_rows), np.stack(actual_rows)),
    }
