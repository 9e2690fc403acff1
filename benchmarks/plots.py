"""Writing the report's figures (matplotlib, host side)."""

from __future__ import annotations

import pathlib

from converter.common import files


def save_figure(figure, path: pathlib.Path) -> None:
    """Writes a matplotlib figure as PNG atomically and closes it."""
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel

    figure.tight_layout()
    try:
        with files.atomic_output(path) as temporary:
            figure.savefig(temporary, dpi=110, format="png")
    finally:
        pyplot.close(figure)
