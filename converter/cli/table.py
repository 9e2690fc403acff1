"""Converts a model in every mode and renders the mode table from the reports.

    make convert-all [MODEL=tiny-gpt2] [MODES=fp32,int8]
    python -m converter.cli.table [--model=tiny-gpt2] [--modes=fp32,int8]

Each mode converts in its own process, so each report's peak memory is that
conversion's alone. Existing models are kept (their reports are read) unless
--overwrite is given. The table goes to `build/<model>/modes.md` and stdout.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

from absl import app, flags

from converter.cli import flags as cli_flags


def _define_flags() -> None:
    cli_flags.model_flags()
    cli_flags.modes_flag(help_text="Modes to convert, comma separated.")
    cli_flags.define("overwrite", flags.DEFINE_boolean, False, "Convert again even where a model exists.")
    cli_flags.verbosity_flags()


def render_table(reports: list[dict]) -> str:
    """A markdown table of conversion reports, with sizes relative to fp32."""
    fp32 = next((r for r in reports if r["mode"] == "fp32"), None)
    lines = [
        "| mode | size | vs fp32 | conversion time | peak RSS | max logit error vs Keras | top-1 agreement vs Keras |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for report in reports:
        ratio = f"{report['size_bytes'] / fp32['size_bytes']:.3f}x" if fp32 else "n/a"
        check = report["check"]
        lines.append(
            f"| {report['mode']} | {report['size_bytes'] / 2**20:.2f} MiB | {ratio} | "
            f"{report['conversion_seconds']:.1f} s | {report['peak_rss_bytes'] / 2**20:.0f} MiB | "
            f"{check['max_abs_logit_error']:.4g} | {100 * check['top1_agreement']:.1f} % |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    # pylint: disable=import-outside-toplevel
    from converter.common import files, progress
    from converter.core import results
    from converter.models import model_sources

    value = flags.FLAGS

    try:
        wanted = cli_flags.check_variants(value.modes)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    name = model_sources.default_name(value.model)
    reports = []
    for index, mode in enumerate(wanted, 1):
        path = results.default_output_path(name, mode, build_dir=value.build_dir)
        progress.log("table", f"{index}/{len(wanted)} {mode}: {path}")
        if value.overwrite or not path.with_suffix(".json").exists():
            command = [
                sys.executable,
                "-m",
                "converter",
                f"--model={value.model}",
                f"--mode={mode}",
                f"--build_dir={value.build_dir}",
                f"--out={path}",
            ]
            if value.seq_len:
                command.append(f"--seq_len={value.seq_len}")
            if value.overwrite:
                command.append("--overwrite")
            if value.verbose:
                command.append("--verbose")
            completed = subprocess.run(command, check=False, env=os.environ.copy())
            if completed.returncode != 0:
                print(f"error: converting {mode} failed (exit {completed.returncode})", file=sys.stderr)
                return completed.returncode
        reports.append(json.loads(path.with_suffix(".json").read_text()))
    table = render_table(reports)
    output = pathlib.Path(value.build_dir) / name / "modes.md"
    files.write_atomically(output, table)
    print(table)
    progress.log("table", f"written to {output}")
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
