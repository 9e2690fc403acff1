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
      vector_features: the CPU's SIMD features that decide which int8/int4
        kernels run (x86: avx2, fma, avx512f, avx512_vnni, avx_vnni, amx_int8;
        ARM: asimd, asimddp (dotprod), i8mm, sve), as /proc/cpuinfo lists them.
    """

    hostname: str
    cpu: str
    architecture: str
    logical_cores: int
    usable_cores: int
    os: str
    python: str
    vector_features: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "vector_features": list(self.vector_features)}


# The SIMD features int8 and int4 kernels are chosen by (XNNPACK, MLAS, llama.cpp).
_VECTOR_FEATURES = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_int8",
    "asimd",
    "asimdhp",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
)


def vector_features() -> tuple[str, ...]:
    """The CPU's SIMD features among `_VECTOR_FEATURES`, from /proc/cpuinfo (empty where it has none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    present = set(value.split())
                    return tuple(f for f in _VECTOR_FEATURES if f in present)
    except OSError:
        pass
    return ()


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
        vector_features=vector_features(),
    )
