"""What a result was measured on: CPU, cores, OS, Python."""

from __future__ import annotations

import dataclasses
import os
import platform


@dataclasses.dataclass(frozen=True)
class MachineInfo:
    """The machine a benchmark ran on.

    Attributes:
      hostname: the machine's network name, to tell devices apart in reports.
      cpu: the CPU model (x86 `model name`; on ARM boards the board model or
        the CPU part when /proc/cpuinfo has no name).
      architecture: `platform.machine()`, e.g. x86_64 or aarch64.
      logical_cores: CPUs the OS has.
      usable_cores: CPUs this process may run on (its affinity mask).
      os: `platform.platform()`.
      python: the Python version.
    """

    hostname: str
    cpu: str
    architecture: str
    logical_cores: int
    usable_cores: int
    os: str
    python: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _cpu_model() -> str:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    if fields.get("CPU part"):
        return f"{fields.get('CPU implementer', '?')}:{fields['CPU part']} ({platform.machine()})"
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> MachineInfo:
    """Reads the current machine's facts (no network, no subprocess)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return MachineInfo(
        hostname=platform.node(),
        cpu=_cpu_model(),
        architecture=platform.machine(),
        logical_cores=os.cpu_count() or 1,
        usable_cores=usable,
        os=platform.platform(),
        python=platform.python_version(),
    )
