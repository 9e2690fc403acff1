"""`make runtime-probe`: load probe models in each runtime; rewrite the support table (`tools.runtime_probe`).

python -m converter.cli.runtime_probe [--runtimes=tflite-runtime==2.14.0,ai-edge-litert==2.3.0,...]
"""

from __future__ import annotations

import os
import pathlib
import sys

from absl import flags

from converter.cli import flags as cli_flags
from converter.common import progress


def _define_flags() -> None:
    cli_flags.verbosity_flags()
    # pylint: disable=import-outside-toplevel
    from converter.compat import runtime_support
    from converter.tools import probe_models, runtime_envs, runtime_probe

    cli_flags.define("probe_models", flags.DEFINE_list, list(probe_models.PROBE_CONFIGS), "Probe models to convert.")
    cli_flags.modes_flag(help_text="Modes to convert them in.", default=probe_models.PROBED_MODES)
    cli_flags.define(
        "runtimes", flags.DEFINE_list, list(runtime_probe.DEFAULT_RUNTIMES), "Exact runtime releases to probe."
    )
    cli_flags.define("out", flags.DEFINE_string, str(runtime_support.TABLE_PATH), "Where the table goes (JSON).")
    cli_flags.define("work_dir", flags.DEFINE_string, "build/runtime-probe", "Folder for probe models.")
    cli_flags.define("venvs_dir", flags.DEFINE_string, str(runtime_envs.DEFAULT_VENVS_DIR), "Folder for runtime venvs.")


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    # pylint: disable=import-outside-toplevel
    from converter.tools import runtime_envs, runtime_probe

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    value = flags.FLAGS
    try:
        with progress.silence_native_output(enabled=not flags.FLAGS.verbose):
            for spec in value.runtimes:
                runtime_envs.release(spec)
            table = runtime_probe.probe(
                value.runtimes,
                work_dir=pathlib.Path(value.work_dir),
                venvs_dir=pathlib.Path(value.venvs_dir),
                configs=value.probe_models,
                mode_names=value.modes,
            )
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = pathlib.Path(value.out)
    runtime_probe.write_table(table, out)
    for entry in table["runtimes"]:
        refused = sorted(k for k, v in entry["op_signatures"].items() if not v["loads"])
        progress.log(
            "probe",
            f"{entry['name']} {entry['version']}: {len(entry['op_signatures']) - len(refused)} of "
            f"{len(entry['op_signatures'])} op signatures run"
            + (f"; refused: {'; '.join(refused)}" if refused else ""),
        )
    progress.log("probe", f"wrote {out}")
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
