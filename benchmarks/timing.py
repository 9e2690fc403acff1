"""Latency in the manner of TFLite's benchmark_model: init, first run, warm-up, timed runs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Wall-clock latency of one inference, in milliseconds.

    Attributes:
      init_ms: loading the model and allocating its tensors.
      first_ms: the first inference, which pays for lazy packing of weights.
      warmup_runs: untimed runs after the first one.
      runs: timed runs; min / median / p90 / max / mean / std are over these.
    """

    init_ms: float
    first_ms: float
    warmup_runs: int
    runs: int
    min_ms: float
    median_ms: float
    p90_ms: float
    max_ms: float
    mean_ms: float
    std_ms: float

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def summarize(samples_ms, *, init_ms: float, first_ms: float, warmup_runs: int) -> LatencyStats:
    """Summary statistics of timed runs (p90 by linear interpolation, as numpy does)."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.size == 0:
        raise ValueError("No timed runs to summarise; ask for at least one run.")
    return LatencyStats(
        init_ms=float(init_ms),
        first_ms=float(first_ms),
        warmup_runs=int(warmup_runs),
        runs=int(samples.size),
        min_ms=float(samples.min()),
        median_ms=float(np.median(samples)),
        p90_ms=float(np.percentile(samples, 90)),
        max_ms=float(samples.max()),
        mean_ms=float(samples.mean()),
        std_ms=float(samples.std()),
    )


def time_runs(
    invoke: Callable[[], None],
    *,
    warmup_runs: int,
    runs: int,
    min_warmup_seconds: float = 0.5,
    min_seconds: float = 1.0,
    max_seconds: float = 120.0,
    progress: Callable[[str], None] | None = None,
) -> tuple[float, int, list[float]]:
    """Times `invoke`: one first run, warm-up, then timed runs.

    Like benchmark_model, both phases run at least a count and at least a
    duration, so very fast models still get a stable median. For very slow
    ones, warm-up stops after a quarter of `max_seconds` (at least one run)
    and the timed phase after `max_seconds` (at least 3 runs).

    Returns:
      (first run in ms, warm-up runs done, timed run latencies in ms).
    """
    start = time.perf_counter()
    invoke()
    first_ms = 1000 * (time.perf_counter() - start)
    done = 0
    phase_start = time.perf_counter()
    while done < warmup_runs or time.perf_counter() - phase_start < min_warmup_seconds:
        invoke()
        done += 1
        if time.perf_counter() - phase_start > max_seconds / 4:
            break
    samples: list[float] = []
    phase_start = time.perf_counter()
    while len(samples) < runs or time.perf_counter() - phase_start < min_seconds:
        start = time.perf_counter()
        invoke()
        samples.append(1000 * (time.perf_counter() - start))
        elapsed = time.perf_counter() - phase_start
        if elapsed > max_seconds and len(samples) >= 3:
            break
        if progress and len(samples) % 25 == 0:
            progress(f"{len(samples)} runs, median {np.median(samples):.2f} ms")
    return first_ms, done, samples
