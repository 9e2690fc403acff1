"""`python -m converter.check`: which runtimes load a `.tflite` model, and why not.

    python -m converter.check MODEL.tflite [MODEL2.tflite ...] [--runtime=tflite-runtime==2.14] [--json]

Exit status: 0 when every runtime checked loads every model, 1 when one refuses
or is unknown, 2 on bad input (one `error:` line). See `converter.compat.check`.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from converter.cli import flags as cli_flags


def _define_flags() -> None:
    cli_flags.define(
        "runtime",
        flags.DEFINE_multi_string,
        None,
        "Runtime to check, e.g. tflite-runtime==2.14 (repeatable; default: every probed one).",
    )
    cli_flags.define("json", flags.DEFINE_boolean, False, "Print the reports as JSON.")


def main(argv: list[str]) -> int:
    from converter.compat import check, runtime_support  # pylint: disable=import-outside-toplevel

    paths = argv[1:]
    if not paths:
        print("error: name at least one .tflite file: python -m converter.check MODEL.tflite", file=sys.stderr)
        return 2
    runtimes = flags.FLAGS.runtime
    try:
        table = runtime_support.load_table()
        table.select(runtimes)
        reports = [check.check_model(path, runtimes=runtimes, table=table) for path in paths]
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if flags.FLAGS.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    else:
        print("\n".join(r.render() for r in reports))
    return 0 if all(r.loads_everywhere for r in reports) else 1


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
