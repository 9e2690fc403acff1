"""Which runtimes load a `.tflite` model, read from its ops and the probed runtime support table.

`python -m converter.check` and every conversion report use it; the table
itself is written by `converter.tools.runtime_probe`.
"""

from converter.compat.check import (
    CompatibilityReport,
    IncompatibleModelError,
    Verdict,
    check_model,
    require_loadable,
)
from converter.compat.runtime_support import SupportTable, load_table, parse_runtime_spec

__all__ = [
    "CompatibilityReport",
    "IncompatibleModelError",
    "SupportTable",
    "Verdict",
    "check_model",
    "load_table",
    "parse_runtime_spec",
    "require_loadable",
]
