"""Wall time and resident memory: of this process now, its peak, and of a block of work.

From /proc on Linux, with portable fallbacks; the standard library only, so the
device-side harness uses it as well as the converter.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import sys
import threading
import time


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_bytes() -> int:
    """Peak resident set size since the process started or since `reset_peak_rss`."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Resets the peak to the current RSS (Linux >= 4.0), so a later peak covers only what follows.

    Returns:
      True when the reset worked; otherwise the peak still includes everything
      the process did before.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def current_rss_bytes() -> int:
    """Resident set size of this process, from /proc where it exists."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            pages = int(handle.read().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        # ru_maxrss is the lifetime peak in KiB on Linux: an upper bound.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclasses.dataclass
class ResourceUsage:
    """Filled in when the `track_resources` block ends."""

    seconds: float = 0.0
    start_rss_bytes: int = 0
    peak_rss_bytes: int = 0


@contextlib.contextmanager
def track_resources(*, interval_seconds: float = 0.02):
    """Measures elapsed time and the peak RSS seen while the block runs.

    RSS is sampled from a background thread, because the process-wide
    ru_maxrss cannot be reset between conversions in one process.

    Yields:
      A `ResourceUsage`, complete after the block exits.
    """
    usage = ResourceUsage(start_rss_bytes=current_rss_bytes())
    usage.peak_rss_bytes = usage.start_rss_bytes
    stop = threading.Event()

    def sample():
        while not stop.wait(interval_seconds):
            usage.peak_rss_bytes = max(usage.peak_rss_bytes, current_rss_bytes())

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    start = time.perf_counter()
    sampler.start()
    try:
        yield usage
    finally:
        stop.set()
        sampler.join()
        usage.peak_rss_bytes = max(usage.peak_rss_bytes, current_rss_bytes())
        usage.seconds = time.perf_counter() - start
