"""The runtime support table: which runtime loads which op signature, as probed.

The table (`runtime_support.json` beside this module) is written by
`python -m converter.cli.runtime_probe`, which loads probe models in each runtime
and records what happened; nothing in it is inferred from release notes or from
the converter's `min_runtime_version` metadata. This module reads the table and
names things the same way the probe does. It imports neither TensorFlow nor a
runtime.

An op signature is what decides whether a LiteRT runtime runs an operator: the
builtin op, the version the converter wrote, and the dtypes of its inputs and
outputs (a kernel may register a version yet refuse a dtype in `Prepare`, as
tflite-runtime 2.14 does with int16 RSQRT). Its key reads
`RSQRT/v2 int16 -> int16`; an omitted optional input is `-`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

TABLE_PATH = pathlib.Path(__file__).with_name("runtime_support.json")
SCHEMA = "keras-lm-litert/runtime-support/1"
OMITTED = "-"
_SPEC = re.compile(r"^\s*(?P<name>[A-Za-z0-9_.-]+?)\s*(?:(?:==|=|\s)\s*(?P<version>[0-9][0-9A-Za-z.*]*))?\s*$")


@dataclasses.dataclass(frozen=True, order=True)
class OpSignature:
    """One builtin operator as a runtime sees it: op, version, dtypes in and out."""

    op: str
    version: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.op}/v{self.version} {','.join(self.inputs) or OMITTED} -> {','.join(self.outputs) or OMITTED}"

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "version": self.version, "inputs": list(self.inputs), "outputs": list(self.outputs)}


def op_signatures(inspected) -> list[OpSignature]:
    """The distinct builtin op signatures of a model, sorted.

    Args:
      inspected: a `converter.inspection.ModelInspection`.

    Returns:
      Signatures of every builtin op (custom and Flex ops are listed on the
      inspection itself).
    """
    special = set(inspected.custom_ops) | set(inspected.flex_ops)
    found = set()
    for subgraph in inspected.subgraphs or [inspected]:
        for op in subgraph.ops:
            if op.op in special:
                continue
            found.add(
                OpSignature(
                    op=op.op,
                    version=op.version,
                    inputs=tuple(dtype or OMITTED for dtype in subgraph.input_dtypes(op)),
                    outputs=tuple(subgraph.output_dtypes(op)),
                )
            )
    return sorted(found)


@dataclasses.dataclass(frozen=True)
class RuntimeSpec:
    """A runtime asked for by name and an optional version prefix (`tflite-runtime==2.14`)."""

    name: str
    version: str | None = None

    def matches(self, name: str, version: str) -> bool:
        if _normalize(name) != _normalize(self.name):
            return False
        if self.version is None:
            return True
        wanted = [part for part in self.version.rstrip(".*").split(".") if part not in ("", "*", "x")]
        return version.split(".")[: len(wanted)] == wanted

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}=={self.version}"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_runtime_spec(text: str) -> RuntimeSpec:
    """Parses `name`, `name==version` or `name version` (`tflite-runtime==2.14`).

    Raises:
      ValueError: the text is not a runtime spec.
    """
    match = _SPEC.match(str(text))
    if not match:
        raise ValueError(
            f"{text!r} is not a runtime; write it as name==version, e.g. tflite-runtime==2.14 or "
            "ai-edge-litert==2.3.0 (the version may be a prefix, or left out)."
        )
    return RuntimeSpec(name=_normalize(match["name"]), version=match["version"])


@dataclasses.dataclass(frozen=True)
class RuntimeSupport:
    """What the probe found for one runtime release.

    Attributes:
      name, version: the runtime (`tflite-runtime`, `2.14.0`).
      op_signatures: signature key -> {"loads": bool, "error": str | None}.
      registered_versions: builtin op -> {"probed": [first, last],
        "registered": [versions the runtime resolved]}.
      flex: {"loads": bool, "error": ...} for a model holding a Flex op.
      custom_ops: custom op name -> {"loads": bool, "error": ...}.
      modes: probe architecture -> mode -> {"loads": bool, "error": ...} for
        whole probe models.
      environment: Python, platform and numpy of the probe's venv.
    """

    name: str
    version: str
    op_signatures: Mapping[str, Mapping[str, Any]]
    registered_versions: Mapping[str, Mapping[str, Any]]
    flex: Mapping[str, Any] | None
    custom_ops: Mapping[str, Mapping[str, Any]]
    modes: Mapping[str, Mapping[str, Mapping[str, Any]]]
    environment: Mapping[str, Any]
    # The modes in the order the probe converted them: the converter's own order.
    mode_order: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def pip_spec(self) -> str:
        return f"{self.name}=={self.version}"

    def modes_that_load(self) -> list[str]:
        """Modes whose probe models all load here, in the converter's order of modes (as the probe ran them)."""
        probed = {mode for by_mode in self.modes.values() for mode in by_mode}
        ordered = [m for m in self.mode_order if m in probed] + sorted(probed - set(self.mode_order))
        return [m for m in ordered if all(by_mode.get(m, {}).get("loads") for by_mode in self.modes.values())]


