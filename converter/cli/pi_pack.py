"""`make pi-pack`: a Raspberry Pi bench pack of converted models (`converter.deploy.pi_pack`).

python -m converter.cli.pi_pack --model=tiny-gpt2 [--modes=fp32,int8] [--out=...] [--overwrite]
"""

from __future__ import annotations

import sys

from absl import flags

from converter.cli import flags as cli_flags


def _define_flags() -> None:
    cli_flags.model_flags(with_seq_len=False)
    cli_flags.modes_flag(help_text="Modes to pack.")
    cli_flags.output_flags(out_help="The tarball (default <build_dir>/pi-pack-<model>.tar.gz).")
    cli_flags.define("evaluation", flags.DEFINE_string, None, "Evaluation windows (default: the ones the CLI cut).")


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    from converter.deploy import pi_pack  # pylint: disable=import-outside-toplevel
    from converter.models import model_sources  # pylint: disable=import-outside-toplevel

    value = flags.FLAGS
    try:
        pi_pack.build_pack(
            model_sources.default_name(value.model),
            modes_to_pack=value.modes,
            build_dir=value.build_dir,
            out=value.out,
            evaluation=value.evaluation,
            overwrite=value.overwrite,
        )
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
