"""Compatibility preflight: which runtimes can load a `.tflite` model, and why not.

(`python -m converter.check MODEL.tflite [--runtime=...]` is its command line.)

Reads the ops, their versions and their tensor dtypes from the flatbuffer (no
TensorFlow, no runtime) and looks each op signature up in the runtime support
table (`runtime_support.json`, written by `python -m converter.cli.runtime_probe`
from what each runtime did with probe models). Per runtime the verdict is:

- `loads`: every op signature ran in that runtime's probe;
- `refuses`: at least one did not, or its version is not registered there, or
  the model holds Flex or custom ops that the runtime refused in the probe;
- `unknown`: nothing refuses, but some op signature was never probed (no guess
  is made; `make runtime-probe` extends the table).

The converter's `min_runtime_version` metadata is shown but never decides: it
says 2.9.0 for int16x8 models that tflite-runtime 2.14 cannot run.

Exit status: 0 when every runtime checked loads every model, 1 when one refuses
or is unknown, 2 on bad input (one `error:` line).
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Iterable, Sequence
from typing import Any

from converter.compat import runtime_support
from converter.tflite_file import inspection

# The mode suggested when one is refused: int8 weights first (a third of fp32),
# the float-activation one before full integer (README: accuracy per mode).
_MODE_PREFERENCE = ("dynamic", "int8", "int16x8", "fp16", "fp32")
_ERROR_CHARS = 160


class Verdict(str, enum.Enum):
    """Whether a runtime loads a model, as far as the probe table knows."""

    LOADS = "loads"
    REFUSES = "refuses"
    UNKNOWN = "unknown"


class IncompatibleModelError(ValueError):
    """The target runtime cannot load the model (or cannot be shown to); the message names the op."""

    def __init__(self, message: str, *, op: str | None = None, version: int | None = None):
        super().__init__(message)
        self.op = op
        self.version = version


@dataclasses.dataclass(frozen=True)
class Finding:
    """One reason a runtime refuses a model, or cannot be vouched for.

    Attributes:
      verdict: `refuses` or `unknown`.
      op: the op type (builtin name, Flex or custom op name).
      version: the op version, None for Flex and custom ops.
      signature: the op signature key, or None.
      reason: a sentence saying what the probe found.
    """

    verdict: Verdict
    op: str
    version: int | None
    signature: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["verdict"] = self.verdict.value
        return values


@dataclasses.dataclass(frozen=True)
class RuntimeVerdict:
    """The verdict for one runtime release, with its reasons."""

    runtime: str
    version: str
    verdict: Verdict
    findings: tuple[Finding, ...]
    modes_that_load: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.version}"

    def first(self, verdict: Verdict) -> Finding | None:
        return next((f for f in self.findings if f.verdict is verdict), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "version": self.version,
            "verdict": self.verdict.value,
            "findings": [f.to_dict() for f in self.findings],
            "modes_that_load": list(self.modes_that_load),
        }


@dataclasses.dataclass(frozen=True)
class CompatibilityReport:
    """The preflight of one model against the probed runtimes."""

    model: str | None
    op_signatures: tuple[str, ...]
    flex_ops: tuple[str, ...]
    custom_ops: tuple[str, ...]
    min_runtime_version: str | None
    verdicts: tuple[RuntimeVerdict, ...]
    table: dict[str, Any]

    @property
    def loads_everywhere(self) -> bool:
        return all(v.verdict is Verdict.LOADS for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "verdicts": {v.label: v.to_dict() for v in self.verdicts},
            "op_signatures": list(self.op_signatures),
            "flex_ops": list(self.flex_ops),
            "custom_ops": list(self.custom_ops),
            "min_runtime_version_metadata": self.min_runtime_version,
            "table": self.table,
        }

    def render(self) -> str:
        """Lines for a terminal: the model, then one verdict per runtime with its reasons."""
        name = self.model or "model"
        lines = [
            f"{name}: {len(self.op_signatures)} op signatures, {len(self.flex_ops)} Flex ops, "
            f"{len(self.custom_ops)} custom ops; min_runtime_version metadata {self.min_runtime_version or 'absent'} "
            "(not used for the verdicts)"
        ]
        for verdict in self.verdicts:
            lines.append(f"  {verdict.label}: {verdict.verdict.value}")
            for finding in verdict.findings:
                lines.append(f"    - {finding.reason}")
            if verdict.verdict is not Verdict.LOADS and verdict.modes_that_load:
                lines.append(f"    modes whose probe models load there: {', '.join(verdict.modes_that_load)}")
        lines.append(f"  (probe table {self.table['created']}: {self.table['path']})")
        return "\n".join(lines)


def _ranges(versions: Sequence[int]) -> str:
    if not versions:
        return "none"
    parts, start, previous = [], versions[0], versions[0]
    for version in list(versions[1:]) + [None]:
        if version is not None and version == previous + 1:
            previous = version
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if version is not None:
            start = previous = version
    return ", ".join(parts)


def _short(error: str | None) -> str:
    text = " ".join((error or "").split()).rstrip(".")
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"


def _signature_finding(
    support: runtime_support.RuntimeSupport, signature: runtime_support.OpSignature
) -> Finding | None:
    dtypes = f"{','.join(signature.inputs)} -> {','.join(signature.outputs)}"
    probed = support.op_signatures.get(signature.key)
    if probed is not None and probed["loads"]:
        return None
    registration = support.registered_versions.get(signature.op)
    if registration is not None:
        first, last = registration["probed"]
        if first <= signature.version <= last and signature.version not in registration["registered"]:
            return Finding(
                Verdict.REFUSES,
                signature.op,
                signature.version,
                signature.key,
                f"{signature.op} version {signature.version} is not registered (it has versions "
                f"{_ranges(registration['registered'])})",
            )
    if probed is not None:
        return Finding(
            Verdict.REFUSES,
            signature.op,
            signature.version,
            signature.key,
            f"{signature.op} version {signature.version} ({dtypes}) is registered but its kernel refuses these "
            f"tensors: {_short(probed.get('error'))}",
        )
    return Finding(
        Verdict.UNKNOWN,
        signature.op,
        signature.version,
        signature.key,
        f"{signature.op} version {signature.version} ({dtypes}): unknown, not probed",
    )


def _special_findings(support: runtime_support.RuntimeSupport, inspected) -> list[Finding]:
    findings = []
    if inspected.flex_ops:
        names = ", ".join(inspected.flex_ops)
        if support.flex is not None and not support.flex["loads"]:
            findings.append(
                Finding(
                    Verdict.REFUSES,
                    inspected.flex_ops[0],
                    None,
                    None,
                    f"Flex ops ({names}) do not run: {_short(support.flex.get('error'))}",
                )
            )
        else:
            findings.append(
                Finding(Verdict.UNKNOWN, inspected.flex_ops[0], None, None, f"Flex ops ({names}): unknown, not probed")
            )
    for name in inspected.custom_ops:
        probed = support.custom_ops.get(name)
        if probed is None:
            findings.append(Finding(Verdict.UNKNOWN, name, None, None, f"custom op {name}: unknown, not probed"))
        elif not probed["loads"]:
            findings.append(
                Finding(
                    Verdict.REFUSES, name, None, None, f"custom op {name} does not run: {_short(probed.get('error'))}"
                )
            )
    return findings


def verdict_for(support: runtime_support.RuntimeSupport, inspected) -> RuntimeVerdict:
    """The verdict of one probed runtime on an inspected model."""
    findings = _special_findings(support, inspected)
    for signature in runtime_support.op_signatures(inspected):
        finding = _signature_finding(support, signature)
        if finding is not None and all(f.reason != finding.reason for f in findings):
            findings.append(finding)
    findings.sort(key=lambda f: f.verdict is not Verdict.REFUSES)
    if any(f.verdict is Verdict.REFUSES for f in findings):
        verdict = Verdict.REFUSES
    elif findings:
        verdict = Verdict.UNKNOWN
    else:
        verdict = Verdict.LOADS
    return RuntimeVerdict(
        runtime=support.name,
        version=support.version,
        verdict=verdict,
        findings=tuple(findings),
        modes_that_load=tuple(support.modes_that_load()),
    )


def check_model(
    model: bytes | str | os.PathLike | inspection.ModelInspection,
    *,
    runtimes: Iterable[str | runtime_support.RuntimeSpec] | None = None,
    table: runtime_support.SupportTable | None = None,
    name: str | None = None,
) -> CompatibilityReport:
    """Checks a model against the probed runtimes.

    Args:
      model: `.tflite` bytes, a path, or an inspection of one.
      runtimes: specs such as `tflite-runtime==2.14` (a version prefix or
        none matches every probed release); None checks every probed runtime.
      table: the support table (default: the stored one).
      name: how to call the model in messages (default: its path).

    Returns:
      A `CompatibilityReport`.

    Raises:
      FileNotFoundError: no model at the path.
      ValueError: not a TFLite model, or a runtime spec that was never probed.
    """
    table = table or runtime_support.load_table()
    chosen = table.select(runtimes)
    if isinstance(model, inspection.ModelInspection):
        inspected = model
    else:
        inspected = inspection.inspect_model(model)
        if name is None and isinstance(model, (str, os.PathLike)):
            name = os.fspath(model)
    return CompatibilityReport(
        model=name,
        op_signatures=tuple(s.key for s in runtime_support.op_signatures(inspected)),
        flex_ops=tuple(inspected.flex_ops),
        custom_ops=tuple(inspected.custom_ops),
        min_runtime_version=inspected.min_runtime_version,
        verdicts=tuple(verdict_for(support, inspected) for support in chosen),
        table={"created": table.created, "path": _display_path(table.path), "generated_by": table.generated_by},
    )


def _display_path(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def suggest_mode(modes_that_load: Sequence[str], *, refused_mode: str | None = None) -> str | None:
    """The mode to suggest among those that load: int8 weights first, float activations before integer."""
    return next((m for m in _MODE_PREFERENCE if m in modes_that_load and m != refused_mode), None)


def require_loadable(
    report: CompatibilityReport, *, mode: str | None = None, everywhere: CompatibilityReport | None = None
) -> None:
    """Raises unless every runtime in the report loads the model.

    Args:
      report: a report for the target runtime(s).
      mode: the model's conversion mode, to suggest another.
      everywhere: the same model checked against every probed runtime, to
        name one that loads it.

    Raises:
      IncompatibleModelError: a runtime refuses the model, or cannot be
        vouched for; the message names the op and version, and a mode and a
        runtime that would work.
    """
    for verdict in report.verdicts:
        if verdict.verdict is Verdict.LOADS:
            continue
        finding = verdict.first(Verdict.REFUSES) or verdict.first(Verdict.UNKNOWN)
        what = f"this {mode} model" if mode else (report.model or "this model")
        if verdict.verdict is Verdict.REFUSES:
            parts = [f"{verdict.label} cannot load {what}: {finding.reason}."]
        else:
            parts = [
                f"{verdict.label} may not load {what}: {finding.reason}, so nothing vouches for it. "
                "Probe it (make runtime-probe) or convert without a target runtime."
            ]
        others = len(verdict.findings) - 1
        if others:
            parts.append(f"({others} more finding{'s' if others > 1 else ''}: python -m converter.check lists them.)")
        remedies = []
        suggestion = suggest_mode(verdict.modes_that_load, refused_mode=mode)
        if suggestion:
            parts.append(f"Modes whose probe models load in {verdict.label}: {', '.join(verdict.modes_that_load)}.")
            remedy = f"Convert with --mode={suggestion}"
            if suggestion != "fp16" and "fp16" in verdict.modes_that_load and mode != "fp16":
                remedy += " or --mode=fp16 (float activations, closest to fp32)"
            remedies.append(remedy)
        loading = [v for v in (everywhere.verdicts if everywhere else ()) if v.verdict is Verdict.LOADS]
        if loading:
            newest = max(loading, key=lambda v: (v.runtime == "ai-edge-litert", _version_key(v.version)))
            remedies.append(
                f"{'run' if remedies else 'Run'} this model with {newest.label} on the device, which "
                f"loads it (pip install {newest.runtime}=={newest.version})"
            )
        if remedies:
            parts.append(", or ".join(remedies) + ".")
        raise IncompatibleModelError(" ".join(parts), op=finding.op, version=finding.version)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))
