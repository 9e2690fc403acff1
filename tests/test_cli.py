"""Smoke tests of the command line and of every Makefile target, on a tiny preset."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from helpers import tiny_gpt2_preset

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A keras-hub preset folder with a GPT-2 backbone and its own tokenizer."""
    return tiny_gpt2_preset(tmp_path_factory.mktemp("presets") / "tiny-preset")


def _run(command, **kwargs):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False, **kwargs)


MODE_CHOICES = "|".join(
    ["fp32", "fp16", "dynamic", "int8", "int16x8", "int4", "int4-rtn"]
    + [f"int4-b{size}{method}" for size in (32, 64, 128, 256) for method in ("", "-rtn")]
    + ["auto"]
)


def test_help_lists_the_modes():
    completed = _run([sys.executable, "-m", "converter", "--help"])
    unwrapped = re.sub(r"\n\s+", "", completed.stdout)  # absl wraps the long choice list
    assert f"--mode: <{MODE_CHOICES}>: Conversion" in unwrapped
    assert "--max_ppl_increase" in completed.stdout and "--keep_float" in completed.stdout


def test_unknown_mode_is_refused_when_flags_are_parsed():
    completed = _run([sys.executable, "-m", "converter", "--mode=int3"])
    assert completed.returncode != 0
    assert f"value should be one of <{MODE_CHOICES}>" in completed.stderr


def test_keep_float_is_checked_before_any_model_is_loaded(tmp_path):
    completed = _run(
        [sys.executable, "-m", "converter", "--mode=int8", "--keep_float=attention,nope", f"--build_dir={tmp_path}"]
    )
    assert completed.returncode == 2 and "Unknown float choice 'nope'" in completed.stderr
    completed = _run(
        [sys.executable, "-m", "converter", "--mode=dynamic", "--keep_float=attention", f"--build_dir={tmp_path}"]
    )
    assert completed.returncode == 2 and "Use it with int8 or int16x8" in completed.stderr
    assert not list(tmp_path.iterdir())


def test_cli_converts_int8_with_builtin_calibration_and_keeps_windows(preset, tmp_path):
    build = tmp_path / "build"
    command = [
        sys.executable,
        "-m",
        "converter",
        f"--model={preset}",
        "--mode=int8",
        "--seq_len=16",
        "--num_calibration_samples=8",
        f"--build_dir={build}",
    ]
    completed = _run(command)
    assert completed.returncode == 0, completed.stderr[-3000:]
    model = build / "tiny-preset" / "tiny-preset_int8.tflite"
    report = json.loads(model.with_suffix(".json").read_text())
    assert report["mode"] == "int8" and report["calibration"]["source"] == "builtin"
    assert report["calibration"]["num_samples"] == 8
    assert (build / "tiny-preset" / "tiny-preset_seq16_evaluation.npz").exists()
    assert (build / "tiny-preset" / "tiny-preset_seq16_calibration.npz").exists()
    assert "top-1 agreement" in completed.stdout

    again = _run(command)
    assert again.returncode == 2
    assert "exists. Pass overwrite=True (--overwrite" in again.stderr
    assert json.loads(model.with_suffix(".json").read_text()) == report


def test_cli_model_without_tokenizer_converts_fp32_and_asks_for_windows_for_int8(tmp_path):
    import keras

    ids = keras.Input((None,), dtype="int32")
    model = keras.Model(ids, keras.layers.Dense(40)(keras.layers.Embedding(40, 8)(ids)))
    model.save(tmp_path / "plain.keras")
    base = [
        sys.executable,
        "-m",
        "converter",
        f"--model={tmp_path / 'plain.keras'}",
        "--seq_len=8",
        f"--build_dir={tmp_path / 'build'}",
    ]
    fp32 = _run(base + ["--mode=fp32"])
    assert fp32.returncode == 0, fp32.stderr[-3000:]
    assert (tmp_path / "build" / "plain" / "plain_fp32.tflite").exists()
    int8 = _run(base + ["--mode=int8"])
    assert int8.returncode == 2
    assert "has no tokenizer" in int8.stderr and "--calibration=<windows.npz>" in int8.stderr
    assert not (tmp_path / "build" / "plain" / "plain_int8.tflite").exists()


