"""LiteRT-LM's engine on a `.litertlm` bundle: checked by hash first, then greedy replies and its own benchmark.

Device side: `litert_lm` (the `litert-lm-api` wheel, which carries its own
LiteRT), the standard library and `converter.common`; no TensorFlow, no Keras. A bundle written by
`converter.deploy.export_litertlm` has a record beside it,
`<bundle>.litertlm.json` (`RECORD_SCHEMA`): its size and sha256, the
generation model and tokenizer inside, and the LLM metadata. `verify_bundle`
checks the file against the record before LiteRT-LM maps it, so a truncated
or altered copy is refused with the reason instead of failing (or running)
inside the engine.

    reply = litertlm.generate(bundle, "The capital of France is", max_new_tokens=8, threads=2)
    measured = litertlm.benchmark(bundle, threads=2, prefill_tokens=128, decode_tokens=128)
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import pathlib
import statistics
from collections.abc import Callable
from typing import Any

from converter.common import files

RECORD_SCHEMA = "keras-lm-litert/litertlm-bundle/1"
BUNDLE_SUFFIX = ".litertlm"
RECORD_SUFFIX = ".litertlm.json"
ENGINE = "litert-lm-api"


class BundleIntegrityError(ValueError):
    """A bundle that is missing, has no record, or does not match its record (size or sha256)."""


def record_path(bundle: str | os.PathLike) -> pathlib.Path:
    """`<name>.litertlm.json`, the record beside `<name>.litertlm`."""
    path = pathlib.Path(bundle)
    stem = path.name[: -len(BUNDLE_SUFFIX)] if path.name.endswith(BUNDLE_SUFFIX) else path.name
    return path.with_name(stem + RECORD_SUFFIX)


def verify_bundle(bundle: str | os.PathLike) -> dict[str, Any]:
    """Checks a bundle against its record (size, then sha256); returns the record.

    Raises:
      BundleIntegrityError: no bundle, no record, a record of another
        format, or a file whose size or sha256 differs from the record's (a
        truncated or altered copy). The message says what to do.
    """
    path = pathlib.Path(bundle)
    if not path.is_file():
        raise BundleIntegrityError(f"No bundle at {str(path)!r}: write one with `make litertlm` (MODEL=, MODE=).")
    record_file = record_path(path)
    if not record_file.is_file():
        raise BundleIntegrityError(
            f"{path.name} has no record beside it ({record_file.name}), so it cannot be checked before loading: "
            "copy the record with the bundle, or write both again with `make litertlm`."
        )
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleIntegrityError(f"{record_file} is not a readable record ({error}); write it again.") from None
    if not isinstance(record, dict) or record.get("schema") != RECORD_SCHEMA:
        raise BundleIntegrityError(f"{record_file} is not a LiteRT-LM bundle record ({RECORD_SCHEMA}).")
    size = path.stat().st_size
    if size != record["size_bytes"]:
        raise BundleIntegrityError(
            f"{path.name} has {size} bytes where its record says {record['size_bytes']}: a truncated or partial "
            "copy. Copy it again (or write it again with `make litertlm OVERWRITE=1`)."
        )
    if files.sha256_of(path) != record["sha256"]:
        raise BundleIntegrityError(
            f"{path.name} does not match the sha256 its record holds: the file was altered or damaged. Copy it "
            "again (or write it again with `make litertlm OVERWRITE=1`)."
        )
    return record


def _litert_lm():
    try:
        import litert_lm  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ImportError(
            "LiteRT-LM's Python engine is not installed: pip install litert-lm-api==0.18.1 (make setup does)."
        ) from None
    litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
    return litert_lm


def engine_version() -> str:
    return importlib.metadata.version(ENGINE)


def open_engine(bundle: str | os.PathLike, *, threads: int = 2, cache_dir: str | os.PathLike | None = None):
    """A `litert_lm.Engine` on the CPU for a verified bundle (close it, or use it in a `with`).

    Args:
      bundle: a `.litertlm` file with its record beside it.
      threads: CPU threads.
      cache_dir: where LiteRT-LM keeps XNNPACK's packed weights; None: none.

    Raises:
      BundleIntegrityError: see `verify_bundle` (checked before the engine loads anything).
      RuntimeError: LiteRT-LM refused the bundle (its reason is on stderr).
    """
    verify_bundle(bundle)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer of at least 1, got {threads!r}.")
    litert_lm = _litert_lm()
    return litert_lm.Engine(
        str(bundle),
        backend=litert_lm.Backend.CPU(thread_count=threads),
        cache_dir=str(cache_dir) if cache_dir else ":nocache",
    )


@dataclasses.dataclass(frozen=True)
class EngineReply:
    """What LiteRT-LM's engine replied to a prompt, greedily, one text piece per decode step."""

    prompt: str
    prompt_ids: tuple[int, ...]
    pieces: tuple[str, ...]
    stop_token_ids: tuple[int, ...]

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "text": self.text}


