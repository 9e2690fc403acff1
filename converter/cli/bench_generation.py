"""`make bench-generation`: generation models in every mode, with their baselines and peers, in one run.

    python -m converter.cli.bench_generation [--model=smollm2-135m] [--modes=fp32,fp16,dynamic] [--threads=1,2]
        [--nokeras] [--nollama_cpp] [--results_dir=results]

Converts what is missing (the generation model of each mode, and the
fixed-window model of the same mode for the window-recompute baseline), then
measures each in its own process with the device harness
(`benchmarks.generation_bench`), keras-hub's `generate` on TensorFlow
(`converter.cli.keras_generate`), and, for the built-in SmolLM2, llama.cpp
on the same GGUF weights (built once from the llama-cpp-python sdist; Q8_0
requantized from the shipped file, and Q4_0), and LiteRT-LM's own benchmark on
each mode's `.litertlm` bundle beside the harness on the same signatures
(`benchmarks.litertlm_bench`; bundles written first when missing). `make
report` renders it.
"""

from __future__ import annotations

import os
import subprocess
import sys

from absl import flags

from converter.cli import flags as cli_flags
from converter.cli import missing
from converter.common import progress
from converter.core import recipe as recipe_lib

# The generation modes, and int4 by block size (its recipe name is the mode flag's value).
_MODES = ("fp32", "fp16", "dynamic", *recipe_lib.INT4_BLOCK_NAMES)
_DEFAULT_MODES = ("fp32", "fp16", "dynamic")


def _define_flags() -> None:
    cli_flags.model_flags(with_seq_len=False)
    cli_flags.define(
        "modes", flags.DEFINE_list, list(_DEFAULT_MODES), f"Modes of the generation models: {', '.join(_MODES)}."
    )
    cli_flags.define("threads", flags.DEFINE_list, ["1", "2"], "CPU thread counts.")
    cli_flags.define("results_dir", flags.DEFINE_string, "results", "Folder for result files.")
    cli_flags.define("keras", flags.DEFINE_boolean, True, "Also measure keras-hub's generate on TensorFlow.")
    cli_flags.define(
        "llama_cpp",
        flags.DEFINE_boolean,
        True,
        "Also measure llama.cpp on the same GGUF weights (smollm2-135m; built once, about 15 minutes).",
    )
    cli_flags.define(
        "litertlm",
        flags.DEFINE_boolean,
        True,
        "Also run LiteRT-LM's benchmark on each mode's .litertlm bundle beside the harness (written when missing).",
    )
    cli_flags.define("repeats", flags.DEFINE_integer, 3, "Repeats of each measurement.", lower_bound=1)
    cli_flags.define("new_tokens", flags.DEFINE_integer, 128, "tg<N>: tokens generated.", lower_bound=1)


def _run(step: str, command: list[str]) -> None:
    progress.log("bench-generation", step)
    completed = subprocess.run(command, check=False, env=os.environ.copy())
    if completed.returncode != 0:
        raise RuntimeError(f"{step} failed (exit {completed.returncode}): {' '.join(command)}")


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    # pylint: disable=import-outside-toplevel
    from benchmarks import results
    from converter.core import results as conversion_results
    from converter.models import model_sources

    value = flags.FLAGS
    try:
        unknown = [m for m in value.modes if m not in _MODES]
        if unknown:
            raise ValueError(f"Generation models convert in {', '.join(_MODES)}; not {', '.join(unknown)}.")
        threads = [int(t) for t in value.threads]
        if not threads or min(threads) < 1:
            raise ValueError("--threads takes counts of at least 1, e.g. --threads=1,2.")
        results.check_results_dir(value.results_dir)
        if value.model not in model_sources.BUILTIN_MODELS:
            model_sources.check_model_path(value.model)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    name = model_sources.default_name(value.model)
    python = sys.executable
    common = [f"--model={value.model}", f"--build_dir={value.build_dir}"]
    try:
        for mode in value.modes:
            generate = conversion_results.default_output_path(name, f"{mode}_generate", build_dir=value.build_dir)
            window = conversion_results.default_output_path(name, mode, build_dir=value.build_dir)
            missing.convert_if_missing(
                generate, value.model, mode, build_dir=value.build_dir, generate=True, label="bench-generation"
            )
            missing.convert_if_missing(
                window,
                value.model,
                mode,
                build_dir=value.build_dir,
                label="bench-generation",
                why=" (the window-recompute baseline)",
            )
            for count in threads:  # a process per run: its peak memory is its own
                _run(
                    f"measuring {generate.name}, {count} thread(s)",
                    [
                        python,
                        "-m",
                        "benchmarks.generation_bench",
                        f"--model={generate}",
                        f"--threads={count}",
                        f"--window_model={window}",
                        f"--name={name}",
                        f"--variant={mode}",
                        f"--results_dir={value.results_dir}",
                        f"--repeats={value.repeats}",
                        f"--new_tokens={value.new_tokens}",
                    ],
                )
            if value.litertlm:
                bundle = generate.with_name(f"{name}_{mode}.litertlm")
                if not bundle.is_file():
                    _run(
                        f"writing {bundle.name}",
                        [python, "-m", "converter.cli.litertlm", *common, f"--mode={mode}", f"--out={bundle}"],
                    )
                _run(
                    f"LiteRT-LM's benchmark and the harness on {bundle.name}",
                    [
                        python,
                        "-m",
                        "benchmarks.litertlm_bench",
                        f"--bundle={bundle}",
                        f"--threads={','.join(map(str, threads))}",
                        f"--name={name}",
                        f"--variant={mode}",
                        f"--runs={value.repeats}",
                        f"--decode_tokens={value.new_tokens}",
                        f"--results_dir={value.results_dir}",
                    ],
                )
        if value.keras:
            for count in threads:
                _run(
                    f"keras-hub generate on TensorFlow, {count} thread(s)",
                    [
                        python,
                        "-m",
                        "converter.cli.keras_generate",
                        *common,
                        f"--threads={count}",
                        f"--results_dir={value.results_dir}",
                        f"--new_tokens={value.new_tokens}",
                    ],
                )
        if value.llama_cpp and name == "smollm2-135m":
            _run(
                "llama.cpp on the same GGUF weights",
                [
                    python,
                    "-m",
                    "converter.cli.llama_cpp_bench",
                    f"--build_dir={value.build_dir}",
                    f"--threads={','.join(map(str, threads))}",
                    f"--results_dir={value.results_dir}",
                    f"--new_tokens={value.new_tokens}",
                ],
            )
        elif value.llama_cpp:
            progress.log(
                "bench-generation", f"llama.cpp runs the built-in smollm2-135m's GGUF only; skipped for {name}"
            )
    except (RuntimeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    progress.log("bench-generation", f"done; `make report` renders {value.results_dir}")
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