@pytest.mark.large
def test_make_convert_and_convert_all_write_models_and_the_table(preset, tmp_path):
    build = tmp_path / "build"
    convert = _run(["make", "convert", f"MODEL={preset}", "MODE=fp32", "SEQ_LEN=16", f"BUILD_DIR={build}"])
    assert convert.returncode == 0, convert.stderr[-3000:]
    assert (build / "tiny-preset" / "tiny-preset_fp32.tflite").stat().st_size > 0

    table = _run(["make", "convert-all", f"MODEL={preset}", "MODES=fp32,dynamic", "SEQ_LEN=16", f"BUILD_DIR={build}"])
    assert table.returncode == 0, table.stderr[-3000:]
    rendered = (build / "tiny-preset" / "modes.md").read_text()
    assert "| fp32 |" in rendered and "| dynamic |" in rendered and "1.000x" in rendered
    assert (build / "tiny-preset" / "tiny-preset_dynamic.tflite").exists()


def test_make_help_setup_test_and_clean(tmp_path):
    assert "make convert MODE=" in _run(["make", "help"]).stdout
    setup = _run(["make", "setup"])
    assert setup.returncode == 0 and "pip install" not in setup.stdout  # already set up: nothing to do
    dry = _run(["make", "-n", "test"])
    assert "-m pytest" in dry.stdout
    doomed = tmp_path / "build"
    (doomed / "x").mkdir(parents=True)
    assert _run(["make", "clean", f"BUILD_DIR={doomed}"]).returncode == 0
    assert not doomed.exists()


@pytest.mark.large
def test_make_bench_then_report_cover_modes_keras_and_onnx_peers(preset, tmp_path):
    build, results_dir = tmp_path / "build", tmp_path / "results"
    bench = _run(
        [
            "make",
            "bench",
            f"MODEL={preset}",
            "MODES=dynamic",
            "THREADS=1",
            f"BUILD_DIR={build}",
            f"RESULTS_DIR={results_dir}",
            "BENCH_FLAGS=--runs=2 --max_windows=2",
        ]
    )
    assert bench.returncode == 0, bench.stderr[-3000:]
    results = [json.loads(path.read_text()) for path in (results_dir / "tiny-preset").glob("*.json")]
    # fp32 is always benchmarked: it is the accuracy reference.
    assert sorted(r["model"]["variant"] for r in results) == ["dynamic", "fp32", "keras", "onnx-dynamic", "onnx-fp32"]
    assert all(r["accuracy"]["windows"] == 2 and r["accuracy"]["top1_agreement"] is not None for r in results)
    report = _run(["make", "report", f"RESULTS_DIR={results_dir}"])
    assert report.returncode == 0, report.stderr[-3000:]
    text = (results_dir / "report.md").read_text()
    assert "## tiny-preset on" in text and "| `onnx-dynamic` |" in text
    assert list(results_dir.glob("tiny-preset_*.png"))


def test_bench_refuses_bad_threads_and_an_unwritable_results_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    completed = _run([sys.executable, "-m", "converter.cli.bench", f"--results_dir={blocker}"])
    assert completed.returncode == 2 and "is a file" in completed.stderr
    completed = _run([sys.executable, "-m", "converter.cli.bench", "--threads=0,2", f"--results_dir={tmp_path}"])
    assert completed.returncode == 2 and "at least 1" in completed.stderr


@pytest.mark.large
def test_make_bench_fidelity_compares_with_litert_tool_on_fp32_and_dynamic(preset, tmp_path):
    build, results_dir = tmp_path / "build", tmp_path / "results"
    completed = _run(
        ["make", "bench-fidelity", f"MODEL={preset}", "THREADS=1", f"BUILD_DIR={build}", f"RESULTS_DIR={results_dir}"]
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    payload = json.loads((results_dir / "fidelity.json").read_text())
    assert sorted(pathlib.Path(r["model"]).name for r in payload["results"]) == [
        "tiny-preset_dynamic.tflite",
        "tiny-preset_fp32.tflite",
    ]
    assert all(r["harness_ms"] > 0 and r["tool_ms"] > 0 for r in payload["results"])
    assert "| `tiny-preset_fp32.tflite` | 1 |" in (results_dir / "fidelity.md").read_text()


def test_low_agreement_with_keras_gets_a_warning_that_says_what_to_do():
    from converter.core import conversion

    assert conversion.agreement_warning("int8", 0.95) is None
    warning = conversion.agreement_warning("int8", 0.004)
    assert warning.startswith("warning: the int8 model") and "0.4 %" in warning and "make bench" in warning
