"""`make bench`: convert what is missing, then benchmark every mode and the baselines in one run.

    make bench [MODEL=tiny-gpt2] [MODES=...] [THREADS=1,2]
    python -m converter.cli.bench [--model=tiny-gpt2] [--modes=fp32,fp16,dynamic,int8,int16x8]
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
import subprocess
import sys

from absl import flags

from converter.cli import flags as cli_flags
from converter.core import modes


def _parse_threads(values: list[str]) -> list[int]:
    try:
        threads = [int(value) for value in values]
    except ValueError:
        raise ValueError(f"--threads takes integers, e.g. --threads=1,2; got {','.join(values)}.") from None
    if not threads or min(threads) < 1:
        raise ValueError(f"Every thread count must be at least 1; got {','.join(values)}.")
    return threads


def _run(step: str, command: list[str]) -> None:
    from converter.common import progress  # pylint: disable=import-outside-toplevel

    progress.log("bench", step)
    completed = subprocess.run(command, check=False, env=os.environ.copy())
    if completed.returncode != 0:
        raise RuntimeError(f"{step} failed (exit {completed.returncode}): {' '.join(command)}")


def _define_flags() -> None:
    cli_flags.model_flags()
    cli_flags.modes_flag(help_text="Modes to benchmark (fp32 is always included).")
    cli_flags.define("threads", flags.DEFINE_list, ["1", "2"], "CPU thread counts.")
    cli_flags.define("results_dir", flags.DEFINE_string, "results", "Folder for result files.")
    cli_flags.define("peers", flags.DEFINE_boolean, True, "Also export and benchmark the ONNX Runtime peers.")
    cli_flags.define("keras", flags.DEFINE_boolean, True, "Also benchmark the Keras model on TensorFlow.")
    cli_flags.define("runs", flags.DEFINE_integer, 50, "Timed runs per measurement (at least).", lower_bound=1)
    cli_flags.define(
        "max_windows", flags.DEFINE_integer, None, "Score at most this many evaluation windows.", lower_bound=1
    )
    cli_flags.define(
        "fidelity",
        flags.DEFINE_boolean,
        False,
        "Instead: compare the harness with LiteRT's own benchmark tool on fp32 and dynamic.",
    )


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    # pylint: disable=import-outside-toplevel
    from benchmarks import results
    from converter.common import progress
    from converter.core import results as conversion_results
    from converter.models import model_sources
    from converter.tools import onnx_export

    value = flags.FLAGS

    try:
        wanted = cli_flags.check_variants(value.modes)
        threads = _parse_threads(value.threads)
        results.check_results_dir(value.results_dir)
        if value.peers:
            onnx_export.check_peer_packages()
        if value.model not in model_sources.BUILTIN_MODELS:
            model_sources.check_model_path(value.model)
    except (ValueError, OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if value.fidelity:
        # The wheel's tool and the harness both time fp32 and dynamic: the modes the peers are compared on.
        wanted = [modes.Mode.FP32.value, modes.Mode.DYNAMIC.value]
    elif modes.Mode.FP32.value not in wanted:
        wanted.insert(0, modes.Mode.FP32.value)
    name = model_sources.default_name(value.model)
    python = sys.executable
    common = [f"--model={value.model}", f"--build_dir={value.build_dir}"]
    if value.seq_len:
        common.append(f"--seq_len={value.seq_len}")
    try:
        _run(
            "converting missing modes",
            [python, "-m", "converter.cli.table", *common, f"--modes={','.join(wanted)}"],
        )
        fp32 = conversion_results.default_output_path(name, modes.Mode.FP32, build_dir=value.build_dir)
        if value.fidelity:
            dynamic = conversion_results.default_output_path(name, modes.Mode.DYNAMIC, build_dir=value.build_dir)
            _run(
                "harness vs LiteRT's benchmark tool",
                [
                    python,
                    "-m",
                    "benchmarks.fidelity",
                    f"--model={fp32},{dynamic}",
                    *[f"--threads={count}" for count in threads],
                    f"--runs={max(value.runs, 100)}",
                    f"--results_dir={value.results_dir}",
                ],
            )
            return 0
        seq_len = json.loads(fp32.with_suffix(".json").read_text())["seq_len"]
        evaluation = conversion_results.windows_paths(name, seq_len, build_dir=value.build_dir)[1]
        files = [conversion_results.default_output_path(name, mode, build_dir=value.build_dir) for mode in wanted]
        if value.peers:
            _run("exporting the ONNX peers", [python, "-m", "converter.cli.onnx_export", *common])
            files.extend(onnx_export.onnx_paths(name, build_dir=value.build_dir).values())
        accuracy = [f"--reference={fp32}"]
        if evaluation.is_file():
            accuracy.append(f"--evaluation={evaluation}")
        else:
            progress.log("bench", f"no evaluation windows at {evaluation}: timing only")
        settings = [f"--results_dir={value.results_dir}", f"--runs={value.runs}"]
        if value.max_windows:
            settings.append(f"--max_windows={value.max_windows}")
        thread_flags = [f"--threads={count}" for count in threads]
        for index, path in enumerate(files, 1):
            _run(
                f"{index}/{len(files)} {path.name}",
                [python, "-m", "benchmarks", f"--model={path}", *thread_flags, *accuracy, *settings],
            )
        if value.keras:
            for position, count in enumerate(threads):
                keras_accuracy = accuracy if position == 0 else []
                _run(
                    f"Keras on TensorFlow, {count} thread(s)",
                    [
                        python,
                        "-m",
                        "converter.cli.keras_bench",
                        *common,
                        f"--threads={count}",
                        *keras_accuracy,
                        *settings,
                    ],
                )
    except (RuntimeError, OSError, KeyError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    progress.log("bench", f"done; `make report` renders {value.results_dir}")
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
