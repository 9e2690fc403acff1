"""The benchmark: load a model, time it, measure its memory, score it on evaluation windows."""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import runtimes
from benchmarks.accuracy import AccuracyAccumulator, AccuracyResult
from benchmarks.machine import machine_info
from benchmarks.results import BenchmarkResult, MemoryStats, ModelInfo
from benchmarks.timing import summarize, time_runs
from converter import tflite_file
from converter.common import files, resources
from converter.common import progress as progress_lib
from representative_data.windows import TokenWindows, load_windows

DEFAULT_WARMUP_RUNS = 5
DEFAULT_RUNS = 50


def _stderr(message: str) -> None:
    # The console, not sys.stderr: a CLI that silences TensorFlow's output still shows the harness's.
    print(message, file=progress_lib.console(), flush=True)


def describe_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """Name, variant, format, size and sha256 of a converted model file.

    The name and variant come from the conversion report beside a `.tflite`
    file (`<stem>.json`) when there is one, else from the file name
    `<name>_<variant>.<suffix>` that the converter and the ONNX export write.
    """
    path = pathlib.Path(path)
    name, _, variant = path.stem.rpartition("_")
    if not name:
        name, variant = path.stem, "unknown"
    report = path.with_suffix(".json")
    if path.suffix == tflite_file.TFLITE_SUFFIX and report.is_file():
        try:
            facts = json.loads(report.read_text(encoding="utf-8"))
            name, variant = facts.get("model_name", name), facts.get("mode", variant)
            if variant == "int4":  # int4 models differ by block size and method: int4-b32, int4-b32-rtn
                variant = (facts.get("recipe") or {}).get("name", variant)
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass  # a broken report does not stop a benchmark; the file name is enough
    return {
        "name": name,
        "variant": variant,
        "path": str(path),
        "format": path.suffix.lstrip("."),
        "sha256": files.sha256_of(path),
        "size_bytes": path.stat().st_size,
    }


def read_evaluation_windows(evaluation: str | os.PathLike | TokenWindows | None) -> TokenWindows | None:
    """Loads evaluation windows from `.npz` (or passes windows through)."""
    if evaluation is None or isinstance(evaluation, TokenWindows):
        return evaluation
    path = pathlib.Path(evaluation)
    if not path.is_file():
        raise FileNotFoundError(
            f"No evaluation windows at {str(path)!r}. `make convert` writes them to "
            "build/<model>/<model>_seq<N>_evaluation.npz."
        )
    return load_windows(path)


def check_windows_fit(windows: TokenWindows, *, seq_len: int, vocabulary_size: int, model: str) -> None:
    """Raises ValueError unless the windows can be fed to the model as they are."""
    if windows.seq_len != seq_len:
        raise ValueError(
            f"The evaluation windows hold {windows.seq_len} tokens but {model} takes {seq_len}. "
            f"Use the windows cut for it (build/<model>/<model>_seq{seq_len}_evaluation.npz)."
        )
    real = windows.token_ids[windows.padding_mask.astype(bool)]
    if real.size and (real.min() < 0 or real.max() >= vocabulary_size):
        raise ValueError(
            f"The evaluation windows hold token id {int(real.max() if real.max() >= vocabulary_size else real.min())}"
            f" but {model} has a vocabulary of {vocabulary_size} (ids 0..{vocabulary_size - 1}). "
            "They were cut with another tokenizer; use the model's own windows."
        )


def timing_inputs(runner: runtimes.Runner, windows: TokenWindows | None) -> dict[str, np.ndarray]:
    if windows is not None:
        return _window_inputs(windows, 0)
    # Without windows, a seeded random window of real ids: same work per run.
    ids = np.random.default_rng(0).integers(0, runner.vocabulary_size, size=(1, runner.seq_len), dtype=np.int32)
    return {runtimes.TOKEN_IDS: ids, runtimes.PADDING_MASK: np.ones_like(ids)}


def _window_inputs(windows: TokenWindows, index: int) -> dict[str, np.ndarray]:
    return {
        runtimes.TOKEN_IDS: windows.token_ids[index : index + 1],
        runtimes.PADDING_MASK: windows.padding_mask[index : index + 1],
    }


def _logits(runner: runtimes.Runner, inputs: dict[str, np.ndarray]) -> np.ndarray:
    runner.prepare(inputs)
    runner.invoke()
    return runner.logits()[0]


