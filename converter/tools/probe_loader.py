"""Loads models in one LiteRT runtime and says, for each, whether it runs.

Run by path with the Python of a venv that holds the runtime (and numpy) and
nothing of this project:

    build/venvs/tflite-runtime-2.14.0/bin/python converter/probe_loader.py \
        --module=tflite_runtime.interpreter jobs.json

`jobs.json` is a list of `{"id": ..., "model": path, "inputs": npz path or
null}`. Each model is loaded as `benchmarks/` loads it on a device
(`Interpreter(model_path=..., num_threads=1)` with the default delegates),
its tensors allocated, its inputs set (arrays `0`, `1`, ... of the npz in the
order of `get_input_details()`, zeros without one) and invoked once. One JSON
line per job goes to stdout, after a first line describing the environment:
`{"id": ..., "loads": bool, "stage": "load" | "allocate" | "invoke" | null,
"error": str | null}`. Standard library, numpy and the runtime only.
"""

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import platform
import sys

import numpy as np


@contextlib.contextmanager
def _native_stderr_to_devnull():
    """Silences the runtime's own stderr chatter (INFO: Created XNNPACK delegate...)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _run_one(interpreter_class, job):
    stage = "load"
    try:
        interpreter = interpreter_class(model_path=job["model"], num_threads=1)
        stage = "allocate"
        interpreter.allocate_tensors()
        stage = "invoke"
        arrays = np.load(job["inputs"]) if job.get("inputs") else {}
        for position, detail in enumerate(interpreter.get_input_details()):
            key = str(position)
            if key in arrays:
                value = np.asarray(arrays[key], dtype=detail["dtype"]).reshape(detail["shape"])
            else:
                value = np.zeros(detail["shape"], dtype=detail["dtype"])
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
    except Exception as error:  # every runtime failure is a finding, not a crash
        return {"id": job["id"], "loads": False, "stage": stage, "error": " ".join(str(error).split())[:600]}
    return {"id": job["id"], "loads": True, "stage": None, "error": None}


def _distribution_version(module_name):
    try:
        return importlib.metadata.version(module_name.split(".")[0].replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", required=True, help="Interpreter module, e.g. tflite_runtime.interpreter.")
    parser.add_argument("--skip", type=int, default=0, help="Jobs already done (after a crash).")
    parser.add_argument("jobs")
    arguments = parser.parse_args()
    module = importlib.import_module(arguments.module)
    package = importlib.import_module(arguments.module.split(".")[0])
    with open(arguments.jobs, encoding="utf-8") as handle:
        jobs = json.load(handle)
    environment = {
        "module": arguments.module,
        "version": getattr(package, "__version__", None) or _distribution_version(arguments.module),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "numpy": np.__version__,
    }
    print(json.dumps({"environment": environment}), flush=True)
    for job in jobs[arguments.skip :]:
        with _native_stderr_to_devnull():
            outcome = _run_one(module.Interpreter, job)
        print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
