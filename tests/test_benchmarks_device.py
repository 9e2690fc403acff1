"""Board facts: model, governor and clocks, temperatures, throttling; absent facts are None, not errors."""

from __future__ import annotations

import pathlib
import stat

import pytest

from benchmarks import device


def _write(root: pathlib.Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def pi_root(tmp_path) -> pathlib.Path:
    """The /proc and /sys files of a Raspberry Pi 4 (values as the kernel writes them)."""
    root = tmp_path / "pi"
    _write(root, "proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\x00")
    for cpu in range(4):
        folder = f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        _write(root, f"{folder}/scaling_governor", "ondemand\n")
        _write(root, f"{folder}/scaling_cur_freq", f"{1500000 if cpu else 600000}\n")
        _write(root, f"{folder}/cpuinfo_min_freq", "600000\n")
        _write(root, f"{folder}/cpuinfo_max_freq", "1500000\n")
    _write(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    _write(root, "sys/class/thermal/thermal_zone0/temp", "48312\n")
    return root


def test_pi_facts_are_read_from_proc_and_sys(pi_root):
    assert device.board_model(pi_root) == "Raspberry Pi 4 Model B Rev 1.4"
    state = device.device_state(pi_root, use_vcgencmd=False)
    assert state.soc_temperature_c == pytest.approx(48.312)
    assert state.temperatures_c == {"cpu-thermal": pytest.approx(48.312)}
    assert state.cpu == {
        "governor": "ondemand",
        "current_mhz": {"cpu0": 600.0, "cpu1": 1500.0, "cpu2": 1500.0, "cpu3": 1500.0},
        "min_mhz": 600.0,
        "max_mhz": 1500.0,
    }
    assert state.throttled is None


def test_board_falls_back_on_cpuinfo_and_is_none_off_a_board(tmp_path):
    _write(tmp_path / "a", "proc/cpuinfo", "processor\t: 0\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 3 Model B\n")
    assert device.board_model(tmp_path / "a") == "Raspberry Pi 3 Model B"
    assert device.board_model(tmp_path / "empty") is None
    state = device.device_state(tmp_path / "empty", use_vcgencmd=False)
    assert state.soc_temperature_c is None and state.temperatures_c == {}
    assert state.cpu == {"governor": None, "current_mhz": {}, "min_mhz": None, "max_mhz": None}


def test_throttled_bits_are_decoded_in_words():
    assert device.decode_throttled(0) == []
    assert device.decode_throttled(0x50005) == [
        "under-voltage now",
        "throttled now",
        "under-voltage has occurred",
        "throttling has occurred",
    ]


def test_vcgencmd_is_used_where_it_exists(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "vcgencmd"
    fake.parent.mkdir()
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = get_throttled ]; then echo throttled=0x80008; '
        'else echo "frequency(48)=1500398464"; fi\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    assert device.throttling() == {
        "raw": "throttled=0x80008",
        "value": 0x80008,
        "flags": ["soft temperature limit now", "soft temperature limit has occurred"],
    }
    facts = device.device_facts(tmp_path)
    assert facts == {"board": None, "vcgencmd": True, "arm_clock_hz": 1500398464}


def test_without_vcgencmd_throttling_is_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert device.throttling() is None
    assert device.device_facts(tmp_path)["vcgencmd"] is False
