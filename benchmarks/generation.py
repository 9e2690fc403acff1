"""Generating text on the device: prefill, then one decode step per token, the KV cache kept in place.

numpy and LiteRT only. A generation model (`convert_keras(..., generation=...)`)
has `prefill_<T>` and `decode` signatures with per-layer caches as inputs and
outputs, and optionally the same over shorter caches (`ctx<C>_prefill_<T>`,
`ctx<C>_decode`). The `Generator` picks the shortest cache that holds the
prompt and the reply, prefills the prompt in chunks (the last one padded with
token 0 at position 0, as LiteRT-LM does), then decodes token by token.

How the cache stays in place between steps (`CacheBinding`):

* `shared` (default): LiteRT's CompiledModel with one TensorBuffer per cache
  bound as both the input and the output of every signature, so
  DYNAMIC_UPDATE_SLICE writes the new rows into the buffer it read and nothing
  of the cache crosses into Python (what LiteRT-LM does on CPU);
* `pingpong`: CompiledModel with two buffer sets, the output of one step
  being the input of the next;
* `numpy`: the Interpreter's signature runners, the cache copied out to numpy
  and back in every step (the only way with tflite-runtime).

Positions a generation has not reached are masked out by `input_pos`, so a
new generation needs no cache reset.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import pathlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from converter import tflite_file
from converter.common import files

DECODE = "decode"
PREFILL = "prefill"
TOKENS, INPUT_POS, LOGITS = "tokens", "input_pos", "logits"
_SIGNATURE = re.compile(r"^(?:ctx(?P<context>\d+)_)?(?P<kind>prefill|decode)(?:_(?P<length>\d+))?$")
_CACHE_PREFIX = "kv_cache_"


class NotAGenerationModelError(ValueError):
    """A model without prefill/decode signatures was given to the generator."""


class CacheBinding(str, enum.Enum):
    """How the KV cache is kept between steps (see the module docstring)."""

    SHARED = "shared"
    PINGPONG = "pingpong"
    NUMPY = "numpy"


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is chosen from the logits.

    Attributes:
      temperature: 0 is greedy (argmax); above 0 the logits are divided by it
        and a token is drawn.
      top_k: draw only among the k most likely tokens (0: all).
      top_p: draw only among the most likely tokens whose probabilities add up
        to at least p (1.0: all).
      seed: seed of the draws; the same seed gives the same text.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be at least 0 (0 is greedy), got {self.temperature!r}.")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer of at least 0 (0: no limit), got {self.top_k!r}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Sampler:
    """Chooses tokens as a `Sampling` says, with its own seeded random generator."""

    def __init__(self, sampling: Sampling):
        self.sampling = sampling
        self._rng = np.random.default_rng(sampling.seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self.sampling.greedy:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / self.sampling.temperature
        order = np.argsort(-scaled, kind="stable")
        if self.sampling.top_k:
            order = order[: self.sampling.top_k]
        kept = scaled[order]
        probabilities = np.exp(kept - kept.max())
        probabilities /= probabilities.sum()
        if self.sampling.top_p < 1:
            cumulative = np.cumsum(probabilities)
            count = int(np.searchsorted(cumulative, self.sampling.top_p) + 1)
            order, probabilities = order[:count], probabilities[:count] / probabilities[:count].sum()
        return int(order[self._rng.choice(len(order), p=probabilities)])


@dataclasses.dataclass(frozen=True)
class Generation:
    """One generation: the tokens and how long each phase took.

    Attributes:
      prompt_tokens: how many prompt tokens were prefilled.
      tokens: the generated token ids, the stop token included if one ended it.
      stopped_by: `stop token`, `max_new_tokens`.
      context: the cache length the generation ran on.
      prefill_seconds: the prompt's prefill (every chunk).
      first_token_seconds: from the call to the first token (prefill and sampling).
      decode_seconds: one entry per decode step.
    """

    prompt_tokens: int
    tokens: tuple[int, ...]
    stopped_by: str
    context: int
    prefill_seconds: float
    first_token_seconds: float
    decode_seconds: tuple[float, ...]

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else float("nan")

    @property
    def decode_tokens_per_second(self) -> float:
        total = sum(self.decode_seconds)
        return len(self.decode_seconds) / total if total else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "tokens": [int(t) for t in self.tokens],
            "new_tokens": len(self.tokens),
            "stopped_by": self.stopped_by,
            "context": self.context,
            "prefill_seconds": self.prefill_seconds,
            "time_to_first_token_seconds": self.first_token_seconds,
            "decode_steps": len(self.decode_seconds),
            "decode_median_ms": 1000 * float(np.median(self.decode_seconds)) if self.decode_seconds else None,
            "prefill_tokens_per_second": self.prefill_tokens_per_second,
            "decode_tokens_per_second": self.decode_tokens_per_second,
        }


@dataclasses.dataclass(frozen=True)
class GenerationSignatures:
    """What a generation model's signatures offer, read from the file without running it.

    Attributes:
      contexts: cache length -> {"decode": signature, "prefill": {T: signature}}.
      cache_names: `kv_cache_k_0`, `kv_cache_v_0`, ... in layer order.
      cache_shapes: cache length -> the shape of every cache there.
      vocabulary_size: logits per token.
    """

    contexts: dict[int, dict[str, Any]]
    cache_names: tuple[str, ...]
    cache_shapes: dict[int, tuple[int, ...]]
    vocabulary_size: int

    @property
    def context_length(self) -> int:
        return max(self.contexts)

    def context_for(self, tokens: int) -> int:
        """The shortest cache that holds `tokens` positions (the longest if none does)."""
        fitting = [c for c in sorted(self.contexts) if c >= tokens]
        return fitting[0] if fitting else self.context_length


def read_signatures(model: str | bytes) -> GenerationSignatures:
    """The generation signatures of a `.tflite` file, checked.

    Raises:
      NotAGenerationModelError: the model has no `decode` signature (a
        fixed-window model); the message says how to make one.
    """
    # Only the signature tables: the weights stay unread (a full inspection would hold them in memory).
    signatures = tflite_file.inspect_signatures(model)
    contexts: dict[int, dict[str, Any]] = {}
    shapes: dict[int, tuple[int, ...]] = {}
    names: tuple[str, ...] = ()
    vocabulary = 0
    for key, signature in signatures.items():
        match = _SIGNATURE.match(key)
        if not match:
            continue
        caches = [n for n in signature.inputs if n.startswith(_CACHE_PREFIX)]
        if not caches or TOKENS not in signature.inputs or LOGITS not in signature.outputs:
            continue
        shape = tuple(signature.inputs[caches[0]].shape)
        context = shape[2]
        entry = contexts.setdefault(context, {DECODE: None, PREFILL: {}})
        if match["kind"] == DECODE:
            entry[DECODE] = key
        else:
            entry[PREFILL][int(match["length"])] = key
        shapes[context] = shape
        names = tuple(sorted(caches, key=lambda n: (int(n.rsplit("_", 1)[1]), n)))
        vocabulary = int(np.prod(signature.outputs[LOGITS].shape))
    contexts = {c: e for c, e in contexts.items() if e[DECODE] is not None}
    if not contexts:
        raise NotAGenerationModelError(
            f"The model has no decode signature (it has: {', '.join(signatures) or 'none'}): it is a "
            "fixed-window model. Convert one with generation signatures: make convert GENERATE=1 (or "
            "convert_keras(..., generation=True))."
        )
    return GenerationSignatures(contexts, names, shapes, vocabulary)


def weight_cache_path(model_path) -> pathlib.Path:
    """Where XNNPACK keeps the model's packed weights: beside it, named by its sha256 and the LiteRT version.

    XNNPACK's cache file names no model (its entries are keyed by buffer
    index), so one cache per exact file and LiteRT build is the only safe key.
    """
    import importlib.metadata  # pylint: disable=import-outside-toplevel

    path = pathlib.Path(model_path)
    try:
        version = importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return path.with_name(f".{path.stem}.{files.sha256_of(path)[:16]}.litert-{version}.xnnpack-cache")


class _CompiledCaches:
    """CompiledModel signatures with the caches bound as TensorBuffers (`shared` or `pingpong`)."""

    def __init__(
        self,
        model_path: str,
        signatures: GenerationSignatures,
        *,
        threads: int,
        pingpong: bool,
        weight_cache: pathlib.Path | None,
    ):
        from ai_edge_litert import compiled_model  # pylint: disable=import-outside-toplevel

        # Every signature is its own XNNPACK partition and would pack the weights again (a copy per
        # signature: 1.1 GB resident for SmolLM2-135M's six); a weight cache file packs them once, shared
        # and memory-mapped (0.36 GB).
        cpu = {"num_threads": threads}
        if weight_cache is not None:
            cpu["xnnpack_weight_cache_path"] = str(weight_cache)
        options = compiled_model.Options(
            hardware_accelerators=compiled_model.HardwareAccelerator.CPU,
            cpu_options=compiled_model.CpuOptions(**cpu),
        )
        # Without explicit options a CompiledModel runs on one thread.
        self.model = compiled_model.CompiledModel.from_file(str(model_path), options=options)
        self.signatures = signatures
        self.pingpong = pingpong
        self.buffers: dict[int, list[dict[str, Any]]] = {}
        self.io: dict[str, tuple[Any, Any, Any]] = {}
        self.vocabulary = signatures.vocabulary_size

    def _caches(self, context: int) -> list[dict[str, Any]]:
        if context not in self.buffers:
            decode = self.signatures.contexts[context][DECODE]
            zeros = np.zeros(self.signatures.cache_shapes[context], np.float32)
            sets = []
            for _ in range(2 if self.pingpong else 1):
                buffers = {n: self.model.create_input_buffer_by_name(decode, n) for n in self.signatures.cache_names}
                for buffer in buffers.values():
                    buffer.write(zeros)
                sets.append(buffers)
            self.buffers[context] = sets
        return self.buffers[context]

    def run(self, signature: str, context: int, tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
        if signature not in self.io:
            self.io[signature] = (
                self.model.create_input_buffer_by_name(signature, TOKENS),
                self.model.create_input_buffer_by_name(signature, INPUT_POS),
                self.model.create_output_buffer_by_name(signature, LOGITS),
            )
        token_buffer, position_buffer, logits_buffer = self.io[signature]
        token_buffer.write(np.asarray(tokens, np.int32).reshape(1, -1))
        position_buffer.write(np.asarray(positions, np.int32))
        sets = self._caches(context)
        inputs, outputs = sets[0], sets[-1]
        self.model.run_by_name(
            signature, {**inputs, TOKENS: token_buffer, INPUT_POS: position_buffer}, {**outputs, LOGITS: logits_buffer}
        )
        if self.pingpong:
            sets.reverse()
        return logits_buffer.read(self.vocabulary, np.float32)


class _InterpreterCaches:
    """The Interpreter's signature runners, the caches copied through numpy every step (`numpy`)."""

    def __init__(self, model_path: str, signatures: GenerationSignatures, *, threads: int, interpreter_module=None):
        if interpreter_module is None:
            from ai_edge_litert import interpreter as interpreter_module  # pylint: disable=import-outside-toplevel
        self.interpreter = interpreter_module.Interpreter(model_path=str(model_path), num_threads=threads)
        self.signatures = signatures
        self.runners: dict[str, Any] = {}
        self.caches: dict[int, dict[str, np.ndarray]] = {}

    def run(self, signature: str, context: int, tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
        if signature not in self.runners:
            self.runners[signature] = self.interpreter.get_signature_runner(signature)
        if context not in self.caches:
            shape = self.signatures.cache_shapes[context]
            self.caches[context] = {n: np.zeros(shape, np.float32) for n in self.signatures.cache_names}
        caches = self.caches[context]
        out = self.runners[signature](
            tokens=np.asarray(tokens, np.int32).reshape(1, -1), input_pos=np.asarray(positions, np.int32), **caches
        )
        for name in self.signatures.cache_names:
            caches[name] = out[name]
        return np.asarray(out[LOGITS]).reshape(-1)


class Generator:
    """Runs a generation model: prompt in, tokens out, with the timings.

    Args:
      model_path: a generation `.tflite` file.
      threads: CPU threads.
      binding: how the cache is kept between steps (`CacheBinding`).
      interpreter_module: for `numpy`, the Interpreter's module
        (`tflite_runtime.interpreter`); default ai_edge_litert's.
      weight_cache: CompiledModel bindings: keep XNNPACK's packed weights in a
        file (True: beside the model, see `weight_cache_path`; a path; or
        False for none), so that the signatures share one packed copy.

    Raises:
      NotAGenerationModelError: a model without generation signatures.
      FileNotFoundError, converter.tflite_file.ModelFileError: a missing or broken file.
    """

    def __init__(
        self,
        model_path,
        *,
        threads: int = 2,
        binding: CacheBinding | str = CacheBinding.SHARED,
        interpreter_module=None,
        weight_cache: bool | str | os.PathLike = True,
    ):
        path = tflite_file.check_model_file(model_path)
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer of at least 1, got {threads!r}.")
        self.path = path
        self.signatures = read_signatures(path)
        self.binding = CacheBinding(binding)
        self.threads = threads
        if self.binding is CacheBinding.NUMPY:
            self._runner = _InterpreterCaches(
                path, self.signatures, threads=threads, interpreter_module=interpreter_module
            )
        else:
            cache = (
                weight_cache_path(path)
                if weight_cache is True
                else (pathlib.Path(weight_cache) if weight_cache else None)
            )
            self._runner = _CompiledCaches(
                path,
                self.signatures,
                threads=threads,
                pingpong=self.binding is CacheBinding.PINGPONG,
                weight_cache=cache,
            )

    @property
    def vocabulary_size(self) -> int:
        return self.signatures.vocabulary_size

    @property
    def context_length(self) -> int:
        return self.signatures.context_length

    def check_request(self, prompt: Sequence[int], max_new_tokens: int) -> int:
        """The context a request runs on, or a ValueError saying what fits.

        Raises:
          ValueError: an empty prompt, ids outside the vocabulary, a bad
            max_new_tokens, or a prompt and reply longer than the context.
        """
        if len(prompt) == 0:
            raise ValueError("The prompt is empty: give at least one token (the start token, for instance).")
        ids = np.asarray(prompt)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"Prompt ids must be integers, got {ids.dtype}.")
        bad = ids[(ids < 0) | (ids >= self.vocabulary_size)]
        if bad.size:
            raise ValueError(
                f"Token id {int(bad[0])} is outside the vocabulary [0, {self.vocabulary_size}): "
                "tokenize the prompt with the model's own tokenizer."
            )
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer of at least 1, got {max_new_tokens!r}.")
        needed = len(prompt) + max_new_tokens
        if needed > self.context_length:
            fit = self.context_length - len(prompt)
            advice = (
                f"at most {fit} new tokens fit after this prompt"
                if fit > 0
                else f"the prompt alone needs {len(prompt) - self.context_length + 1} fewer tokens"
            )
            raise ValueError(
                f"The prompt ({len(prompt)} tokens) and max_new_tokens ({max_new_tokens}) need {needed} positions, "
                f"but the model's context holds {self.context_length}: {advice}. Convert with a longer "
                "context_length for more."
            )
        return self.signatures.context_for(needed)

    def prefill(self, prompt: Sequence[int], *, context: int, start: int = 0) -> np.ndarray:
        """Writes the prompt into the cache from position `start`; returns the logits after its last token."""
        lengths = sorted(self.signatures.contexts[context][PREFILL])
        logits = None
        position = start
        remaining = list(prompt)
        while remaining:
            # The shortest chunk that takes what is left, or the longest one.
            length = next((t for t in lengths if t >= len(remaining)), lengths[-1])
            chunk, remaining = remaining[:length], remaining[length:]
            padding = length - len(chunk)
            logits = self._runner.run(
                self.signatures.contexts[context][PREFILL][length],
                context,
                chunk + [0] * padding,
                list(range(position, position + len(chunk))) + [0] * padding,
            )
            position += len(chunk)
        return logits

    def decode(self, token: int, position: int, *, context: int) -> np.ndarray:
        """One step: `token` at `position`; returns the next token's logits."""
        return self._runner.run(self.signatures.contexts[context][DECODE], context, [token], [position])

    def generate(
        self,
        prompt: Sequence[int],
        *,
        max_new_tokens: int,
        sampling: Sampling = Sampling(),
        stop_token_ids: Iterable[int] = (),
        on_token: Callable[[int], None] | None = None,
        context: int | None = None,
    ) -> Generation:
        """Prefills `prompt`, then decodes until a stop token or `max_new_tokens`.

        Args:
          prompt: token ids, the start token included if the model wants one.
          max_new_tokens: most tokens to generate.
          sampling: greedy (default) or seeded temperature / top-k / top-p.
          stop_token_ids: tokens that end the generation (kept in the output).
          on_token: called with each new token as it is chosen (for streaming).
          context: the cache length to run on (one of `signatures.contexts`);
            default the shortest that holds the request. LiteRT-LM runs the
            `decode` signature, the longest: pass `context_length` to measure
            what it measures.

        Raises:
          ValueError: see `check_request`; a context the model lacks or one
            too short for the request.
        """
        prompt = [int(t) for t in prompt]
        shortest = self.check_request(prompt, max_new_tokens)
        if context is None:
            context = shortest
        elif context not in self.signatures.contexts or context < shortest:
            raise ValueError(
                f"context={context!r}: the model has caches of {sorted(self.signatures.contexts)} positions, and this "
                f"request needs at least {shortest}."
            )
        stops = {int(t) for t in stop_token_ids}
        sampler = Sampler(sampling)
        start = time.perf_counter()
        logits = self.prefill(prompt, context=context)
        prefill_seconds = time.perf_counter() - start
        token = sampler(logits)
        first_token_seconds = time.perf_counter() - start
        tokens, steps = [token], []
        if on_token:
            on_token(token)
        position = len(prompt)
        while token not in stops and len(tokens) < max_new_tokens:
            begin = time.perf_counter()
            logits = self.decode(token, position, context=context)
            token = sampler(logits)
            steps.append(time.perf_counter() - begin)
            tokens.append(token)
            position += 1
            if on_token:
                on_token(token)
        stopped_by = "stop token" if token in stops else "max_new_tokens"
        return Generation(
            len(prompt), tuple(tokens), stopped_by, context, prefill_seconds, first_token_seconds, tuple(steps)
        )


