"""`make bench`: convert what is missing, then benchmark every mode and the baselines in one run.

    python -m converter.bench [--model=tiny-gpt2] [--modes=fp32,fp16,dynamic,int8,int16x8]
        [--threads=1,2] [--results_dir=results] [--nopeers] [--nokeras]

Each measurement runs in its own process (the device harness for `.tflite`
and `.onnx` files, `converter.keras_bench` for the Keras model), so one
model's memory and thread pools never leak into the next one's figures.
Baselines measured in the same run: fp32 TFLite (accuracy reference), the
Keras model on TensorFlow, and ONNX Runtime fp32 / dynamic int8 (`--peers`).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

from absl import app, flags

from converter import modes


def _parse_threads(values: list[str]) -> list[int]:
    try:
        threads = [int(value) for value in values]
    except ValueError:
        raise ValueError(f"--threads takes integers, e.g. --threads=1,2; got {','.join(values)}.") from None
    if not threads or min(threads) < 1:
        raise ValueError(f"Every thread count must be at least 1; got {','.join(values)}.")
    return threads


def _run(step: str, command: list[str]) -> None:
    print(f"[bench] {step}", file=sys.stderr, flush=True)
    completed = subprocess.run(command, check=False, env=os.environ.copy())
    if completed.returncode != 0:
        raise RuntimeError(f"{step} failed (exit {completed.returncode}): {' '.join(command)}")

_MODEL = None
_MODES = None
_THREADS = None
_BUILD_DIR = None
_RESULTS_DIR = None
_SEQ_LEN = None
_PEERS = None
_KERAS = None
_RUNS = None
_MAX_WINDOWS = None
_FIDELITY = None


def _define_flags() -> None:
    """Defines the flags only when run as a program, so importing this module defines none."""
    global _MODEL, _MODES, _THREADS, _BUILD_DIR, _RESULTS_DIR, _SEQ_LEN, _PEERS, _KERAS, _RUNS, _MAX_WINDOWS  # pylint: disable=global-statement
    global _FIDELITY  # pylint: disable=global-statement
    _MODEL = flags.DEFINE_string("model", "tiny-gpt2", "Built-in model name, .keras file or preset folder.")
    _MODES = flags.DEFINE_list("modes", list(modes.MODE_NAMES), "Modes to benchmark (fp32 is always included).")
    _THREADS = flags.DEFINE_list("threads", ["1", "2"], "CPU thread counts.")
    _BUILD_DIR = flags.DEFINE_string("build_dir", "build", "Build folder.")
    _RESULTS_DIR = flags.DEFINE_string("results_dir", "results", "Folder for result files.")
    _SEQ_LEN = flags.DEFINE_integer("seq_len", None, "Fixed sequence length (default: as the converter).", lower_bound=2)
    _PEERS = flags.DEFINE_boolean("peers", True, "Also export and benchmark the ONNX Runtime peers.")
    _KERAS = flags.DEFINE_boolean("keras", True, "Also benchmark the Keras model on TensorFlow.")
    _RUNS = flags.DEFINE_integer("runs", 50, "Timed runs per measurement (at least).", lower_bound=1)
    _MAX_WINDOWS = flags.DEFINE_integer("max_windows", None, "Score at most this many evaluation windows.", lower_bound=1)
    _FIDELITY = flags.DEFINE_boolean(
        "fidelity", False, "Instead: compare the harness with LiteRT's own benchmark tool on fp32 and dynamic."
    )


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from benchmarks import results  # pylint: disable=import-outside-toplevel
    from converter import conversion, model_sources, onnx_export  # pylint: disable=import-outside-toplevel

    try:
        wanted = [modes.parse_mode(name) for name in _MODES.value]
        threads = _parse_threads(_THREADS.value)
        results.check_results_dir(_RESULTS_DIR.value)
        if _PEERS.value:
            onnx_export.check_peer_packages()
        if _MODEL.value not in model_sources.BUILTIN_MODELS:
            model_sources.check_model_path(_MODEL.value)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if _FIDELITY.value:
        # The wheel's tool and the harness both time fp32 and dynamic: the modes the peers are compared on.
        wanted = [modes.Mode.FP32, modes.Mode.DYNAMIC]
    elif modes.Mode.FP32 not in wanted:
        wanted.insert(0, modes.Mode.FP32)
    name = model_sources.default_name(_MODEL.value)
    python = sys.executable
    common = [f"--model={_MODEL.value}", f"--build_dir={_BUILD_DIR.value}"]
    if _SEQ_LEN.value:
        common.append(f"--seq_len={_SEQ_LEN.value}")
    try:
        _run("converting missing modes", [python, "-m", "converter.table", *common,
                                          f"--modes={','.join(m.value for m in wanted)}"])
        fp32 = conversion.default_output_path(name, modes.Mode.FP32, build_dir=_BUILD_DIR.value)
        if _FIDELITY.value:
            dynamic = conversion.default_output_path(name, modes.Mode.DYNAMIC, build_dir=_BUILD_DIR.value)
            _run("harness vs LiteRT's benchmark tool",
                 [python, "-m", "benchmarks.fidelity", f"--model={fp32},{dynamic}",
                  *[f"--threads={count}" for count in threads], f"--runs={max(_RUNS.value, 100)}",
                  f"--results_dir={_RESULTS_DIR.value}"])
            return 0
        seq_len = json.loads(fp32.with_suffix(".json").read_text())["seq_len"]
        evaluation = pathlib.Path(_BUILD_DIR.value) / name / f"{name}_seq{seq_len}_evaluation.npz"
        files = [conversion.default_output_path(name, mode, build_dir=_BUILD_DIR.value) for mode in wanted]
        if _PEERS.value:
            _run("exporting the ONNX peers", [python, "-m", "converter.onnx_export", *common])
            files.extend(onnx_export.onnx_paths(name, build_dir=_BUILD_DIR.value).values())
        accuracy = [f"--reference={fp32}"]
        if evaluation.is_file():
            accuracy.append(f"--evaluation={evaluation}")
        else:
            print(f"[bench] no evaluation windows at {evaluation}: timing only", file=sys.stderr)
        settings = [f"--results_dir={_RESULTS_DIR.value}", f"--runs={_RUNS.value}"]
        if _MAX_WINDOWS.value:
            settings.append(f"--max_windows={_MAX_WINDOWS.value}")
        thread_flags = [f"--threads={count}" for count in threads]
        for index, path in enumerate(files, 1):
            _run(f"{index}/{len(files)} {path.name}",
                 [python, "-m", "benchmarks", f"--model={path}", *thread_flags, *accuracy, *settings])
        if _KERAS.value:
            for position, count in enumerate(threads):
                keras_accuracy = accuracy if position == 0 else []
                _run(f"Keras on TensorFlow, {count} thread(s)",
                     [python, "-m", "converter.keras_bench", *common, f"--threads={count}", *keras_accuracy,
                      *settings])
    except (RuntimeError, OSError, KeyError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"[bench] done; `make report` renders {_RESULTS_DIR.value}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(main)
