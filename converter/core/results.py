"""`ConversionResult`: a converted model and its report, and the artifact names beside it.

A model is written as `build/<model>/<model>_<mode or recipe>.tflite` and its
report as the same stem with `.json`; `ConversionResult.load` reads both back.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.metadata
import json
import os
import pathlib
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from converter.common import files
from converter.core import modes
from converter.tflite_file import inspection

DEFAULT_BUILD_DIR = "build"
_VERSIONED_PACKAGES = ("tensorflow", "keras", "keras-hub", "ai-edge-litert", "numpy")
# Ops that only move data or convert types: they say nothing about the
# precision the model computes in.
_DATA_MOVEMENT_OPS = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "TRANSPOSE", "GATHER", "SELECT", "SELECT_V2"}


def json_ready(value: Any) -> Any:
    """`value` with dataclasses, tuples, sets and numpy values turned into JSON types."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclasses.dataclass(frozen=True)
class ConversionResult:
    """A converted model and everything the report says about it.

    `model` holds the `.tflite` bytes; every other field serialises to JSON
    (`to_dict`, `to_json`) and is what `save` writes beside the model.
    `recipe` is the `Recipe.to_dict()` the model was converted with: pass the
    report to `Recipe.load` to convert it again.
    """

    model_name: str
    model_source: str
    mode: str
    seq_len: int
    vocabulary_size: int
    model: bytes = dataclasses.field(repr=False)
    path: str | None
    size_bytes: int
    op_histogram: Mapping[str, Any]
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    tensor_dtypes: Mapping[str, Any]
    min_runtime_version: str | None
    graph_changes: tuple[str, ...]
    float_ops: Mapping[str, int]
    check: Mapping[str, Any]
    conversion_seconds: float
    peak_rss_bytes: int
    rss_before_bytes: int
    calibration: Mapping[str, Any] | None
    versions: Mapping[str, str]
    created: str
    recipe: Mapping[str, Any] | None = None
    # Set on a model `auto` chose: the candidate, the budget and what it measured.
    auto: Mapping[str, Any] | None = None
    # Every signature's inputs and outputs (a generation model has several).
    signatures: Mapping[str, Any] | None = None
    # Set on a generation model: its contexts, prefill lengths, cache layout and special tokens.
    generation: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field but the model bytes, as JSON-ready values, and the runtime compatibility."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        data["graph_changes"] = list(self.graph_changes)
        data["compatibility"] = self.compatibility
        return json_ready(data)

    @functools.cached_property
    def compatibility(self) -> dict[str, Any]:
        """Which probed runtimes load the model (`python -m converter.check`), read from its bytes.

        Derived from the model rather than stored, so it cannot disagree with it.
        """
        from converter.compat import check  # pylint: disable=import-outside-toplevel

        try:
            report = check.check_model(self.model)
        except (OSError, ValueError) as error:
            return {"error": f"the compatibility preflight failed: {error}"}
        return {
            "verdicts": {label: verdict["verdict"] for label, verdict in report.to_dict()["verdicts"].items()},
            "details": report.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> ConversionResult:
        """Writes `<path>` (.tflite) and its report `<path stem>.json` atomically.

        Args:
          path: where the `.tflite` file goes.
          overwrite: replace existing files; otherwise refuse.

        Returns:
          A copy of this result with `path` set.

        Raises:
          FileExistsError: a target exists and `overwrite` is False.
        """
        model_path, report_path = artifact_paths(path)
        check_writable(model_path, overwrite=overwrite)
        saved = dataclasses.replace(self, path=str(model_path))
        files.write_atomically(model_path, self.model)
        files.write_atomically(report_path, saved.to_json())
        return saved

    @classmethod
    def load(cls, path: str | os.PathLike) -> ConversionResult:
        """Reads a converted model and its `.json` report back.

        Raises:
          FileNotFoundError: the model or its report is missing.
          ValueError: the report lacks fields (written by another version).
        """
        model_path, report_path = artifact_paths(path)
        if not model_path.is_file():
            raise FileNotFoundError(f"No converted model at {str(model_path)!r}.")
        if not report_path.is_file():
            raise FileNotFoundError(f"{str(report_path)!r} (the report of {str(model_path)!r}) is missing.")
        report = json.loads(report_path.read_text(encoding="utf-8"))
        fields = {f.name for f in dataclasses.fields(cls)} - {"model"}
        optional = {f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        missing = sorted(fields - optional - set(report))
        if missing:
            raise ValueError(
                f"{str(report_path)!r} lacks {', '.join(missing)}: it was written by another version. "
                "Convert again (make convert ... OVERWRITE=1)."
            )
        values = {key: report[key] for key in fields if key in report}
        values["graph_changes"] = tuple(values["graph_changes"])
        return cls(model=model_path.read_bytes(), **values)

    def with_model(
        self,
        model_bytes: bytes,
        *,
        changes: Iterable[str] = (),
        recipe: Mapping[str, Any] | None = None,
        check: Mapping[str, Any] | None = None,
    ) -> ConversionResult:
        """This result for a rewrite of its model: the fields read from the model come from the new bytes.

        Args:
          model_bytes: the rewritten model.
          changes: what the rewrite did, appended to `graph_changes`.
          recipe: the new recipe (default: the old one).
          check: a check of the new model (default: the old one's, which then
            describes the model before the rewrite; pass a new one).
        """
        return dataclasses.replace(
            self,
            **model_fields(model_bytes, inspection.inspect_model(model_bytes)),
            path=None,
            graph_changes=tuple(self.graph_changes) + tuple(changes),
            recipe=self.recipe if recipe is None else dict(recipe),
            check=self.check if check is None else dict(check),
        )


def artifact_paths(path: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
    """The model path and its report path (same stem, `.json`)."""
    model_path = pathlib.Path(path)
    if model_path.suffix != ".tflite":
        raise ValueError(f"Output path {str(model_path)!r} must end in .tflite.")
    return model_path, model_path.with_suffix(".json")


def default_output_path(
    model_name: str, mode: modes.Mode | str, *, build_dir: str | os.PathLike = DEFAULT_BUILD_DIR
) -> pathlib.Path:
    """`build/<model>/<model>_<variant>.tflite`, the variant being a mode or a recipe name."""
    variant = mode.value if isinstance(mode, modes.Mode) else str(mode)
    return pathlib.Path(build_dir) / model_name / f"{model_name}_{variant}.tflite"


def windows_paths(
    model_name: str, seq_len: int, *, build_dir: str | os.PathLike = DEFAULT_BUILD_DIR
) -> tuple[pathlib.Path, pathlib.Path]:
    """Where the CLI keeps a model's calibration and evaluation windows (`<model>_seq<N>_*.npz`)."""
    folder = pathlib.Path(build_dir) / model_name
    stem = f"{model_name}_seq{seq_len}"
    return folder / f"{stem}_calibration.npz", folder / f"{stem}_evaluation.npz"


def check_writable(model_path: pathlib.Path, *, overwrite: bool) -> None:
    """Refuses an existing model or report unless `overwrite`, and folders in the way."""
    files.refuse_existing(artifact_paths(model_path), overwrite=overwrite)


def package_versions() -> dict[str, str]:
    """Python's and the converter's packages' versions, for reports."""
    versions = {"python": sys.version.split()[0]}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def now_utc() -> str:
    """The time of a report, to the second, in UTC."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def model_fields(model_bytes: bytes, inspected: inspection.ModelInspection) -> dict[str, Any]:
    """The `ConversionResult` fields read from the model bytes."""
    summary = json_ready(inspected.summary())
    return {
        "model": model_bytes,
        "size_bytes": len(model_bytes),
        "op_histogram": summary["op_histogram"],
        "inputs": summary["inputs"],
        "outputs": summary["outputs"],
        "tensor_dtypes": {"constants": summary["constant_dtypes"], "activations": summary["activation_dtypes"]},
        "min_runtime_version": inspected.min_runtime_version,
        "float_ops": float_compute_ops(inspected),
        "signatures": summary["signatures"],
    }


def float_compute_ops(inspected: inspection.ModelInspection) -> dict[str, int]:
    """Op type -> count of ops that compute in float (read a float32 activation)."""
    counts: dict[str, int] = {}
    for op in inspected.ops:
        if op.op in _DATA_MOVEMENT_OPS:
            continue
        reads_float = any(
            i >= 0 and not inspected.tensors[i].is_constant and inspected.tensors[i].dtype == "float32"
            for i in op.inputs
        )
        if reads_float:
            counts[op.op] = counts.get(op.op, 0) + 1
    return dict(sorted(counts.items()))


def logit_agreement(expected, actual) -> dict[str, float]:
    """How close logits `[positions, vocab]` are to the reference's: the report's `check` figures.

    The RMS error over the reference logits' standard deviation is the figure that holds on any CPU;
    top-1 agreement on a random model's near-tied logits is rounding luck (docs/2026-12-01-tests-on-any-cpu.md).
    """
    import numpy as np  # pylint: disable=import-outside-toplevel

    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    error = actual - expected
    return {
        "max_abs_logit_error": round(float(np.max(np.abs(error))), 6),
        "rms_logit_error": round(float(np.sqrt(np.mean(error**2))), 6),
        "logit_std": round(float(np.std(expected)), 6),
        "top1_agreement": round(float(np.mean(expected.argmax(-1) == actual.argmax(-1))), 6),
    }
