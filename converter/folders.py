"""Putting a finished folder in place, so that readers never see half of one."""

from __future__ import annotations

import os
import pathlib
import shutil


def replace_folder(source: pathlib.Path, destination: pathlib.Path) -> None:
    """Moves a finished folder into place, replacing an older one if any."""
    if not destination.exists():
        source.rename(destination)
        return
    # A folder cannot be renamed over a non-empty one: move the old one aside
    # first, so that the destination never mixes files of both.
    trash = destination.with_name(f".{destination.name}-old-{os.getpid()}.tmp")
    shutil.rmtree(trash, ignore_errors=True)
    destination.rename(trash)
    source.rename(destination)
    shutil.rmtree(trash, ignore_errors=True)
