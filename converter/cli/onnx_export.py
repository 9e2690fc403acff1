"""The ONNX Runtime peers of `make bench`: fp32 ONNX and `quantize_dynamic` int8 (`converter.tools.onnx_export`).

python -m converter.cli.onnx_export [--model=tiny-gpt2] [--seq_len=128] [--overwrite]
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging

from converter.cli import flags as cli_flags
from converter.common import progress


def _define_flags() -> None:
    cli_flags.verbosity_flags()
    cli_flags.model_flags()
    cli_flags.define("overwrite", flags.DEFINE_boolean, False, "Replace existing ONNX files.")


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    logging.set_verbosity(logging.WARNING)  # onnxruntime's quantizer logs every tensor at INFO
    # pylint: disable=import-outside-toplevel
    from converter.core import conversion
    from converter.models import model_sources
    from converter.tools import onnx_export

    value = flags.FLAGS
    try:
        with progress.silence_native_output(enabled=not flags.FLAGS.verbose):
            onnx_export.check_peer_packages()
            loaded = model_sources.load_model(value.model, build_dir=value.build_dir)
            seq_len = conversion.resolve_seq_len(loaded.model, value.seq_len)
            paths = onnx_export.export_onnx(
                loaded, seq_len=seq_len, model_name=loaded.name, build_dir=value.build_dir, overwrite=value.overwrite
            )
    except (ImportError, ValueError, FileNotFoundError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for variant, path in paths.items():
        print(f"{variant}: {path} ({path.stat().st_size / 2**20:.2f} MiB)")
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
