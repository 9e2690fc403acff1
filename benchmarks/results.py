"""One JSON file per benchmark run, written atomically, and reading them back."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import tempfile
import uuid
from typing import Any

from benchmarks.accuracy import AccuracyResult
from benchmarks.machine import MachineInfo
from benchmarks.runtimes import RuntimeInfo
from benchmarks.timing import LatencyStats
from converter.common import files

SCHEMA = "keras-lm-litert/benchmark-result/1"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The model a result belongs to.

    Attributes:
      name: the model's name (`tiny-gpt2`), shared by all its variants.
      variant: what was run: a conversion mode (`fp32`, `int8`, ...),
        `onnx-fp32` / `onnx-dynamic`, or `keras`.
      path: the file benchmarked (a preset folder or model name for Keras).
      format: `tflite`, `onnx` or `keras`.
      sha256: the file's sha256 (None for Keras models, which are not one file).
      size_bytes: the file's size (for Keras: bytes of its weights).
      seq_len: tokens per inference.
      vocabulary_size: logits per position.
    """

    name: str
    variant: str
    path: str
    format: str
    sha256: str | None
    size_bytes: int
    seq_len: int
    vocabulary_size: int


@dataclasses.dataclass(frozen=True)
class MemoryStats:
    """Resident memory of the process that loaded and ran the model.

    Attributes:
      baseline_rss_bytes: RSS just before the model was loaded.
      peak_rss_bytes: peak RSS while loading and running it (accuracy
        evaluation, which also loads the reference model, is not included).
      peak_covers_load_only: True when the peak counter was reset before
        loading; False means it also covers what the process did before.
    """

    baseline_rss_bytes: int | None
    peak_rss_bytes: int
    peak_covers_load_only: bool

    @property
    def added_rss_bytes(self) -> int | None:
        if self.baseline_rss_bytes is None:
            return None
        return max(self.peak_rss_bytes - self.baseline_rss_bytes, 0)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["added_rss_bytes"] = self.added_rss_bytes
        return values


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    """Everything one benchmark run measured, with what it ran on."""

    machine: MachineInfo
    runtime: RuntimeInfo
    model: ModelInfo
    settings: dict[str, Any]
    latency: LatencyStats
    memory: MemoryStats
    accuracy: AccuracyResult | None
    # Board facts of a device run (benchmarks.device, written by the Pi pack's runner); None on the host.
    device: dict[str, Any] | None = None
    created: str = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "created": self.created,
            "machine": self.machine.to_dict(),
            "runtime": self.runtime.to_dict(),
            "model": dataclasses.asdict(self.model),
            "settings": dict(self.settings),
            "latency": self.latency.to_dict(),
            "memory": self.memory.to_dict(),
            "accuracy": None if self.accuracy is None else self.accuracy.to_dict(),
            **({} if self.device is None else {"device": dict(self.device)}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def summary(self) -> str:
        """One line for the terminal."""
        text = (
            f"{self.model.name} {self.model.variant} [{self.runtime.name} {self.runtime.version}, "
            f"{self.settings['threads']} thr]: {self.model.size_bytes / 2**20:.2f} MiB, median "
            f"{self.latency.median_ms:.2f} ms (p90 {self.latency.p90_ms:.2f}), init {self.latency.init_ms:.0f} ms, "
            f"peak RSS {self.memory.peak_rss_bytes / 2**20:.0f} MiB"
        )
        if self.accuracy is not None:
            text += f", perplexity {self.accuracy.perplexity:.3f}"
            if self.accuracy.top1_agreement is not None:
                text += f", top-1 vs fp32 {100 * self.accuracy.top1_agreement:.1f} %, KL {self.accuracy.mean_kl:.4f}"
        return text

    def file_name(self) -> str:
        """`<variant>_t<threads>_<runtime>_<UTC time>.json`: runs never overwrite each other."""
        stamp = self.created.replace(":", "").replace("-", "").replace("+0000", "Z")
        return f"{self.model.variant}_t{self.settings['threads']}_{self.runtime.name}_{stamp}.json"

    def save(self, results_dir: str | os.PathLike) -> pathlib.Path:
        """Writes `<results_dir>/<model name>/<file_name()>` atomically; returns the path.

        Raises:
          FileExistsError: a result of that name exists (two runs in one second).
        """
        folder = pathlib.Path(results_dir) / self.model.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.file_name()
        if path.exists():
            path = folder / f"{path.stem}_{uuid.uuid4().hex[:6]}.json"
        files.write_atomically(path, self.to_json())
        return path


def check_results_dir(results_dir: str | os.PathLike) -> pathlib.Path:
    """Makes sure results can be written there, before any measuring starts.

    Raises:
      NotADirectoryError: the path is a file.
      PermissionError: the folder cannot be created or written.
    """
    folder = pathlib.Path(results_dir)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"Results folder {str(folder)!r} is a file; pass a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise PermissionError(
            f"Cannot write results to {str(folder)!r} ({error.strerror or error}); pass a "
            "writable folder (--results_dir, RESULTS_DIR=...)."
        ) from None
    return folder


def load_results(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every result file under a folder (recursively), oldest first.

    Raises:
      FileNotFoundError: the folder does not exist.
      ValueError: a file that looks like a result but is not valid JSON.
    """
    folder = pathlib.Path(results_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"No results folder at {str(folder)!r}; run `make bench` first.")
    results = []
    for path in sorted(folder.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{str(path)!r} is not a valid result file ({error}); delete it.") from None
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            data["_path"] = str(path)
            results.append(data)
    return sorted(results, key=lambda result: result["created"])
