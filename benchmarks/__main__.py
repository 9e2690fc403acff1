"""Command line: benchmark converted models with numpy and a LiteRT runtime only.

    python -m benchmarks --model=build/tiny-gpt2/tiny-gpt2_int8.tflite \
        --evaluation=build/tiny-gpt2/tiny-gpt2_seq128_evaluation.npz \
        --reference=build/tiny-gpt2/tiny-gpt2_fp32.tflite --threads=1,2

Writes one JSON file per model and thread count to
`<results_dir>/<model name>/`. Accuracy does not depend on the thread count,
so it is measured with the first one only.
"""

from __future__ import annotations

import sys

from absl import app, flags

from benchmarks import harness, results, runtimes
from converter import tflite_file

_MODELS = flags.DEFINE_list("model", None, "Model files (.tflite, or .onnx for ONNX Runtime).")
flags.mark_flag_as_required("model")
_RUNTIME = flags.DEFINE_enum(
    "runtime",
    runtimes.Runtime.AI_EDGE_LITERT.value,
    list(runtimes.RUNTIME_NAMES),
    "Runtime for .tflite files (.onnx files always run in onnxruntime).",
)
_THREADS = flags.DEFINE_multi_integer("threads", [1], "CPU thread counts, e.g. --threads=1 --threads=2.", lower_bound=1)
_EVALUATION = flags.DEFINE_string("evaluation", None, "Evaluation windows (.npz) for accuracy; none: timing only.")
_REFERENCE = flags.DEFINE_string("reference", None, "The fp32 .tflite of the same model, for agreement and KL.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", "results", "Folder for result files.")
_WARMUP_RUNS = flags.DEFINE_integer("warmup_runs", harness.DEFAULT_WARMUP_RUNS, "Untimed runs.", lower_bound=0)
_RUNS = flags.DEFINE_integer("runs", harness.DEFAULT_RUNS, "Timed runs (at least).", lower_bound=1)
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 1.0, "Time at least this long.", lower_bound=0.0)
_MAX_SECONDS = flags.DEFINE_float("max_seconds", 120.0, "Stop timing after this long.", lower_bound=0.1)
_MAX_WINDOWS = flags.DEFINE_integer("max_windows", None, "Score at most this many windows.", lower_bound=1)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        folder = results.check_results_dir(_RESULTS_DIR.value)
        for path in _MODELS.value:
            tflite_file.check_model_file(path)
        saved = []
        for path in _MODELS.value:
            for position, threads in enumerate(_THREADS.value):
                result = harness.benchmark_file(
                    path,
                    runtime=_RUNTIME.value,
                    threads=threads,
                    evaluation=_EVALUATION.value if position == 0 else None,
                    reference=_REFERENCE.value if position == 0 else None,
                    warmup_runs=_WARMUP_RUNS.value,
                    runs=_RUNS.value,
                    min_seconds=_MIN_SECONDS.value,
                    max_seconds=_MAX_SECONDS.value,
                    max_windows=_MAX_WINDOWS.value,
                )
                saved.append(result.save(folder))
                print(result.summary())
    except (OSError, ValueError, runtimes.ModelLoadError, runtimes.RuntimeUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in saved:
        print(f"[bench] wrote {path}", file=sys.stderr)
    return 0


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
