"""`make pi-report`: a bench pack's results from a device, merged with the host's, as one report.

    python -m benchmarks.pi_report --results_dir=pi-results [--host_results_dir=results] [--out=...]

The device sections come from `benchmarks.device_report`, the rest from
`benchmarks.report`.
"""

from __future__ import annotations

import pathlib
import sys

from benchmarks import device_report, report
from benchmarks import results as results_lib

_RESULTS_DIR = None
_HOST_RESULTS_DIR = None
_OUT = None


def _define_flags() -> None:
    """Defines the flags only when run as a program, so importing this module defines none."""
    global _RESULTS_DIR, _HOST_RESULTS_DIR, _OUT  # pylint: disable=global-statement
    from absl import flags  # pylint: disable=import-outside-toplevel

    _RESULTS_DIR = flags.DEFINE_string("results_dir", None, "The results folder copied back from the device.")
    flags.mark_flag_as_required("results_dir")
    _HOST_RESULTS_DIR = flags.DEFINE_string("host_results_dir", "results", "The host's results (make bench).")
    _OUT = flags.DEFINE_string("out", None, "Markdown report path (default: <results_dir>/report.md).")


def main(argv: list[str]) -> int:
    from absl import app  # pylint: disable=import-outside-toplevel

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        merged = device_report.merged_results(_RESULTS_DIR.value, _HOST_RESULTS_DIR.value)
        generation = device_report.merged_generation_results(_RESULTS_DIR.value, _HOST_RESULTS_DIR.value)
        out = pathlib.Path(_OUT.value or pathlib.Path(_RESULTS_DIR.value) / "report.md")
        results_lib.check_results_dir(out.parent)
        text = report.render_report(merged, out=out, generation=generation)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    hosts = sorted({r["machine"]["hostname"] for r in merged})
    print(f"[pi-report] {len(merged)} results from {', '.join(hosts)} -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from absl import app as _app  # pylint: disable=import-outside-toplevel

    _define_flags()
    _app.run(main)
