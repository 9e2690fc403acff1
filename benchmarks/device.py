"""Facts about the board a benchmark ran on: model, CPU governor and clocks, temperature, throttling.

A Raspberry Pi slows down when it is hot or under-powered, so a latency figure
means little without the board's state before and after it. Everything here is
read from `/proc` and `/sys` (and from `vcgencmd` where it exists); whatever a
machine lacks is recorded as None, so the same code runs on an x86 host.
Standard library only.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess
from typing import Any

# `vcgencmd get_throttled` bits (Raspberry Pi firmware documentation).
THROTTLED_BITS = {
    0: "under-voltage now",
    1: "ARM frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage has occurred",
    17: "ARM frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
_VCGENCMD_TIMEOUT = 5.0


def _read(path: pathlib.Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def board_model(root: pathlib.Path = pathlib.Path("/")) -> str | None:
    """The board's name (`Raspberry Pi 4 Model B Rev 1.4`), or None off a board."""
    model = _read(root / "proc/device-tree/model")
    if model:
        return model
    cpuinfo = _read(root / "proc/cpuinfo") or ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model" and value.strip():
            return value.strip()
    return None


def _khz_to_mhz(text: str | None) -> float | None:
    try:
        return None if text is None else int(text) / 1000.0
    except ValueError:
        return None


def cpu_frequency(root: pathlib.Path = pathlib.Path("/")) -> dict[str, Any]:
    """Governor and clocks of every CPU that has cpufreq (MHz); empty values where absent."""
    cpus = sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*"), key=lambda p: int(p.name[3:]))
    governors, current = {}, {}
    limits: dict[str, float | None] = {"min_mhz": None, "max_mhz": None}
    for cpu in cpus:
        folder = cpu / "cpufreq"
        governor = _read(folder / "scaling_governor")
        if governor is not None:
            governors[cpu.name] = governor
        frequency = _khz_to_mhz(_read(folder / "scaling_cur_freq"))
        if frequency is not None:
            current[cpu.name] = frequency
        if limits["max_mhz"] is None:
            limits = {
                "min_mhz": _khz_to_mhz(_read(folder / "cpuinfo_min_freq")),
                "max_mhz": _khz_to_mhz(_read(folder / "cpuinfo_max_freq")),
            }
    distinct = sorted(set(governors.values()))
    return {
        "governor": distinct[0] if len(distinct) == 1 else (", ".join(distinct) or None),
        "current_mhz": current,
        **limits,
    }


def temperatures(root: pathlib.Path = pathlib.Path("/")) -> dict[str, float]:
    """Thermal zone type -> degrees Celsius (`cpu-thermal` on a Pi)."""
    found = {}
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        kind = _read(zone / "type") or zone.name
        value = _read(zone / "temp")
        try:
            found[kind] = int(value) / 1000.0 if value is not None else None
        except ValueError:
            continue
    return {kind: value for kind, value in found.items() if value is not None}


def soc_temperature(zones: dict[str, float]) -> float | None:
    """The SoC's temperature among the zones: a `cpu`/`soc` zone, else the first."""
    for kind, value in zones.items():
        if "cpu" in kind.lower() or "soc" in kind.lower():
            return value
    return next(iter(zones.values()), None)


def decode_throttled(value: int) -> list[str]:
    """The flags set in a `get_throttled` value, in words."""
    return [text for bit, text in THROTTLED_BITS.items() if value & (1 << bit)]


def _vcgencmd(*arguments: str) -> str | None:
    command = shutil.which("vcgencmd")
    if command is None:
        return None
    try:
        completed = subprocess.run(
            [command, *arguments], capture_output=True, text=True, timeout=_VCGENCMD_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() if completed.returncode == 0 else None


def throttling() -> dict[str, Any] | None:
    """`vcgencmd get_throttled` as a value and its flags, or None without vcgencmd."""
    text = _vcgencmd("get_throttled")
    if not text or "=" not in text:
        return None
    try:
        value = int(text.split("=", 1)[1], 16)
    except ValueError:
        return None
    return {"raw": text, "value": value, "flags": decode_throttled(value)}


@dataclasses.dataclass(frozen=True)
class DeviceState:
    """What changes while a benchmark runs: clocks, temperature, throttling."""

    soc_temperature_c: float | None
    temperatures_c: dict[str, float]
    cpu: dict[str, Any]
    throttled: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def device_state(root: pathlib.Path = pathlib.Path("/"), *, use_vcgencmd: bool = True) -> DeviceState:
    """Reads the board's current state (cheap: a few small files and at most one vcgencmd call)."""
    zones = temperatures(root)
    return DeviceState(
        soc_temperature_c=soc_temperature(zones),
        temperatures_c=zones,
        cpu=cpu_frequency(root),
        throttled=throttling() if use_vcgencmd else None,
    )


def device_facts(root: pathlib.Path = pathlib.Path("/"), *, use_vcgencmd: bool = True) -> dict[str, Any]:
    """What does not change during a run: the board and its firmware's view of the CPU clock."""
    return {
        "board": board_model(root),
        "vcgencmd": shutil.which("vcgencmd") is not None if use_vcgencmd else False,
        "arm_clock_hz": _arm_clock() if use_vcgencmd else None,
    }


def _arm_clock() -> int | None:
    text = _vcgencmd("measure_clock", "arm")
    try:
        return None if not text or "=" not in text else int(text.split("=", 1)[1])
    except ValueError:
        return None