def generate(
    bundle: str | os.PathLike,
    prompt: str,
    *,
    max_new_tokens: int = 64,
    threads: int = 2,
    on_text: Callable[[str], None] | None = None,
) -> EngineReply:
    """Continues `prompt` greedily in LiteRT-LM's engine, without a chat template (as the project's loop does).

    LiteRT-LM's Python API takes and returns text: each streamed piece is one
    decode step, and the engine stops at the bundle's stop tokens.

    Raises:
      BundleIntegrityError, RuntimeError: see `open_engine`.
      ValueError: an empty prompt or a bad max_new_tokens.
    """
    if not prompt:
        raise ValueError("The prompt is empty; give the text to continue.")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer of at least 1, got {max_new_tokens!r}.")
    litert_lm = _litert_lm()
    with open_engine(bundle, threads=threads) as engine:
        stops = tuple(ids[0] for ids in engine.eos_token_ids if len(ids) == 1)
        prompt_ids = tuple(engine.tokenize(prompt))
        session = engine.create_session(
            apply_prompt_template=False,
            max_output_tokens=max_new_tokens,
            sampler_config=litert_lm.SamplerConfig(top_k=1),
        )
        try:
            session.run_prefill([prompt])
            pieces = []
            for response in session.run_decode_async():
                for piece in response.texts[:1]:
                    pieces.append(piece)
                    if on_text:
                        on_text(piece)
        finally:
            session.close()
    return EngineReply(prompt, prompt_ids, tuple(pieces), stops)


def token_spans(bundle: str | os.PathLike, pieces, token_ids) -> list[tuple[int, int]]:
    """Which of `token_ids` each streamed piece is: spans `[start, end)` that LiteRT-LM's tokenizer detokenizes to it.

    The engine streams one piece per decode step, except that it holds back
    the bytes of a character split over tokens and streams them with the
    next piece; so a piece is the text of one token or of a few. Matching
    every piece to consecutive ids, and all ids to pieces, shows that the
    engine chose exactly these tokens (its Python API returns text, not ids).

    Raises:
      ValueError: a piece that no run of the next ids detokenizes to, or ids
        left over; the message names the step.
    """
    ids = [int(t) for t in token_ids]
    spans, start = [], 0
    with open_engine(bundle, threads=1) as engine:
        for step, piece in enumerate(pieces):
            end = next(
                (e for e in range(start + 1, min(len(ids), start + 8) + 1) if engine.detokenize(ids[start:e]) == piece),
                None,
            )
            if end is None:
                raise ValueError(
                    f"Piece {step} ({piece!r}) is not the text of the ids from position {start} "
                    f"({ids[start : start + 8]}): the engine chose other tokens."
                )
            spans.append((start, end))
            start = end
    if start != len(ids):
        raise ValueError(f"The engine stopped after {start} of {len(ids)} tokens: ids {ids[start:]} have no piece.")
    return spans


@dataclasses.dataclass(frozen=True)
class EngineBenchmark:
    """LiteRT-LM's own benchmark mode (`litert_lm.Benchmark`) on a bundle: spreads over runs.

    Attributes:
      prefill_tokens_per_second, decode_tokens_per_second, time_to_first_token_ms,
      init_seconds: {"median", "min", "max", "values"} over `runs` runs after a warm-up run.
    """

    bundle: str
    engine: str
    engine_version: str
    threads: int
    prefill_tokens: int
    decode_tokens: int
    runs: int
    prefill_tokens_per_second: dict[str, Any]
    decode_tokens_per_second: dict[str, Any]
    time_to_first_token_ms: dict[str, Any]
    init_seconds: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min, max and the values themselves, as the result files keep them."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def benchmark(
    bundle: str | os.PathLike,
    *,
    threads: int = 2,
    prefill_tokens: int = 128,
    decode_tokens: int = 128,
    runs: int = 3,
    cache_dir: str | os.PathLike | None = None,
) -> EngineBenchmark:
    """Runs LiteRT-LM's benchmark mode: `prefill_tokens` prompt tokens, then `decode_tokens` decode steps.

    Args:
      bundle: a verified `.litertlm`.
      threads: CPU threads.
      prefill_tokens, decode_tokens: what each run prefills and decodes.
      runs: measured runs, after one warm-up run (which also packs the weights
        into `cache_dir` when one is given).
      cache_dir: XNNPACK's weight cache folder (None: the bundle's folder).

    Raises:
      BundleIntegrityError: see `verify_bundle`.
      ValueError: counts below 1, or more tokens than the bundle's context.
    """
    record = verify_bundle(bundle)
    counts = {"threads": threads, "prefill_tokens": prefill_tokens, "decode_tokens": decode_tokens, "runs": runs}
    bad = {k: v for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in bad.items())}: each must be an integer of at least 1.")
    if prefill_tokens + decode_tokens > record["max_num_tokens"]:
        raise ValueError(
            f"{prefill_tokens} prefill and {decode_tokens} decode tokens do not fit the bundle's "
            f"{record['max_num_tokens']} tokens."
        )
    litert_lm = _litert_lm()
    folder = pathlib.Path(cache_dir) if cache_dir else pathlib.Path(bundle).parent
    folder.mkdir(parents=True, exist_ok=True)
    runner = litert_lm.Benchmark(
        str(bundle),
        backend=litert_lm.Backend.CPU(thread_count=threads),
        prefill_tokens=prefill_tokens,
        decode_tokens=decode_tokens,
        cache_dir=str(folder),
    )
    runner.run()  # warm-up
    infos = [runner.run() for _ in range(runs)]
    return EngineBenchmark(
        bundle=str(bundle),
        engine=ENGINE,
        engine_version=engine_version(),
        threads=threads,
        prefill_tokens=infos[-1].last_prefill_token_count,
        decode_tokens=infos[-1].last_decode_token_count,
        runs=runs,
        prefill_tokens_per_second=spread([i.last_prefill_tokens_per_second for i in infos]),
        decode_tokens_per_second=spread([i.last_decode_tokens_per_second for i in infos]),
        time_to_first_token_ms=spread([1000 * i.time_to_first_token_in_second for i in infos]),
        init_seconds=spread([i.init_time_in_second for i in infos]),
    )
