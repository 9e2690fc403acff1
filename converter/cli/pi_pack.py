"""`make pi-pack`: a Raspberry Pi bench pack of converted models (`converter.deploy.pi_pack`).

python -m converter.cli.pi_pack --model=tiny-gpt2 [--modes=fp32,int8] [--generation_modes=dynamic,fp16]
    [--prompt="The capital of France is"] [--out=...] [--overwrite]

Generation models that are missing are converted first (`make convert GENERATE=1`), each in its own process.
"""

from __future__ import annotations

import sys

from absl import flags

from converter.cli import flags as cli_flags
from converter.cli import missing


def _define_flags() -> None:
    cli_flags.model_flags(with_seq_len=False)
    cli_flags.modes_flag(help_text="Modes to pack.")
    cli_flags.output_flags(out_help="The tarball (default <build_dir>/pi-pack-<model>.tar.gz).")
    cli_flags.define("evaluation", flags.DEFINE_string, None, "Evaluation windows (default: the ones the CLI cut).")
    cli_flags.define(
        "generation_modes",
        flags.DEFINE_list,
        [],
        "Modes whose generation models (prefill/decode, with the tokenizer) go in too; converted when missing.",
    )
    cli_flags.define("prompt", flags.DEFINE_string, "The capital of France is", "Text the runner continues.")
    cli_flags.define(
        "context_length",
        flags.DEFINE_integer,
        None,
        "When a generation model must be converted: its context length (default 1024).",
        lower_bound=2,
    )


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    from converter.core import results  # pylint: disable=import-outside-toplevel
    from converter.deploy import pi_pack  # pylint: disable=import-outside-toplevel
    from converter.models import model_sources  # pylint: disable=import-outside-toplevel

    value = flags.FLAGS
    try:
        name = model_sources.default_name(value.model)
        for mode in value.generation_modes:
            missing.convert_if_missing(
                results.default_output_path(name, f"{mode}_generate", build_dir=value.build_dir),
                value.model,
                mode,
                build_dir=value.build_dir,
                generate=True,
                context_length=value.context_length,
                label="pi-pack",
            )
        pi_pack.build_pack(
            name,
            modes_to_pack=value.modes,
            build_dir=value.build_dir,
            out=value.out,
            evaluation=value.evaluation,
            generation_modes=value.generation_modes,
            prompt=value.prompt,
            overwrite=value.overwrite,
        )
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
