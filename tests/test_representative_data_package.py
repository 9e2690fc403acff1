"""Tests for representative_data/__init__.py: the public surface and its import cost."""

import subprocess
import sys
from pathlib import Path

import representative_data

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_importing_package_does_not_import_tensorflow_or_keras():
    code = (
        "import representative_data, sys; "
        "heavy = [m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules]; "
        "assert not heavy, heavy"
    )

    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=_PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def test_every_name_in_all_is_exported():
    exported = representative_data.__all__

    missing = [name for name in exported if not hasattr(representative_data, name)]

    assert not missing
    assert {"build_windows", "load_corpus", "TokenWindows", "representative_dataset"} <= set(
        representative_data.__all__
    )
