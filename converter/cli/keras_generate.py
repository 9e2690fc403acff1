"""The keras-hub `generate` baseline of `make bench-generation`, one process per thread count.

python -m converter.cli.keras_generate --model=smollm2-135m --threads=2 [--new_tokens=128]
"""

from __future__ import annotations

import os
import sys

from absl import flags

from converter.cli import flags as cli_flags
from converter.common import progress


def _define_flags() -> None:
    cli_flags.model_flags(with_seq_len=False)
    cli_flags.threads_flag(default=1, help_text="TensorFlow intra-op threads.")
    cli_flags.define("new_tokens", flags.DEFINE_integer, 128, "Tokens generated.", lower_bound=1)
    cli_flags.define("results_dir", flags.DEFINE_string, "results", "Folder for result files.")
    cli_flags.verbosity_flags()


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # pylint: disable=import-outside-toplevel
    from benchmarks import results
    from converter.tools import keras_bench, keras_generate

    value = flags.FLAGS
    try:
        with progress.silence_native_output(enabled=not value.verbose):
            folder = results.check_results_dir(value.results_dir)
            keras_bench.set_threads(value.threads)
            baseline = keras_generate.measure_keras_generate(
                value.model, threads=value.threads, new_tokens=value.new_tokens, build_dir=value.build_dir
            )
            path = baseline.save(folder)
    except (OSError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{keras_generate.KERAS_GENERATE}, {value.threads} thread(s): {baseline.decode_tokens_per_second:.1f} tok/s")
    progress.log("bench", f"wrote {path}")
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
