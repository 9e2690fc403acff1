"""Does our timing agree with LiteRT's own benchmark tool? Both, alternated, on the same model.

    python -m benchmarks.fidelity --model=build/tiny-gpt2/tiny-gpt2_fp32.tflite --threads=1,2

The tool that ships in the ai-edge-litert wheel
(`ai_edge_litert/tools/benchmark_litert_model.py`) runs the model through the
CompiledModel API on random inputs; the harness runs it through the
Interpreter API on a fixed window. They are run in alternation (`--rounds`
times each, so that drift in machine load hits both) with the same thread
count and run counts, and their medians of medians are compared.

The tool fills int32 inputs with random values in [-128, 127], and negative
token ids make the embedding GATHER fail ("gather index out of bounds"). So
the tool runs unchanged except for that one function, replaced by one that
draws ids in [0, 128): its own model loading, warm-up and timing loop are what
we compare against.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

from benchmarks import harness, results, runtimes
from benchmarks.timing import time_runs
from converter import tflite_file
from converter.common import files

TOLERANCE = 0.10
# Runs the wheel's tool with valid token ids (see the module docstring).
_TOOL_WITH_VALID_IDS = """
import importlib.util, logging, sys
import numpy as np
spec = importlib.util.spec_from_file_location("benchmark_litert_model", sys.argv[1])
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)
def fill_valid_ids(tensor_buffer, details):
    shape = details.get("shape", [1])
    tensor_buffer.write(np.random.randint(0, 128, shape).astype(tool.get_numpy_dtype(details.get("dtype", "int32"))))
tool.fill_random_input = fill_valid_ids
sys.argv = [sys.argv[1], *sys.argv[2:]]
logging.basicConfig(level=logging.WARNING)
tool.run_benchmark(tool.parse_args())
"""


def tool_path() -> pathlib.Path:
    """The benchmark script inside the installed ai-edge-litert wheel."""
    import ai_edge_litert  # pylint: disable=import-outside-toplevel

    path = pathlib.Path(ai_edge_litert.__file__).parent / "tools" / "benchmark_litert_model.py"
    if not path.is_file():
        raise FileNotFoundError(f"ai-edge-litert has no {path.name} at {path}; install ai-edge-litert==2.3.0.")
    return path


@dataclasses.dataclass(frozen=True)
class FidelityResult:
    """Harness and LiteRT tool medians on one model and thread count."""

    model: str
    threads: int
    runs: int
    harness_medians_ms: tuple[float, ...]
    tool_medians_ms: tuple[float, ...]

    @property
    def harness_ms(self) -> float:
        return statistics.median(self.harness_medians_ms)

    @property
    def tool_ms(self) -> float:
        return statistics.median(self.tool_medians_ms)

    @property
    def relative_difference(self) -> float:
        """(harness - tool) / tool."""
        return self.harness_ms / self.tool_ms - 1.0

    @property
    def within_tolerance(self) -> bool:
        return abs(self.relative_difference) <= TOLERANCE

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values.update(
            harness_ms=self.harness_ms,
            tool_ms=self.tool_ms,
            relative_difference=self.relative_difference,
            within_tolerance=self.within_tolerance,
        )
        return values


def _harness_median(path: str, *, threads: int, runs: int, warmup_runs: int) -> float:
    runner = runtimes.open_runner(path, threads=threads)
    runner.prepare(harness.timing_inputs(runner, None))  # pylint: disable=protected-access
    _, _, samples = time_runs(
        runner.invoke, warmup_runs=warmup_runs, runs=runs, min_seconds=0.0, min_warmup_seconds=0.0
    )
    return statistics.median(samples)


def _tool_median(path: str, *, threads: int, runs: int, warmup_runs: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        output = pathlib.Path(scratch) / "result.json"
        arguments = [
            f"--model={path}",
            f"--num_threads={threads}",
            f"--num_runs={runs}",
            f"--warmup_runs={warmup_runs}",
            f"--result_json={output}",
        ]
        command = [sys.executable, "-c", _TOOL_WITH_VALID_IDS, str(tool_path()), *arguments]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0 or not output.is_file():
            raise RuntimeError(f"LiteRT's benchmark tool failed on {path}: {completed.stderr.strip()[-500:]}")
        return float(json.loads(output.read_text())["latency"]["median_ms"])


def compare(path: str, *, threads: int, runs: int = 100, warmup_runs: int = 10, rounds: int = 3) -> FidelityResult:
    """Alternates harness and tool `rounds` times each on one model and thread count."""
    tflite_file.check_model_file(path)
    runtimes.check_threads(threads)
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(_harness_median(path, threads=threads, runs=runs, warmup_runs=warmup_runs))
        theirs.append(_tool_median(path, threads=threads, runs=runs, warmup_runs=warmup_runs))
    return FidelityResult(
        model=str(path), threads=threads, runs=runs, harness_medians_ms=tuple(ours), tool_medians_ms=tuple(theirs)
    )


def render(fidelity: list[FidelityResult]) -> str:
    """A markdown table of the comparisons."""
    lines = [
        "| model | threads | harness median | LiteRT tool median | difference | within 10 % |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for item in fidelity:
        lines.append(
            f"| `{pathlib.Path(item.model).name}` | {item.threads} | {item.harness_ms:.2f} ms | "
            f"{item.tool_ms:.2f} ms | {100 * item.relative_difference:+.1f} % | "
            f"{'yes' if item.within_tolerance else 'no'} |"
        )
    return "\n".join(lines) + "\n"


_MODELS = None
_THREADS = None
_RUNS = None
_ROUNDS = None
_RESULTS_DIR = None


def _define_flags() -> None:
    """Defines the flags only when run as a program, so importing this module defines none."""
    global _MODELS, _THREADS, _RUNS, _ROUNDS, _RESULTS_DIR  # pylint: disable=global-statement
    _MODELS = flags.DEFINE_list("model", None, "fp32 / fp16 / dynamic .tflite files.")
    flags.mark_flag_as_required("model")
    _THREADS = flags.DEFINE_multi_integer("threads", [1], "Thread counts.", lower_bound=1)
    _RUNS = flags.DEFINE_integer("runs", 100, "Timed runs per round.", lower_bound=1)
    _ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds of each tool.", lower_bound=1)
    _RESULTS_DIR = flags.DEFINE_string("results_dir", "results", "Writes fidelity.json and fidelity.md here.")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        folder = results.check_results_dir(_RESULTS_DIR.value)
        for path in _MODELS.value:
            tflite_file.check_model_file(path)
        tool_path()
        fidelity = []
        for path in _MODELS.value:
            for threads in _THREADS.value:
                print(f"[fidelity] {path}, {threads} thread(s)", file=sys.stderr, flush=True)
                fidelity.append(compare(path, threads=threads, runs=_RUNS.value, rounds=_ROUNDS.value))
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = render(fidelity)
    files.write_atomically(folder / "fidelity.md", table)
    payload = {"machine": harness.machine_info().to_dict(), "results": [item.to_dict() for item in fidelity]}
    files.write_atomically(folder / "fidelity.json", json.dumps(payload, indent=2) + "\n")
    print(table)
    # A measurement, not a check: the table says whether each pair is within 10 %.
    return 0


if __name__ == "__main__":
    _define_flags()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
