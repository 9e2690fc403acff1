"""Where the time goes: every op of a model timed on its own, and whether XNNPACK takes it.

    python -m benchmarks.op_profile --model=build/tiny-gpt2/tiny-gpt2_int8.tflite [--threads=1]

The Python interpreter has no per-op profiler, so each operator is cut out
into a one-op model (its tensors and their weights only), loaded in LiteRT
with the default XNNPACK delegate, fed random inputs of its dtypes and timed.
A one-op model whose execution plan holds a DELEGATE node ran in XNNPACK;
otherwise in LiteRT's built-in kernels. The sum of the ops is close to, but
not the same as, the whole model's latency: inside one model XNNPACK fuses
neighbouring ops and skips copies at partition borders.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import statistics
import sys
import time
from typing import Any

import numpy as np
from absl import app, flags

from converter import tflite_file

_SKIPPED_OPS = frozenset({"WHILE", "IF", "CALL_ONCE", "CUSTOM", "DELEGATE"})


@dataclasses.dataclass(frozen=True)
class OpTiming:
    """One operator of the model, timed alone.

    Attributes:
      index: position in the model's execution order (subgraph 0).
      op: builtin op name.
      version: op version.
      input_dtypes: dtypes of its non-constant inputs, then of its weights.
      output_dtype: dtype of its first output.
      delegated: XNNPACK took it.
      median_ms: median latency alone, or None when it could not be run alone.
      note: why it was not timed, if it was not.
    """

    index: int
    op: str
    version: int
    input_dtypes: tuple[str, ...]
    output_dtype: str
    delegated: bool
    median_ms: float | None
    note: str = ""


def _random_input(detail: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    dtype, shape = np.dtype(detail["dtype"]), detail["shape"]
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.int32 or dtype == np.int64:
        return np.zeros(shape, dtype)  # indices and ids: 0 is valid for any table
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return np.zeros(shape, dtype)


def profile_ops(
    path: str | os.PathLike, *, threads: int = 1, runs: int = 20, warmup_runs: int = 3, progress: bool = True
) -> list[OpTiming]:
    """Times every operator of the model's main subgraph alone.

    Args:
      path: a `.tflite` file (needs `ai_edge_litert`, which ships the schema).
      threads: CPU threads per op.
      runs, warmup_runs: timed and untimed invocations per op.
      progress: report every 50 ops on stderr.

    Returns:
      One `OpTiming` per operator, in execution order.
    """
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel

    path = tflite_file.check_model_file(path)
    fb = tflite_file.schema()
    model = tflite_file.load_model_object(path)
    op_names = tflite_file.enum_names(fb.BuiltinOperator)
    dtype_names = tflite_file.enum_names(fb.TensorType)
    subgraph = model.subgraphs[0]
    rng = np.random.default_rng(0)
    timings = []
    for index, operator in enumerate(subgraph.operators):
        code = model.operatorCodes[operator.opcodeIndex]
        op = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "UNKNOWN")
        inputs = [subgraph.tensors[t] for t in operator.inputs if t >= 0]
        dtypes = tuple(dtype_names.get(t.type, "?") for t in inputs)
        output_dtype = dtype_names.get(subgraph.tensors[operator.outputs[0]].type, "?")
        common = dict(index=index, op=op, version=code.version, input_dtypes=dtypes, output_dtype=output_dtype)
        if op in _SKIPPED_OPS:
            timings.append(OpTiming(delegated=False, median_ms=None, note="not profiled alone", **common))
            continue
        try:
            content, _ = tflite_file.single_op_model(model, index)
            interpreter = litert.Interpreter(model_content=content, num_threads=threads)
            interpreter.allocate_tensors()
            for detail in interpreter.get_input_details():
                interpreter.set_tensor(detail["index"], _random_input(detail, rng))
            delegated = any(node["op_name"] == "DELEGATE" for node in interpreter._get_ops_details())  # pylint: disable=protected-access
            for _ in range(warmup_runs):
                interpreter.invoke()
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                interpreter.invoke()
                samples.append(1000 * (time.perf_counter() - start))
            timings.append(OpTiming(delegated=delegated, median_ms=statistics.median(samples), **common))
        except (RuntimeError, ValueError) as error:
            timings.append(
                OpTiming(delegated=False, median_ms=None, note=f"could not run alone: {error}"[:200], **common)
            )
        if progress and (index + 1) % 50 == 0:
            print(f"[op_profile] {index + 1}/{len(subgraph.operators)} ops", file=sys.stderr, flush=True)
    return timings


def summarize_by_op(timings: list[OpTiming]) -> str:
    """A markdown table per op type and dtypes: count, delegated count, total and share of time."""
    groups: dict[tuple[str, str], list[OpTiming]] = collections.defaultdict(list)
    for timing in timings:
        groups[(timing.op, "/".join(timing.input_dtypes[:1]) + "→" + timing.output_dtype)].append(timing)
    total = sum(t.median_ms or 0.0 for t in timings)
    rows = sorted(groups.items(), key=lambda item: -sum(t.median_ms or 0.0 for t in item[1]))
    lines = [
        f"Sum of ops alone: {total:.2f} ms",
        "",
        "| op | dtypes (first input → output) | count | in XNNPACK | total | share |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for (op, dtypes), items in rows:
        spent = sum(t.median_ms or 0.0 for t in items)
        delegated = sum(t.delegated for t in items)
        lines.append(
            f"| {op} | {dtypes} | {len(items)} | {delegated} | {spent:.3f} ms | "
            f"{100 * spent / total if total else 0:.1f} % |"
        )
    return "\n".join(lines) + "\n"


_MODEL = None
_THREADS = None
_RUNS = None


def _define_flags() -> None:
    """Defines the flags only when run as a program, so importing this module defines none."""
    global _MODEL, _THREADS, _RUNS  # pylint: disable=global-statement
    _MODEL = flags.DEFINE_string("model", None, "The .tflite file.", required=True)
    _THREADS = flags.DEFINE_integer("threads", 1, "CPU threads.", lower_bound=1)
    _RUNS = flags.DEFINE_integer("runs", 20, "Timed runs per op.", lower_bound=1)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        timings = profile_ops(_MODEL.value, threads=_THREADS.value, runs=_RUNS.value)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summarize_by_op(timings))
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(main)
