"""Device results in the report: board facts, spread over repeats, a plot per device, `make pi-report`."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import device_report, report, results
from benchmarks.machine import MachineInfo
from benchmarks.runtimes import RuntimeInfo
from benchmarks.timing import LatencyStats

REPO = pathlib.Path(__file__).resolve().parents[1]
PI = MachineInfo(
    hostname="raspberrypi",
    cpu="Raspberry Pi 4 Model B Rev 1.4",
    architecture="aarch64",
    logical_cores=4,
    usable_cores=4,
    os="Linux-6.6-aarch64",
    python="3.11.2",
)
HOST = MachineInfo(
    hostname="bench-host",
    cpu="Test CPU",
    architecture="x86_64",
    logical_cores=2,
    usable_cores=2,
    os="Linux",
    python="3.11.7",
)


def _state(temperature, mhz, throttled=0):
    return {
        "soc_temperature_c": temperature,
        "temperatures_c": {"cpu-thermal": temperature},
        "cpu": {"governor": "ondemand", "current_mhz": {"cpu0": mhz}, "min_mhz": 600.0, "max_mhz": 1500.0},
        "throttled": {
            "raw": f"throttled={throttled:#x}",
            "value": throttled,
            "flags": ["throttling has occurred"] if throttled else [],
        },
    }


def _result(machine, variant, threads, median, *, second, repeat=None, throttled=0, sweep="20261125T100000Z"):
    device = None
    if repeat is not None:
        device = {
            "board": "Raspberry Pi 4 Model B Rev 1.4",
            "vcgencmd": True,
            "arm_clock_hz": 1500000000,
            "before": _state(45.0 + second / 10, 1500.0),
            "after": _state(50.0 + second / 10, 1200.0, throttled),
            "sweep": {"id": sweep, "repeat": repeat, "repeats": 3, "threads": [1, 2]},
            "pack": {"name": "pi-pack-lm", "created": "2026-11-25T09:00:00+00:00"},
        }
    return results.BenchmarkResult(
        machine=machine,
        runtime=RuntimeInfo("ai-edge-litert", "2.3.0"),
        model=results.ModelInfo(
            name="lm",
            variant=variant,
            path=f"lm_{variant}",
            format="tflite",
            sha256="0" * 64,
            size_bytes=4 * 2**20,
            seq_len=128,
            vocabulary_size=4096,
        ),
        settings={"threads": threads},
        latency=LatencyStats(
            init_ms=5,
            first_ms=9,
            warmup_runs=5,
            runs=50,
            min_ms=median,
            median_ms=median,
            p90_ms=median * 1.1,
            max_ms=median * 2,
            mean_ms=median,
            std_ms=0.1,
        ),
        memory=results.MemoryStats(
            baseline_rss_bytes=50 * 2**20, peak_rss_bytes=100 * 2**20, peak_covers_load_only=True
        ),
        accuracy=None,
        device=device,
        created=f"2026-11-25T10:{second // 60:02d}:{second % 60:02d}+00:00",
    )


@pytest.fixture
def folders(tmp_path):
    pi, host = tmp_path / "pi-results", tmp_path / "results"
    second = 0
    medians = {
        ("fp32", 1): [40.0, 44.0, 50.0],
        ("fp32", 2): [22.0, 23.0, 30.0],
        ("dynamic", 1): [10.0, 10.5, 11.0],
        ("dynamic", 2): [6.0, 6.0, 6.6],
    }
    for repeat in range(3):
        for (variant, threads), values in medians.items():
            second += 1
            _result(
                PI,
                variant,
                threads,
                values[repeat],
                second=second,
                repeat=repeat + 1,
                throttled=0x40000 if repeat == 2 else 0,
            ).save(pi)
    # An older sweep that the report must leave out of the spread.
    _result(PI, "fp32", 1, 999.0, second=0, repeat=1, sweep="20261124T100000Z").save(pi)
    _result(HOST, "fp32", 1, 8.0, second=1).save(host)
    _result(HOST, "dynamic", 1, 2.0, second=2).save(host)
    return pi, host


def test_device_section_shows_board_facts_and_spread_over_repeats(folders, tmp_path):
    pi, host = folders
    merged = device_report.merged_results(pi, host)
    text = report.render_report(merged, out=pi / "report.md")
    assert "## lm on bench-host\n" in text and "## lm on raspberrypi (bench pack)" in text
    section = text[text.index("## lm on raspberrypi") :]
    assert "- Board: Raspberry Pi 4 Model B Rev 1.4" in section
    assert "- CPU governor: ondemand; clock seen before/after runs: 1200–1500 MHz (limits 600–1500 MHz)" in section
    assert "- SoC temperature: 45.1 °C before the first run, 51.2 °C after the last, hottest 51.2 °C" in section
    assert "- Throttling (vcgencmd get_throttled): throttling has occurred" in section
    assert "| `fp32` | 1 | 3 | 44.00 ms | 40.00 ms | 50.00 ms | 22.7 % |" in section
    assert "| `dynamic` | 2 | 3 | 6.00 ms | 6.00 ms | 6.60 ms | 10.0 % |" in section
    assert "999" not in section
    assert (pi / "lm_raspberrypi-pack_threads.png").read_bytes()[:4] == b"\x89PNG"
    assert (pi / "lm_bench-host.png").exists() and (pi / "lm_raspberrypi-pack.png").exists()


def test_a_pack_run_on_the_host_machine_gets_its_own_section(folders, tmp_path):
    pi, host = folders
    same = [
        dict(r, machine=dict(r["machine"], hostname="bench-host", cpu="Test CPU")) if r.get("device") else r
        for r in device_report.merged_results(pi, host)
    ]
    text = report.render_report(same, out=tmp_path / "report.md")
    assert text.count("## lm on bench-host") == 2 and "## lm on bench-host (bench pack)" in text


def _make(*arguments):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(["make", *arguments], cwd=REPO, env=env, capture_output=True, text=True, check=False)


@pytest.mark.large
def test_make_pi_report_merges_device_and_host_results(folders):
    pi, host = folders
    completed = _make("pi-report", f"RESULTS={pi}", f"RESULTS_DIR={host}")
    assert completed.returncode == 0, completed.stderr[-3000:]
    written = (pi / "report.md").read_text()
    assert "## lm on raspberrypi (bench pack)" in written and "## lm on bench-host" in written
    assert "[pi-report] 15 results from bench-host, raspberrypi" in completed.stderr


def test_pi_report_bad_input(folders, tmp_path):
    pi, host = folders
    assert "Pass RESULTS=<folder>" in _make("pi-report").stderr
    missing = _make("pi-report", f"RESULTS={tmp_path / 'nowhere'}")
    assert missing.returncode != 0 and "error: No results folder at" in missing.stderr
    assert "Copy the results back from the device first" in missing.stderr
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.pi_report", f"--results_dir={host}", f"--host_results_dir={host}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2 and "holds no results from a bench pack's runner" in completed.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    unwritable = subprocess.run(
        [sys.executable, "-m", "benchmarks.pi_report", f"--results_dir={pi}", f"--out={blocker}/report.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert unwritable.returncode == 2 and "is a file; pass a folder" in unwritable.stderr
    assert not (pi / "report.md").exists()


def test_results_keep_the_device_field_and_host_results_have_none(folders):
    pi, host = folders
    assert all("device" in r for r in results.load_results(pi))
    assert all("device" not in json.loads(p.read_text()) for p in host.rglob("*.json"))