@dataclasses.dataclass(frozen=True)
class SupportTable:
    """The whole probe table: its provenance and one `RuntimeSupport` per runtime."""

    created: str
    generated_by: str
    method: str
    converter_versions: Mapping[str, str]
    runtimes: tuple[RuntimeSupport, ...]
    signatures_seen_in: Mapping[str, list[str]]
    path: str | None = None

    def select(self, specs: Iterable[RuntimeSpec | str] | None = None) -> list[RuntimeSupport]:
        """The probed runtimes matching the specs (all of them for None).

        Raises:
          ValueError: a spec matches no probed runtime; the message lists the
            probed ones and how to probe another.
        """
        if specs is None:
            return list(self.runtimes)
        chosen: list[RuntimeSupport] = []
        for spec in specs:
            spec = parse_runtime_spec(spec) if isinstance(spec, str) else spec
            matched = [r for r in self.runtimes if spec.matches(r.name, r.version)]
            if not matched:
                probed = ", ".join(r.pip_spec for r in self.runtimes)
                raise ValueError(
                    f"Runtime {spec} was never probed, so nothing is known about what it loads. Probed: "
                    f"{probed}. Probe it with `python -m converter.cli.runtime_probe --runtimes={spec}` "
                    "(make runtime-probe), or pick a probed one."
                )
            chosen.extend(r for r in matched if r not in chosen)
        return chosen


def load_table(path: str | os.PathLike | None = None) -> SupportTable:
    """Reads the support table (default: the one stored beside this module).

    Raises:
      FileNotFoundError: no table there.
      ValueError: the file is not a support table.
    """
    path = pathlib.Path(path) if path is not None else TABLE_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"No runtime support table at {str(path)!r}; write one with `python -m converter.cli.runtime_probe`."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not valid JSON ({error}); probe again.") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{str(path)!r} is not a runtime support table (schema {SCHEMA}).")
    runtimes = tuple(
        RuntimeSupport(
            name=entry["name"],
            version=entry["version"],
            op_signatures=entry["op_signatures"],
            registered_versions=entry["registered_versions"],
            flex=entry.get("flex"),
            custom_ops=entry.get("custom_ops", {}),
            modes=entry.get("modes", {}),
            environment=entry.get("environment", {}),
            mode_order=tuple(data.get("probe_models", {}).get("modes", ())),
        )
        for entry in data["runtimes"]
    )
    return SupportTable(
        created=data["created"],
        generated_by=data["generated_by"],
        method=data["method"],
        converter_versions=data.get("converter_versions", {}),
        runtimes=runtimes,
        signatures_seen_in=data.get("signatures_seen_in", {}),
        path=str(path),
    )
