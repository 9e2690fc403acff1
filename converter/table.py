"""Converts a model in every mode and renders the mode table from the reports.

    python -m converter.table [--model=tiny-gpt2] [--modes=fp32,int8]

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

from converter import modes

_MODEL = flags.DEFINE_string("model", "tiny-gpt2", "Built-in model name, .keras file or preset folder.")
_MODES = flags.DEFINE_list("modes", list(modes.MODE_NAMES), "Modes to convert, comma separated.")
_BUILD_DIR = flags.DEFINE_string("build_dir", "build", "Folder for models and reports.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", None, "Fixed sequence length.", lower_bound=2)
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Convert again even where a model exists.")


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
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from converter import conversion, model_sources  # pylint: disable=import-outside-toplevel

    try:
        wanted = [modes.parse_mode(m) for m in _MODES.value]
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    name = model_sources.default_name(_MODEL.value)
    reports = []
    for index, mode in enumerate(wanted, 1):
        path = conversion.default_output_path(name, mode, build_dir=_BUILD_DIR.value)
        print(f"[table] {index}/{len(wanted)} {mode.value}: {path}", file=sys.stderr, flush=True)
        if _OVERWRITE.value or not path.with_suffix(".json").exists():
            command = [
                sys.executable, "-m", "converter", f"--model={_MODEL.value}", f"--mode={mode.value}",
                f"--build_dir={_BUILD_DIR.value}", f"--out={path}",
            ]
            if _SEQ_LEN.value:
                command.append(f"--seq_len={_SEQ_LEN.value}")
            if _OVERWRITE.value:
                command.append("--overwrite")
            completed = subprocess.run(command, check=False, env=os.environ.copy())
            if completed.returncode != 0:
                print(f"error: converting {mode.value} failed (exit {completed.returncode})", file=sys.stderr)
                return completed.returncode
        reports.append(json.loads(path.with_suffix(".json").read_text()))
    table = render_table(reports)
    output = pathlib.Path(_BUILD_DIR.value) / name / "modes.md"
    output.write_text(table)
    print(table)
    print(f"[table] written to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(main)