def evaluate_accuracy(
    runner: runtimes.Runner,
    windows: TokenWindows,
    *,
    reference: runtimes.Runner | None = None,
    max_windows: int | None = None,
    progress: Callable[[str], None] | None = _stderr,
) -> AccuracyResult:
    """Perplexity of `runner` on the windows, and agreement / KL against `reference`.

    Args:
      runner: the model under test.
      windows: evaluation windows (never seen in calibration).
      reference: the fp32 model on the same windows, or None.
      max_windows: score only the first windows (None: all).
      progress: called with a status line now and then, or None.
    """
    count = windows.num_windows if max_windows is None else min(max_windows, windows.num_windows)
    accumulator = AccuracyAccumulator()
    shown = progress_lib.progress_bar(
        range(count), tag="bench", description="accuracy", enabled=progress is not None, unit="window"
    )
    for index in shown:
        inputs = _window_inputs(windows, index)
        logits = _logits(runner, inputs)
        reference_logits = None if reference is None else _logits(reference, inputs)
        accumulator.add(inputs[runtimes.TOKEN_IDS][0], inputs[runtimes.PADDING_MASK][0], logits, reference_logits)
    return accumulator.result()


def measure(
    open_model: Callable[[], runtimes.Runner],
    *,
    model: dict[str, Any],
    evaluation: TokenWindows | None = None,
    open_reference: Callable[[], runtimes.Runner] | None = None,
    warmup_runs: int = DEFAULT_WARMUP_RUNS,
    runs: int = DEFAULT_RUNS,
    min_seconds: float = 1.0,
    max_seconds: float = 120.0,
    max_windows: int | None = None,
    settings: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = _stderr,
) -> BenchmarkResult:
    """Runs one benchmark with any runner (LiteRT, ONNX Runtime, Keras).

    Order matters for the memory figure: the peak counter is reset, the model
    is loaded and timed, the peak is read, and only then is the reference
    model loaded for the accuracy pass.

    Args:
      open_model: loads the model and returns its runner; timed as init.
      model: `name`, `variant`, `path`, `format`, `sha256`, `size_bytes`.
      evaluation: windows for accuracy and for the timed input, or None
        (then a seeded random window is timed and accuracy is skipped).
      open_reference: loads the reference (fp32) model, or None.
      warmup_runs, runs, min_seconds, max_seconds: see `timing.time_runs`.
      max_windows: score at most this many evaluation windows.
      settings: extra settings recorded in the result.
      progress: status lines go here (None: quiet).

    Raises:
      ValueError: windows that do not fit the model, or bad counts.
    """
    if runs < 1 or warmup_runs < 0:
        raise ValueError(f"runs must be at least 1 and warmup_runs at least 0; got {runs} and {warmup_runs}.")
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows must be at least 1; got {max_windows}.")
    baseline = resources.current_rss_bytes()
    reset = resources.reset_peak_rss()
    start = time.perf_counter()
    runner = open_model()
    init_ms = 1000 * (time.perf_counter() - start)
    label = f"{model['name']} {model['variant']} ({runner.runtime.name}, {runner.threads} thread(s))"
    if evaluation is not None:
        check_windows_fit(evaluation, seq_len=runner.seq_len, vocabulary_size=runner.vocabulary_size, model=label)
    runner.prepare(timing_inputs(runner, evaluation))
    if progress:
        progress(f"[bench] {label}: loaded in {init_ms:.0f} ms; timing")
    first_ms, warmups, samples = time_runs(
        runner.invoke,
        warmup_runs=warmup_runs,
        runs=runs,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
    )
    latency = summarize(samples, init_ms=init_ms, first_ms=first_ms, warmup_runs=warmups)
    peak = MemoryStats(
        baseline_rss_bytes=baseline, peak_rss_bytes=resources.peak_rss_bytes(), peak_covers_load_only=reset
    )
    if progress:
        progress(
            f"[bench] {label}: median {latency.median_ms:.2f} ms, p90 {latency.p90_ms:.2f} ms over "
            f"{latency.runs} runs; peak RSS {peak.peak_rss_bytes / 2**20:.0f} MiB"
        )
    accuracy = None
    if evaluation is not None:
        reference = None
        if open_reference is not None:
            reference = open_reference()
            if (reference.seq_len, reference.vocabulary_size) != (runner.seq_len, runner.vocabulary_size):
                raise ValueError(
                    f"The reference takes {reference.seq_len} tokens and has {reference.vocabulary_size} "
                    f"logits; {label} takes {runner.seq_len} and has {runner.vocabulary_size}. Use the fp32 "
                    "conversion of the same model and seq_len as the reference."
                )
        accuracy = evaluate_accuracy(
            runner, evaluation, reference=reference, max_windows=max_windows, progress=progress
        )
    info = ModelInfo(seq_len=runner.seq_len, vocabulary_size=runner.vocabulary_size, **model)
    recorded = {
        "threads": runner.threads,
        "warmup_runs": warmup_runs,
        "runs": runs,
        "min_seconds": min_seconds,
        "max_seconds": max_seconds,
        "max_windows": max_windows,
        **(settings or {}),
    }
    return BenchmarkResult(
        machine=machine_info(),
        runtime=runner.runtime,
        model=info,
        settings=recorded,
        latency=latency,
        memory=peak,
        accuracy=accuracy,
    )


