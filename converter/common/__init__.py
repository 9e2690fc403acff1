"""The bottom layer: atomic outputs, hashes, progress and resource tracking.

The standard library and numpy only, so the device side (benchmarks/,
representative_data/) uses it as well as the converter.
"""

from converter.common.files import (
    OVERWRITE_HINT,
    atomic_output,
    refuse_existing,
    replace_folder,
    sha256_bytes,
    sha256_of,
    write_atomically,
)
from converter.common.progress import console, log, progress_bar, silence_native_output
from converter.common.resources import ResourceUsage, current_rss_bytes, track_resources

__all__ = [
    "OVERWRITE_HINT",
    "ResourceUsage",
    "atomic_output",
    "console",
    "current_rss_bytes",
    "log",
    "progress_bar",
    "refuse_existing",
    "replace_folder",
    "sha256_bytes",
    "sha256_of",
    "silence_native_output",
    "track_resources",
    "write_atomically",
]
