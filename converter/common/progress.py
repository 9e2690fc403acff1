"""Progress on the terminal: one log line format and one progress bar for long work.

While `silence_native_output` is active (the CLIs use it unless `--verbose`),
whatever TensorFlow, absl and the XLA/CUDA libraries print to the process's
stdout and stderr goes to a scratch file, and only the project's own lines
reach the terminal, through `console()`. A bar is drawn with tqdm when the
terminal is interactive and tqdm is installed; otherwise (logs, pipes, a
device without tqdm) a plain line is printed about every tenth of the way.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

_console: TextIO | None = None
_stdout: TextIO | None = None
# Lines of silenced output shown when the silenced block fails.
_TAIL_LINES = 40
_PLAIN_UPDATES = 10


def console() -> TextIO:
    """The stream the project's progress goes to: the terminal's stderr."""
    return _console if _console is not None else sys.stderr


def stdout() -> TextIO:
    """The process's real standard output, also while native output is silenced (for results and replies)."""
    return _stdout if _stdout is not None else sys.stdout


def log(tag: str, message: str, *, enabled: bool = True) -> None:
    """Prints `[tag] message` on the console."""
    if enabled:
        print(f"[{tag}] {message}", file=console(), flush=True)


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    tag: str,
    description: str,
    enabled: bool = True,
    unit: str = "it",
) -> Iterator[Any]:
    """Yields the items of `iterable` (or `range(total)`) while showing how far it got.

    Args:
      iterable: what to go through; None counts `range(total)`.
      total: the number of items, when `iterable` has no length.
      tag: the log tag of the work, e.g. `convert`.
      description: what is being done, e.g. `calibration`.
      enabled: False shows nothing.
      unit: what one item is, for the bar.
    """
    items = range(total or 0) if iterable is None else iterable
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if not enabled:
        yield from items
        return
    stream = console()
    if stream.isatty():
        try:
            import tqdm  # pylint: disable=import-outside-toplevel
        except ImportError:
            tqdm = None
        if tqdm is not None:
            yield from tqdm.tqdm(
                items,
                total=total,
                desc=f"[{tag}] {description}",
                unit=unit,
                file=stream,
                dynamic_ncols=True,
                leave=True,
            )
            return
    every = max(1, (total or 0) // _PLAIN_UPDATES)
    for done, item in enumerate(items, 1):
        yield item
        if total and (done % every == 0 or done == total):
            log(tag, f"{description} {done}/{total}")
        elif not total and done % 100 == 0:
            log(tag, f"{description} {done}")


@contextlib.contextmanager
def silence_native_output(*, enabled: bool = True) -> Iterator[None]:
    """Sends everything written to file descriptors 1 and 2 to a scratch file while the block runs.

    TensorFlow's converter prints its saved-model dump on stdout and the
    XLA/CUDA libraries print registration errors on stderr from C++, which
    Python's own redirection cannot catch. The project's lines still reach the
    terminal through `console()`. When the block raises, the last lines of
    what was silenced are printed, since they usually say why.

    Args:
      enabled: False leaves the output alone (`--verbose`).
    """
    global _console, _stdout  # pylint: disable=global-statement
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    previous, previous_stdout = _console, _stdout
    _console = os.fdopen(os.dup(saved_err), "w", buffering=1, encoding="utf-8", errors="replace")
    _stdout = os.fdopen(os.dup(saved_out), "w", buffering=1, encoding="utf-8", errors="replace")
    sink = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below, after the replay
    os.dup2(sink.fileno(), 1)
    os.dup2(sink.fileno(), 2)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        _console.close()
        _stdout.close()
        _console, _stdout = previous, previous_stdout
        if failed:
            sink.seek(0)
            tail = sink.read().decode("utf-8", errors="replace").splitlines()[-_TAIL_LINES:]
            if tail:
                print("--- the last lines TensorFlow printed (run with --verbose for all of them) ---", file=sys.stderr)
                print("\n".join(tail), file=sys.stderr, flush=True)
        sink.close()
