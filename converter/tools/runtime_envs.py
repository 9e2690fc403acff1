"""One virtualenv per runtime release, so each is loaded as a device would load it.

tflite-runtime 2.14 needs numpy < 2 and cannot share a venv with TensorFlow
2.21; every runtime therefore gets its own venv under `build/venvs/`, holding
the runtime, numpy and nothing of this project. A venv is created once and
reused (a marker file records what it holds).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import pathlib
import shutil
import subprocess
import sys

from converter.compat import runtime_support

DEFAULT_VENVS_DIR = pathlib.Path("build") / "venvs"
LOADER = pathlib.Path(__file__).with_name("probe_loader.py")
_MARKER = ".runtime.json"


@dataclasses.dataclass(frozen=True)
class RuntimeRelease:
    """An installable runtime release and how to import it."""

    name: str
    version: str
    module: str
    extra_requirements: tuple[str, ...] = ()

    @property
    def pip_spec(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


# What each runtime needs beside itself: tflite-runtime wheels were built
# against numpy 1.x and crash under numpy 2.
_MODULES = {"tflite-runtime": "tflite_runtime.interpreter", "ai-edge-litert": "ai_edge_litert.interpreter"}
_EXTRA = {"tflite-runtime": ("numpy<2",)}


def release(spec: str | runtime_support.RuntimeSpec) -> RuntimeRelease:
    """The release named by an exact spec (`tflite-runtime==2.14.0`).

    Raises:
      ValueError: an unknown runtime, or no exact version.
    """
    parsed = runtime_support.parse_runtime_spec(spec) if isinstance(spec, str) else spec
    if parsed.name not in _MODULES:
        raise ValueError(f"Unknown runtime {parsed.name!r}; probe one of {', '.join(sorted(_MODULES))}.")
    if not parsed.version or parsed.version.count(".") != 2 or "*" in parsed.version:
        raise ValueError(f"Name an exact release to install, e.g. {parsed.name}==2.14.0; got {spec}.")
    return RuntimeRelease(
        name=parsed.name,
        version=parsed.version,
        module=_MODULES[parsed.name],
        extra_requirements=_EXTRA.get(parsed.name, ()),
    )


def _installed_here(runtime: RuntimeRelease) -> bool:
    try:
        return importlib.metadata.version(runtime.name) == runtime.version
    except importlib.metadata.PackageNotFoundError:
        return False


def runtime_python(
    runtime: RuntimeRelease,
    *,
    venvs_dir: str | os.PathLike = DEFAULT_VENVS_DIR,
    use_current: bool = True,
    progress: bool = True,
) -> pathlib.Path:
    """A Python interpreter that imports `runtime`, creating its venv on first use.

    Args:
      runtime: the release.
      venvs_dir: where venvs live (`build/venvs/<name>-<version>`).
      use_current: return this interpreter when it already has the release.
      progress: say on stderr when a venv is being created.

    Raises:
      RuntimeError: the venv could not be created (pip's last lines quoted).
    """
    if use_current and _installed_here(runtime):
        return pathlib.Path(sys.executable)
    folder = pathlib.Path(venvs_dir) / f"{runtime.name}-{runtime.version}"
    python = folder / "bin" / "python"
    marker = folder / _MARKER
    wanted = {"requirements": [runtime.pip_spec, *runtime.extra_requirements]}
    if python.exists() and marker.is_file() and json.loads(marker.read_text()) == wanted:
        return python
    if progress:
        print(f"[probe] creating {folder} with {' '.join(wanted['requirements'])} (once)", file=sys.stderr, flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    steps = [
        [_base_python(), "-m", "venv", str(folder)],
        [str(python), "-m", "pip", "install", "--quiet", "--only-binary=:all:", *wanted["requirements"]],
    ]
    for step in steps:
        completed = subprocess.run(step, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"Could not create the venv for {runtime.label} ({' '.join(step)}):\n{tail}")
    marker.write_text(json.dumps(wanted))
    return python


def _base_python() -> str:
    """The interpreter that made this venv (a venv of a venv would inherit nothing useful)."""
    return getattr(sys, "_base_executable", None) or sys.executable


@dataclasses.dataclass(frozen=True)
class LoadOutcome:
    """What a runtime did with one model: loaded and ran it, or where it stopped and why."""

    loads: bool
    stage: str | None
    error: str | None

    def to_dict(self) -> dict:
        return {"loads": self.loads, "error": self.error} if not self.loads else {"loads": True}


def load_models(
    python: str | os.PathLike,
    runtime: RuntimeRelease,
    jobs: list[dict],
    *,
    work_dir: str | os.PathLike,
    timeout: float = 1800.0,
) -> tuple[dict, dict[str, LoadOutcome]]:
    """Loads, allocates and invokes each model in `runtime`, in a process of its own.

    A model that crashes the runtime (a segfault) is recorded as not loading,
    and the remaining jobs run in a new process.

    Args:
      python: an interpreter that imports the runtime (`runtime_python`).
      runtime: the release, for its interpreter module.
      jobs: `{"id": str, "model": path, "inputs": npz path or None}` each.
      work_dir: a folder for the job list.
      timeout: seconds for all jobs together.

    Returns:
      (the runtime's environment as it reported it, job id -> `LoadOutcome`).
    """
    jobs_path = pathlib.Path(work_dir) / f"jobs-{runtime.name}-{runtime.version}.json"
    jobs_path.write_text(json.dumps(jobs))
    outcomes: dict[str, LoadOutcome] = {}
    environment: dict = {}
    while len(outcomes) < len(jobs):
        command = [str(python), str(LOADER), f"--module={runtime.module}", f"--skip={len(outcomes)}", str(jobs_path)]
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, env=env)
        for line in completed.stdout.splitlines():
            record = json.loads(line)
            if "environment" in record:
                environment = record["environment"]
            else:
                outcomes[record["id"]] = LoadOutcome(record["loads"], record["stage"], record["error"])
        if len(outcomes) < len(jobs):
            if completed.returncode == 0 or not environment:
                raise RuntimeError(
                    f"{runtime.label} could not start in {python} (exit {completed.returncode}): "
                    f"{completed.stderr.strip()[-800:]}"
                )
            crashed = jobs[len(outcomes)]["id"]
            outcomes[crashed] = LoadOutcome(False, "crash", f"the runtime process died (exit {completed.returncode})")
    if set(outcomes) != {job["id"] for job in jobs}:
        raise RuntimeError(f"{runtime.label}: the loader answered for other jobs than it was given.")
    return environment, outcomes
