"""The Keras baseline of `make bench`, one process per thread count (`converter.tools.keras_bench`).

    python -m converter.cli.keras_bench --model=tiny-gpt2 --threads=1 \\
        --evaluation=build/tiny-gpt2/tiny-gpt2_seq128_evaluation.npz \\
        --reference=build/tiny-gpt2/tiny-gpt2_fp32.tflite
"""

from __future__ import annotations

import os
import sys

from absl import flags

from converter.cli import flags as cli_flags
from converter.common import progress


def _define_flags() -> None:
    cli_flags.verbosity_flags()
    cli_flags.model_flags()
    cli_flags.threads_flag(default=1, help_text="TensorFlow intra-op threads.")
    cli_flags.define("evaluation", flags.DEFINE_string, None, "Evaluation windows (.npz) for accuracy.")
    cli_flags.define(
        "reference", flags.DEFINE_string, None, "The fp32 .tflite of the same model, for agreement and KL."
    )
    cli_flags.define("results_dir", flags.DEFINE_string, "results", "Folder for result files.")
    cli_flags.define("runs", flags.DEFINE_integer, 50, "Timed runs (at least).", lower_bound=1)
    cli_flags.define("max_windows", flags.DEFINE_integer, None, "Score at most this many windows.", lower_bound=1)


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # pylint: disable=import-outside-toplevel
    from benchmarks import results, runtimes
    from converter.tools import keras_bench

    value = flags.FLAGS
    try:
        with progress.silence_native_output(enabled=not flags.FLAGS.verbose):
            folder = results.check_results_dir(value.results_dir)
            keras_bench.set_threads(value.threads)
            result = keras_bench.measure_keras(
                value.model,
                threads=value.threads,
                evaluation=value.evaluation,
                reference=value.reference,
                runs=value.runs,
                max_windows=value.max_windows,
                seq_len=value.seq_len,
                build_dir=value.build_dir,
            )
            path = result.save(folder)
    except (OSError, ValueError, TypeError, runtimes.ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.summary())
    progress.log("bench", f"wrote {path}")
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