@dataclasses.dataclass(frozen=True)
class GeneratedText:
    """A prompt's continuation as text, with the generation behind it."""

    prompt: str
    text: str
    generation: Generation

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "text": self.text, **self.generation.to_dict()}


def tokenizer_beside(model_path) -> pathlib.Path:
    """The tokenizer files a conversion writes beside a generation model (`<stem>.tokenizer_spec.json`)."""
    from benchmarks import text  # pylint: disable=import-outside-toplevel

    path = pathlib.Path(model_path)
    return path.with_name(text.spec_file_name(path.stem))


def generate_text(
    model_path,
    prompt: str,
    *,
    max_new_tokens: int = 64,
    tokenizer=None,
    sampling: Sampling = Sampling(),
    threads: int = 2,
    stop_token_ids: Iterable[int] | None = None,
    on_text: Callable[[str], None] | None = None,
    generator: Generator | None = None,
) -> GeneratedText:
    """Continues `prompt` with a generation model: text in, text out, numpy and LiteRT only.

    Args:
      model_path: a generation `.tflite`.
      prompt: the text to continue.
      max_new_tokens: most tokens to generate.
      tokenizer: a `benchmarks.text.TextTokenizer` or the path of its files;
        default: the files the conversion wrote beside the model.
      sampling: greedy (default) or seeded sampling.
      threads: CPU threads.
      stop_token_ids: tokens that end the reply; default: the tokenizer's end-of-text id.
      on_text: called with each new piece of text as it is decoded (streaming).
      generator: an open `Generator` of the model, to reuse between calls.

    Raises:
      FileNotFoundError: no tokenizer beside the model (the message says how to write one).
      ValueError: see `Generator.check_request`.
    """
    from benchmarks import text  # pylint: disable=import-outside-toplevel

    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        location = tokenizer_beside(model_path) if tokenizer is None else pathlib.Path(tokenizer)
        if not location.exists():
            raise FileNotFoundError(
                f"No tokenizer at {str(location)!r} for {model_path}: convert the model with "
                "`make convert GENERATE=1` (which writes it beside the model), or pass tokenizer=<its files>."
            )
        tokenizer = text.load_text_tokenizer(location)
    ids = tokenizer.encode(prompt)
    if tokenizer.add_bos and tokenizer.bos_id is not None and (not ids or ids[0] != tokenizer.bos_id):
        ids = [tokenizer.bos_id, *ids]
    stops = (
        [tokenizer.eos_id] if stop_token_ids is None and tokenizer.eos_id is not None else list(stop_token_ids or ())
    )
    generator = generator or Generator(model_path, threads=threads)
    stream = tokenizer.stream()
    pieces: list[str] = []

    def emit(token: int) -> None:
        if token in stops:
            return
        piece = stream.push(token)
        if piece:
            pieces.append(piece)
            if on_text:
                on_text(piece)

    result = generator.generate(
        ids, max_new_tokens=max_new_tokens, sampling=sampling, stop_token_ids=stops, on_token=emit
    )
    tail = stream.flush()
    if tail:
        pieces.append(tail)
        if on_text:
            on_text(tail)
    return GeneratedText(prompt=prompt, text="".join(pieces), generation=result)