def benchmark_file(
    path: str | os.PathLike,
    *,
    runtime: runtimes.Runtime | str | None = None,
    threads: int = 1,
    evaluation: str | os.PathLike | TokenWindows | None = None,
    reference: str | os.PathLike | None = None,
    warmup_runs: int = DEFAULT_WARMUP_RUNS,
    runs: int = DEFAULT_RUNS,
    min_seconds: float = 1.0,
    max_seconds: float = 120.0,
    max_windows: int | None = None,
    progress: Callable[[str], None] | None = _stderr,
) -> BenchmarkResult:
    """Benchmarks a `.tflite` (or `.onnx`) file; see `measure`.

    Every input is checked before the model is loaded.

    Args:
      path: the model file.
      runtime: `ai-edge-litert` (default), `tflite-runtime`; `.onnx` files run
        in `onnxruntime`.
      threads: CPU threads, at least 1.
      evaluation: evaluation windows (`.npz` path or `TokenWindows`), or None.
      reference: the fp32 `.tflite` of the same model, for agreement and KL.
      warmup_runs, runs, min_seconds, max_seconds, max_windows, progress: see `measure`.

    Returns:
      The `BenchmarkResult` (not yet saved: call `.save(results_dir)`).

    Raises:
      FileNotFoundError, tflite_file.ModelFileError: a missing or broken file.
      runtimes.ModelLoadError: the runtime cannot run the model.
      runtimes.RuntimeUnavailableError: the runtime is not installed.
      ValueError: threads below 1, windows that do not fit the model.
    """
    runtimes.check_threads(threads)
    tflite_file.check_model_file(path)
    chosen = runtimes.runtime_for_path(path, runtime)
    runtimes.runtime_info(chosen)
    if reference is not None:
        tflite_file.check_model_file(reference)
    windows = read_evaluation_windows(evaluation)
    description = describe_model_file(path)
    same_as_reference = reference is not None and os.path.samefile(path, reference)
    open_reference = None
    if reference is not None:
        # An ONNX model is compared with the fp32 .tflite, run in the default LiteRT.
        reference_runtime = runtimes.runtime_for_path(
            reference, None if chosen is runtimes.Runtime.ONNXRUNTIME else chosen
        )
        open_reference = lambda: runtimes.open_runner(reference, runtime=reference_runtime, threads=threads)  # noqa: E731
    settings = {
        "evaluation": _describe_windows(evaluation, windows),
        "reference": None if reference is None else {"path": str(reference), "sha256": files.sha256_of(reference)},
        "reference_is_model": same_as_reference,
    }
    return measure(
        lambda: runtimes.open_runner(path, runtime=chosen, threads=threads),
        model=description,
        evaluation=windows,
        open_reference=open_reference,
        warmup_runs=warmup_runs,
        runs=runs,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        max_windows=max_windows,
        settings=settings,
        progress=progress,
    )


def _describe_windows(source, windows: TokenWindows | None) -> dict[str, Any] | None:
    if windows is None:
        return None
    metadata = dict(windows.metadata)
    return {
        "path": None if isinstance(source, TokenWindows) else str(source),
        "num_windows": windows.num_windows,
        "seq_len": windows.seq_len,
        "split": metadata.get("split"),
        "source": metadata.get("source"),
        "corpus_sha256": metadata.get("corpus_sha256"),
    }
