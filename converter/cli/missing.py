"""Converting a model a command needs when it is missing: one `python -m converter` run in a subprocess.

`make generate`, `make bench-generation` and `make pi-pack GENERATE=1` convert
the models they need first, each in a process of its own (a conversion holds
gigabytes that the command itself should not keep).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from converter.common import progress


def conversion_command(
    model: str,
    mode: str,
    *,
    build_dir: str | os.PathLike,
    out: str | os.PathLike,
    generate: bool = False,
    context_length: int | None = None,
    seq_len: int | None = None,
    calibration: str | None = None,
    verbose: bool = False,
) -> list[str]:
    """The `python -m converter` command line that writes `out`."""
    command = [sys.executable, "-m", "converter", f"--model={model}", f"--mode={mode}", f"--build_dir={build_dir}"]
    if calibration is not None:
        command.append(f"--calibration={calibration}")
    if seq_len is not None:
        command.append(f"--seq_len={seq_len}")
    if generate:
        command.append("--generate")
        if context_length:
            command.append(f"--context_length={context_length}")
    command.append(f"--out={out}")
    if verbose:
        command.append("--verbose")
    return command


def convert_if_missing(
    path: str | os.PathLike,
    model: str,
    mode: str,
    *,
    build_dir: str | os.PathLike,
    generate: bool = False,
    context_length: int | None = None,
    seq_len: int | None = None,
    calibration: str | None = None,
    verbose: bool = False,
    label: str = "convert",
    why: str = "",
) -> bool:
    """Converts `model` in `mode` into `path` unless that file exists; returns whether it converted.

    Raises:
      RuntimeError: the conversion failed (its own messages are on stderr).
    """
    path = pathlib.Path(path)
    if path.is_file():
        return False
    command = conversion_command(
        model,
        mode,
        build_dir=build_dir,
        out=path,
        generate=generate,
        context_length=context_length,
        seq_len=seq_len,
        calibration=calibration,
        verbose=verbose,
    )
    progress.log(label, f"{path} is missing{why}; converting: {' '.join(command[1:])}")
    completed = subprocess.run(command, check=False, env=os.environ.copy())
    if completed.returncode != 0:
        raise RuntimeError(f"Converting {path.name} failed (exit {completed.returncode}): {' '.join(command)}")
    return True


def generation_model_path(model: str, mode: str, *, build_dir: str | os.PathLike) -> pathlib.Path:
    """`<build_dir>/<model>/<model>_<mode>_generate.tflite` for a built-in name or a model path (checked first).

    Raises:
      ValueError, FileNotFoundError: a model path that is not a `.keras` file or a preset folder.
    """
    # pylint: disable=import-outside-toplevel
    from converter.core import results
    from converter.models import model_sources

    if model not in model_sources.BUILTIN_MODELS:
        model_sources.check_model_path(model)
    return results.default_output_path(model_sources.default_name(model), f"{mode}_generate", build_dir=build_dir)
