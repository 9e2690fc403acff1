"""The ONNX Runtime peers of `make bench`: fp32 ONNX and `quantize_dynamic` int8 (`converter.tools.onnx_export`).

python -m converter.cli.onnx_export [--model=tiny-gpt2] [--seq_len=128] [--overwrite]
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from converter.cli import flags as cli_flags


def _define_flags() -> None:
    cli_flags.model_flags()
    cli_flags.define("overwrite", flags.DEFINE_boolean, False, "Replace existing ONNX files.")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    logging.set_verbosity(logging.WARNING)  # onnxruntime's quantizer logs every tensor at INFO
    # pylint: disable=import-outside-toplevel
    from converter.core import conversion
    from converter.models import model_sources
    from converter.tools import onnx_export

    value = flags.FLAGS
    try:
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
    _define_flags()
    cli_flags.show_in_help()
    app.run(main)


if __name__ == "__main__":
    run()
