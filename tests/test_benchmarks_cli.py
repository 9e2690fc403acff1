"""The harness's command lines: what they write, and the exit status and message on bad input."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# Importing any of these inside the harness's process fails, as on a Pi without them.
_BLOCK_TENSORFLOW = """
import importlib.abc, runpy, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "keras_hub", "tf_keras"):
            raise ImportError(f"{name} is not available on this device")
        return None
sys.meta_path.insert(0, _NoTensorFlow())
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "keras_hub"))
    assert not loaded, loaded
"""


def _run(*args, block_tensorflow=True):
    command = [sys.executable, "-c", _BLOCK_TENSORFLOW, *args] if block_tensorflow else [sys.executable, "-m", *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)


def test_harness_and_report_run_where_tensorflow_cannot_be_imported(converted_tiny_lm, tmp_path):
    results_dir = tmp_path / "results"
    completed = _run(
        "benchmarks",
        f"--model={converted_tiny_lm['dynamic']},{converted_tiny_lm['fp32']}",
        f"--evaluation={converted_tiny_lm['evaluation']}",
        f"--reference={converted_tiny_lm['fp32']}",
        "--threads=1",
        "--threads=2",
        "--runs=3",
        "--min_seconds=0",
        f"--results_dir={results_dir}",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    files = sorted(results_dir.rglob("*.json"))
    assert len(files) == 4
    results = [json.loads(path.read_text()) for path in files]
    assert sorted((r["model"]["variant"], r["settings"]["threads"]) for r in results) == [
        ("dynamic", 1),
        ("dynamic", 2),
        ("fp32", 1),
        ("fp32", 2),
    ]
    # Accuracy does not depend on threads: measured once per model.
    assert sorted(r["settings"]["threads"] for r in results if r["accuracy"]) == [1, 1]
    assert "perplexity" in completed.stdout and "top-1 vs fp32" in completed.stdout
    report = _run("benchmarks.report", f"--results_dir={results_dir}")
    assert report.returncode == 0, report.stderr[-3000:]
    assert (results_dir / "report.md").is_file()


def test_the_blocker_really_blocks_tensorflow(tmp_path):
    completed = _run("converter.cli.onnx_export", f"--build_dir={tmp_path}")  # needs tf2onnx, which needs TF
    assert completed.returncode != 0 and "is not available on this device" in completed.stderr


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "No model at"),
        ("not_tflite", "is not a TFLite model"),
        ("truncated", "truncated or corrupt"),
        ("bad_windows", "hold 8 tokens but"),
        ("results_is_file", "is a file"),
    ],
)
def test_bad_input_exits_2_with_a_message(converted_tiny_lm, tmp_path, case, message):
    import numpy as np

    import representative_data

    model, results_dir, extra = converted_tiny_lm["fp32"], tmp_path / "results", []
    if case == "missing":
        model = tmp_path / "absent.tflite"
    elif case == "not_tflite":
        model = tmp_path / "x.tflite"
        model.write_text("hello")
    elif case == "truncated":
        model = tmp_path / "cut.tflite"
        model.write_bytes(converted_tiny_lm["fp32"].read_bytes()[:100_000])
    elif case == "bad_windows":
        windows = representative_data.TokenWindows(np.ones((2, 8), np.int32), np.ones((2, 8), np.int32))
        representative_data.save_windows(windows, tmp_path / "w.npz")
        extra = [f"--evaluation={tmp_path / 'w.npz'}"]
    elif case == "results_is_file":
        results_dir.write_text("")
    completed = _run("benchmarks", f"--model={model}", f"--results_dir={results_dir}", "--runs=1", *extra)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "error: " in completed.stderr and message in completed.stderr
    assert "Traceback" not in completed.stderr


def test_threads_below_one_are_refused_when_flags_are_parsed(converted_tiny_lm):
    completed = _run("benchmarks", f"--model={converted_tiny_lm['fp32']}", "--threads=0")
    assert completed.returncode != 0 and "flag --threads=0: 0 is not a positive integer" in completed.stderr


def test_unknown_runtime_is_refused_when_flags_are_parsed(converted_tiny_lm):
    completed = _run("benchmarks", f"--model={converted_tiny_lm['fp32']}", "--runtime=tensorrt")
    assert completed.returncode != 0
    assert "value should be one of <ai-edge-litert|tflite-runtime|onnxruntime>" in completed.stderr
