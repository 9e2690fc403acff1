"""`make debug`: the per-tensor quantization error report of a converted model (`converter.tools.quant_debug`).

python -m converter.cli.debug --model=tiny-gpt2 --mode=int8
python -m converter.cli.debug --model=build/x/x_int8.tflite --mode=int8 --float_model=build/x/x_fp32.tflite
"""

from __future__ import annotations

import sys

from absl import flags

from converter.cli import flags as cli_flags


def _define_flags() -> None:
    from converter.tools import quant_debug  # pylint: disable=import-outside-toplevel

    cli_flags.model_flags(with_seq_len=False)
    cli_flags.define("mode", flags.DEFINE_string, "int8", "Mode of the quantized model: int8 or int16x8.")
    cli_flags.define(
        "float_model",
        flags.DEFINE_string,
        None,
        "The fp32 .tflite (default: <name>_fp32.tflite beside the quantized model).",
    )
    cli_flags.define(
        "windows", flags.DEFINE_string, None, "Token windows .npz (default: the model's evaluation windows beside it)."
    )
    cli_flags.define("out_dir", flags.DEFINE_string, None, "Where the reports go (default: beside the model).")
    cli_flags.define(
        "max_windows", flags.DEFINE_integer, quant_debug.DEFAULT_MAX_WINDOWS, "Windows to run.", lower_bound=1
    )
    cli_flags.define(
        "share_candidates",
        flags.DEFINE_integer,
        quant_debug.DEFAULT_SHARE_CANDIDATES,
        "Ops whose share of the output error is measured.",
        lower_bound=0,
    )
    cli_flags.define(
        "share_windows",
        flags.DEFINE_integer,
        quant_debug.DEFAULT_SHARE_WINDOWS,
        "Windows per share measurement.",
        lower_bound=1,
    )
    cli_flags.output_flags(out_help="Unused: reports go to --out_dir.")


def main(argv: list[str]) -> int:
    from converter.common import files  # pylint: disable=import-outside-toplevel
    from converter.tools import quant_debug  # pylint: disable=import-outside-toplevel

    cli_flags.refuse_arguments(argv)
    value = flags.FLAGS
    try:
        paths = quant_debug.resolve_paths(
            value.model,
            value.mode,
            build_dir=value.build_dir,
            float_model=value.float_model,
            windows=value.windows,
            out_dir=value.out_dir,
        )
        files.refuse_existing([paths.json, paths.markdown], overwrite=value.overwrite)
        report = quant_debug.debug_quantization(
            paths.float_model,
            paths.quantized_model,
            paths.windows,
            max_windows=value.max_windows,
            share_candidates=value.share_candidates,
            share_windows=value.share_windows,
            progress=True,
        )
        report.save(paths.json, overwrite=value.overwrite)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"wrote {paths.json} and {paths.markdown}")
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
