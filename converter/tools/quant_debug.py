"""Where a quantized model loses accuracy: every quantized tensor, its error and its share.

    make debug MODEL=tiny-gpt2 MODE=int8
    python -m converter.cli.debug --model=build/x/x_int8.tflite --mode=int8 --float_model=build/x/x_fp32.tflite

The quantized model and the float model it was converted from run side by side
on token windows (LiteRT's built-in kernels, every intermediate tensor kept),
and each quantized tensor is compared with the float tensor of the same name.
Three figures per tensor:

* accumulated error: the quantized model's tensor against the float model's.
  It grows along the graph: it holds every error made upstream.
* local error: the op that writes the tensor, cut out of the quantized model
  (as `benchmarks.op_profile` does) and fed the float model's exact inputs,
  quantized with the op's own input parameters; its dequantized output against
  the float op's. This is the error the op and its output's scale add.
* share of the output error: for the ops with the largest local error
  (taken in turn by relative RMSE and by RMSE in steps) and, separately, for
  every op type, the quantized model is run again with that
  op made exact (the float model's op with float weights, in float) and its
  output left in float for the ops that read it, which then run in float too
  (`converter.float_regions`). With E the mean squared logit error against the
  float model, share = (E - E_with_the_op_exact) / E: 1 means the op causes
  all of the output error, 0 none; it can be negative when errors cancel.
  In a model whose output is noise (top-1 agreement near 0) errors no longer
  add up and shares say little; the local errors still point at the causes.

Errors are RMSE relative to the tensor's scale (in quantization steps: about
0.29 is pure rounding) and relative to the float tensor's RMS (how much of the
signal is lost: near 1 means the tensor carries noise). Elements where the float
attention mask holds its -1e9 fill are left out (the converter bounds that fill
in quantized models; either gives the same softmax).

Only `ai_edge_litert`, `flatbuffers` and numpy run here: no TensorFlow.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from converter import tflite_file
from converter.common import files
from converter.common import progress as progress_lib
from converter.passes import float_regions
from converter.tflite_file import inspection, writing

DEFAULT_MAX_WINDOWS = 8
DEFAULT_SHARE_CANDIDATES = 12
DEFAULT_SHARE_WINDOWS = 4
# A select output at or below this is the attention mask's "minus infinity" fill.
_MASK_FILL = -1e4
_MASK_SELECTS = ("SELECT", "SELECT_V2")
_CONVERTER_OPS = ("QUANTIZE", "DEQUANTIZE")
# Ops that only move or copy values: their local error is the rounding of their input.
_DATA_MOVEMENT_OPS = frozenset(
    {
        "RESHAPE",
        "TRANSPOSE",
        "SPLIT",
        "SPLIT_V",
        "TILE",
        "PACK",
        "UNPACK",
        "CONCATENATION",
        "GATHER",
        "SQUEEZE",
        "EXPAND_DIMS",
        "STRIDED_SLICE",
        "SLICE",
    }
)
_QUANTIZED_DTYPES = {"int8": np.int8, "int16": np.int16, "uint8": np.uint8}
# Below this fraction of quantized tensors with a float counterpart, the two
# files are not the same graph.
_MIN_MATCHED_FRACTION = 0.5
_FLOAT_TWIN_SUFFIXES = ("/float", "/dequantized")


@dataclasses.dataclass(frozen=True)
class TensorError:
    """The error of one quantized activation tensor.

    Attributes:
      tensor: name in the quantized model.
      index: tensor index in the quantized model (subgraph 0).
      op: type of the op that writes it.
      op_index: that op's position in execution order.
      dtype: int8, int16 or uint8.
      shape: the tensor's shape.
      scale, zero_point: its quantization (real = scale * (q - zero_point)).
      float_min, float_max: range of the float model's tensor on the windows.
      clipped_fraction: share of float values outside the representable range.
      accumulated_rmse_over_scale: RMSE of the quantized model's tensor against
        the float model's, in quantization steps.
      accumulated_relative_rmse: the same RMSE over the float tensor's RMS.
      local_rmse_over_scale, local_relative_rmse: the same for the op alone
        fed exact inputs; None when it could not be run alone (see `note`).
      output_error_share: fraction of the logits' mean squared error that goes
        away when this op is exact; None when not measured.
      note: why a figure is missing.
    """

    tensor: str
    index: int
    op: str
    op_index: int
    dtype: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    float_min: float | None
    float_max: float | None
    clipped_fraction: float | None
    accumulated_rmse_over_scale: float | None
    accumulated_relative_rmse: float | None
    local_rmse_over_scale: float | None
    local_relative_rmse: float | None
    output_error_share: float | None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class OpTypeError:
    """The ops of one type taken together.

    Attributes:
      op: the op type.
      tensors: quantized tensors written by ops of this type.
      worst_local_relative_rmse: largest local relative RMSE among them.
      median_local_relative_rmse: their median local relative RMSE.
      output_error_share: share of the logits' mean squared error that goes
        away when every op of this type is exact; None when not measured.
    """

    op: str
    tensors: int
    worst_local_relative_rmse: float | None
    median_local_relative_rmse: float | None
    output_error_share: float | None


@dataclasses.dataclass(frozen=True)
class LogitsError:
    """The quantized model's logits against the float model's, on real (unpadded) positions."""

    positions: int
    rmse: float
    max_abs_error: float
    top1_agreement: float
    mean_kl: float
    # The float model's logits' standard deviation: `rmse` over it is the error relative to the signal.
    reference_std: float = 0.0


@dataclasses.dataclass(frozen=True)
class QuantDebugReport:
    """Per-tensor quantization error of a quantized model against its float model.

    Attributes:
      float_model, quantized_model: where the models came from.
      activation_dtype: the quantized activations' dtype (int8 or int16).
      windows: windows run for the accumulated and local errors.
      share_windows: windows run for each share measurement.
      logits: the output error on `windows`.
      tensors: every quantized activation tensor, worst first: the ones with a
        measured share by share, then the others by local relative RMSE.
      op_types: the same by op type, by share then worst local error.
      unmatched_tensors: quantized tensors without a float counterpart.
      notes: anything that was skipped, and why.
      seconds: wall time of the analysis.
    """

    float_model: str
    quantized_model: str
    activation_dtype: str
    windows: int
    share_windows: int
    logits: LogitsError
    tensors: tuple[TensorError, ...]
    op_types: tuple[OpTypeError, ...]
    unmatched_tensors: tuple[str, ...]
    notes: tuple[str, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return _finite(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_markdown(self) -> str:
        """The report as markdown: summary, definitions, op types, then every tensor."""
        logits = self.logits
        prefix = _common_prefix([t.tensor for t in self.tensors])
        lines = [
            "# Quantization error report",
            "",
            f"- float model: `{self.float_model}`",
            f"- quantized model: `{self.quantized_model}` ({self.activation_dtype} activations)",
            f"- windows: {self.windows} (shares on {self.share_windows}); {logits.positions} positions scored",
            f"- logits vs float: RMSE {logits.rmse:.4g}, max abs error {logits.max_abs_error:.4g}, "
            f"top-1 agreement {100 * logits.top1_agreement:.1f} %, mean KL {logits.mean_kl:.4g} nats",
            f"- analysis time: {self.seconds:.1f} s",
            "",
            "RMSE/scale is in quantization steps (about 0.29 is rounding alone); relative RMSE is the "
            "RMSE over the float tensor's RMS (1 means the tensor carries no signal). *Accumulated*: "
            "the quantized model's tensor against the float model's (all upstream error included). "
            "*Local*: the op alone, fed the float model's inputs quantized with its own input "
            "parameters. *Share*: (E - E') / E, where E is the mean squared logit error against the "
            "float model and E' the same with the op exact (float weights, float arithmetic) and its "
            "output left in float for its readers.",
            "",
            "## By op type",
            "",
            "| op | tensors | worst local rel. RMSE | median local rel. RMSE | share if all exact |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for row in self.op_types:
            lines.append(
                f"| {row.op} | {row.tensors} | {_fmt(row.worst_local_relative_rmse)} | "
                f"{_fmt(row.median_local_relative_rmse)} | {_pct(row.output_error_share)} |"
            )
        lines += [
            "",
            "## Every quantized tensor, worst first",
            "",
            f"Names without the common prefix `{prefix}`." if prefix else "",
            "",
            "| # | tensor | op | dtype | scale | zp | float range | clipped | acc. RMSE/scale | acc. rel. | "
            "local RMSE/scale | local rel. | share |",
            "| ---: | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for rank, t in enumerate(self.tensors, 1):
            lines.append(
                f"| {rank} | {t.tensor[len(prefix) :] if prefix and t.tensor.startswith(prefix) else t.tensor} "
                f"| {t.op} #{t.op_index} | {t.dtype} | {t.scale:.4g} | "
                f"{t.zero_point} | [{_fmt(t.float_min)}, {_fmt(t.float_max)}] | {_pct(t.clipped_fraction, 2)} | "
                f"{_fmt(t.accumulated_rmse_over_scale)} | {_fmt(t.accumulated_relative_rmse)} | "
                f"{_fmt(t.local_rmse_over_scale)} | {_fmt(t.local_relative_rmse)} | {_pct(t.output_error_share)} |"
            )
        if self.unmatched_tensors:
            lines += [
                "",
                f"{len(self.unmatched_tensors)} quantized tensors have no float counterpart: "
                + ", ".join(f"`{n}`" for n in self.unmatched_tensors[:20])
                + (" ..." if len(self.unmatched_tensors) > 20 else ""),
            ]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def summary(self, *, worst: int = 5) -> str:
        """The output error and the `worst` tensors, a line each, for the command line."""
        logits = self.logits
        lines = [
            f"{self.quantized_model}: top-1 agreement with fp32 {100 * logits.top1_agreement:.1f} %, "
            f"logit RMSE {logits.rmse:.4g}"
        ]
        for item in self.tensors[:worst]:
            lines.append(
                f"  {item.op} #{item.op_index} {item.tensor}: local rel. RMSE "
                f"{_fmt(item.local_relative_rmse)}, share {_pct(item.output_error_share)}"
            )
        return "\n".join(lines)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
        """Writes the JSON report to `path` and the markdown beside it (same stem, `.md`), atomically.

        Both texts exist before either file is touched, so a failure leaves no half pair.

        Returns:
          The JSON report's path.

        Raises:
          FileExistsError: a target exists and `overwrite` is False.
        """
        json_path = pathlib.Path(path)
        paths = [json_path, json_path.with_suffix(".md")]
        files.refuse_existing(paths, overwrite=overwrite)
        texts = [self.to_json(), self.to_markdown()]
        for target, text in zip(paths, texts):
            files.write_atomically(target, text)
        return json_path


def _finite(value):
    # JSON has no NaN or infinity: a figure that could not be measured is null.
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _fmt(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.4g}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f} %"


def _common_prefix(names: Sequence[str]) -> str:
    # Names the quantizer made up (tfl.quantize) have no path; they keep their full name.
    paths = [name for name in names if "/" in name]
    if len(paths) < 2:
        return ""
    prefix = os.path.commonprefix(paths)
    return prefix[: prefix.rfind("/") + 1]


# --------------------------------------------------------------------------- models


@dataclasses.dataclass
class _Model:
    """A model file read for debugging: its bytes, inspection and signature tensors."""

    label: str
    data: bytes
    inspected: inspection.ModelInspection

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tensor.shape for name, tensor in self.inspected.inputs.items()}

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tensor.shape for name, tensor in self.inspected.outputs.items()}


def _read_model(model: bytes | str | os.PathLike, role: str) -> _Model:
    if isinstance(model, (bytes, bytearray)):
        data, label = bytes(model), f"<{role} model, {len(model)} bytes>"
    else:
        path = pathlib.Path(model)
        if not path.is_file():
            raise FileNotFoundError(
                f"No {role} model at {str(path)!r}. Convert it first "
                f"(make convert MODE=...) or pass the path of a .tflite file."
            )
        data, label = path.read_bytes(), str(path)
    try:
        inspected = inspection.inspect_model(data)
    except ValueError as error:
        raise ValueError(f"The {role} model {label} cannot be read: {error}") from None
    if "token_ids" not in inspected.inputs or "logits" not in inspected.outputs:
        raise ValueError(
            f"The {role} model {label} has inputs {sorted(inspected.inputs)} and outputs "
            f"{sorted(inspected.outputs)}; expected 'token_ids' in and 'logits' out. "
            "Convert it with this project's converter."
        )
    return _Model(label=label, data=data, inspected=inspected)


def _quantized_activations(inspected: inspection.ModelInspection) -> list[inspection.TensorInfo]:
    # Tensors no op writes (left behind by a graph rewrite) hold no values to compare.
    written = {t for op in inspected.ops for t in op.outputs}
    return [
        t
        for t in inspected.tensors
        if t.index in written and not t.is_constant and t.dtype in _QUANTIZED_DTYPES and t.quantization is not None
    ]


def _reference_map(quantized: inspection.ModelInspection, float_: inspection.ModelInspection):
    """Quantized tensor index -> float tensor index, matched by name and through (DE)QUANTIZE ops.

    Returns:
      (mapping, number of same-named tensors whose shapes differ).
    """
    by_name: dict[str, int] = {}
    for tensor in float_.tensors:
        if not tensor.is_constant:
            by_name.setdefault(tensor.name, tensor.index)
    mapping, mismatched = {}, 0
    for tensor in quantized.tensors:
        if tensor.is_constant:
            continue
        name = tensor.name
        for suffix in _FLOAT_TWIN_SUFFIXES:
            name = name[: -len(suffix)] if name.endswith(suffix) else name
        index = by_name.get(name)
        if index is None:
            continue
        if float_.tensors[index].shape != tensor.shape:
            mismatched += 1
            continue
        mapping[tensor.index] = index
    # Tensors the quantizer added (tfl.quantize, tfl.dequantize, a renamed
    # output) carry the value of the tensor on the other side of their op.
    changed = True
    while changed:
        changed = False
        for op in quantized.ops:
            if op.op not in _CONVERTER_OPS or not op.inputs or not op.outputs:
                continue
            source, target = op.inputs[0], op.outputs[0]
            if quantized.tensors[source].shape != quantized.tensors[target].shape:
                continue
            if target not in mapping and source in mapping:
                mapping[target] = mapping[source]
                changed = True
            elif source not in mapping and target in mapping and not quantized.tensors[source].is_constant:
                mapping[source] = mapping[target]
                changed = True
    return mapping, mismatched


def float_to_quantized(
    quantized: inspection.ModelInspection, float_: inspection.ModelInspection, mapping: Mapping[int, int]
) -> dict[int, int]:
    """Float tensor index -> the quantized tensor that carries its value.

    Several quantized tensors can carry one float value (a float tensor and
    the QUANTIZE copy made of it); the one of the same name comes first, so an
    exact op reads the float value itself rather than its rounded copy.
    """
    result: dict[int, int] = {}
    for quantized_index, float_index in sorted(
        mapping.items(), key=lambda item: quantized.tensors[item[0]].name != float_.tensors[item[1]].name
    ):
        result.setdefault(float_index, quantized_index)
    return result


def _check_same_graph(float_model: _Model, quantized: _Model, mapping, mismatched: int) -> list[int]:
    """Refuses two models that are not the same graph; returns the quantized activations."""
    if float_model.input_shapes != quantized.input_shapes or float_model.output_shapes != quantized.output_shapes:
        raise ValueError(
            f"The float model {float_model.label} (inputs {float_model.input_shapes}, outputs "
            f"{float_model.output_shapes}) and the quantized model {quantized.label} (inputs "
            f"{quantized.input_shapes}, outputs {quantized.output_shapes}) are not the same graph. "
            "Pass the fp32 model converted from the same Keras model with the same seq_len."
        )
    activations = _quantized_activations(quantized.inspected)
    if not activations:
        raise ValueError(
            f"{quantized.label} has no quantized activations, so there is nothing to debug; pass an "
            "int8 or int16x8 model (dynamic-range models quantize only weights)."
        )
    matched = sum(t.index in mapping for t in activations)
    if matched < _MIN_MATCHED_FRACTION * len(activations) or mismatched > 0.1 * len(activations):
        raise ValueError(
            f"The float model {float_model.label} and the quantized model {quantized.label} are not the same "
            f"graph: {matched} of {len(activations)} quantized tensors have a float tensor of the same name "
            f"and shape ({mismatched} names with other shapes). Pass the fp32 model converted from the same "
            "Keras model."
        )
    return [t.index for t in activations]


# --------------------------------------------------------------------------- running


def _interpreter(model: bytes):
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel

    # Intermediate tensors are only readable without delegates and with
    # preserve_all_tensors; both models run LiteRT's built-in kernels alike.
    runner = litert.Interpreter(
        model_content=model,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    runner.allocate_tensors()
    return runner


class _Runner:
    """A whole model, fed by signature input name."""

    def __init__(self, model: bytes):
        self.interpreter = _interpreter(model)
        signature = next(iter(self.interpreter._get_full_signature_list().values()))  # pylint: disable=protected-access
        self.inputs = dict(signature["inputs"])
        self.logits_index = signature["outputs"]["logits"]
        details = {d["index"]: d for d in self.interpreter.get_output_details()}
        self.logits_quantization = details[self.logits_index]["quantization"]

    def run(self, feed: Mapping[str, np.ndarray]) -> None:
        for name, index in self.inputs.items():
            self.interpreter.set_tensor(index, feed[name])
        self.interpreter.invoke()

    def logits(self) -> np.ndarray:
        values = self.interpreter.get_tensor(self.logits_index)
        scale, zero_point = self.logits_quantization
        if np.issubdtype(values.dtype, np.integer) and scale:
            return (values.astype(np.float32) - zero_point) * np.float32(scale)
        return values.astype(np.float32)


def _feed(windows, index: int, input_names: Iterable[str]) -> dict[str, np.ndarray]:
    feed = {}
    for name in input_names:
        source = windows.padding_mask if name == "padding_mask" else windows.token_ids
        feed[name] = np.ascontiguousarray(source[index : index + 1], dtype=np.int32)
    return feed


def _quantize(values: np.ndarray, tensor: inspection.TensorInfo) -> np.ndarray:
    dtype = _QUANTIZED_DTYPES[tensor.dtype]
    info = np.iinfo(dtype)
    scale, zero_point = tensor.quantization.scale[0], tensor.quantization.zero_point[0]
    return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, tensor: inspection.TensorInfo) -> np.ndarray:
    if tensor.dtype not in _QUANTIZED_DTYPES or tensor.quantization is None:
        return values.astype(np.float64)
    return (values.astype(np.float64) - tensor.quantization.zero_point[0]) * tensor.quantization.scale[0]


class _ErrorSum:
    """Sums of one tensor's error over windows, in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.squared_error = 0.0
        self.squared_reference = 0.0

    def add(self, values: np.ndarray, reference: np.ndarray) -> None:
        self.count += reference.size
        self.squared_error += float(np.sum(np.square(values - reference)))
        self.squared_reference += float(np.sum(np.square(reference)))

    def rmse(self) -> float | None:
        return (self.squared_error / self.count) ** 0.5 if self.count else None

    def relative(self) -> float | None:
        if not self.count:
            return None
        reference = (self.squared_reference / self.count) ** 0.5
        return float(self.rmse() / reference) if reference > 0 else (0.0 if self.squared_error == 0 else float("inf"))


@dataclasses.dataclass
class _TensorStats:
    accumulated: _ErrorSum = dataclasses.field(default_factory=_ErrorSum)
    local: _ErrorSum = dataclasses.field(default_factory=_ErrorSum)
    minimum: float = float("inf")
    maximum: float = float("-inf")
    clipped: int = 0


def _representable(tensor: inspection.TensorInfo) -> tuple[float, float]:
    info = np.iinfo(_QUANTIZED_DTYPES[tensor.dtype])
    scale, zero_point = tensor.quantization.scale[0], tensor.quantization.zero_point[0]
    # Half a step either side still rounds into range.
    return scale * (info.min - zero_point - 0.5), scale * (info.max - zero_point + 0.5)


class _OpCutouts:
    """Every op with a quantized output, cut out of the quantized model and ready to run alone."""

    def __init__(self, quantized: _Model, mapping: Mapping[int, int], progress: bool):
        self.runs: dict[int, tuple[Any, list[int]]] = {}
        self.skipped: dict[int, str] = {}
        inspected = quantized.inspected
        model_object = inspection.load_model_object(quantized.data)
        for op in inspected.ops:
            outputs = [t for t in op.outputs if inspected.tensors[t].dtype in _QUANTIZED_DTYPES]
            if not outputs:
                continue
            runtime_inputs = [t for t in dict.fromkeys(op.inputs) if t >= 0 and not inspected.tensors[t].is_constant]
            missing = [inspected.tensors[t].name for t in runtime_inputs if t not in mapping]
            if missing:
                self.skipped[op.index] = f"input {missing[0]!r} has no float counterpart"
                continue
            try:
                content, _ = tflite_file.single_op_model(model_object, op.index)
                self.runs[op.index] = (_interpreter(content), runtime_inputs)
            except (RuntimeError, ValueError) as error:
                self.skipped[op.index] = f"could not run alone: {error}"[:200]
            if progress and (op.index + 1) % 200 == 0:
                progress_lib.log("quant_debug", f"cut out {op.index + 1}/{len(inspected.ops)} ops", enabled=progress)


def _accumulate(
    stats: _TensorStats, values: np.ndarray, reference: np.ndarray, tensor, *, masked: bool, local: bool
) -> None:
    if masked:
        keep = reference > _MASK_FILL
        values, reference = values[keep], reference[keep]
    if local:
        stats.local.add(values, reference)
        return
    stats.accumulated.add(values, reference)
    if reference.size:
        lower, upper = _representable(tensor)
        stats.minimum = min(stats.minimum, float(reference.min()))
        stats.maximum = max(stats.maximum, float(reference.max()))
        stats.clipped += int(np.sum((reference < lower) | (reference > upper)))


# --------------------------------------------------------------------------- shares


def _logits_mse(logits: Sequence[np.ndarray], references: Sequence[np.ndarray], masks) -> float:
    squared, count = 0.0, 0
    for value, reference, mask in zip(logits, references, masks):
        keep = mask.astype(bool)
        difference = value[0][keep].astype(np.float64) - reference[0][keep]
        squared += float(np.sum(np.square(difference)))
        count += difference.size
    return squared / count


class _ShareMeter:
    """Runs the quantized model with some ops made exact and measures the logits' error left."""

    def __init__(
        self,
        quantized: _Model,
        float_model: _Model,
        mapping,
        windows,
        share_windows: int,
        float_logits,
        quantized_logits,
    ):
        self.quantized = quantized
        self.float_object = inspection.load_model_object(float_model.data)
        self.mapping = mapping
        self.float_to_quantized = float_to_quantized(quantized.inspected, float_model.inspected, mapping)
        producers = {}
        for op in float_model.inspected.ops:
            for tensor in op.outputs:
                producers[tensor] = op
        self.float_producers = producers
        self.windows = windows
        self.count = share_windows
        self.masks = [windows.padding_mask[i] for i in range(share_windows)]
        self.float_logits = float_logits[:share_windows]
        self.total = _logits_mse(quantized_logits[:share_windows], self.float_logits, self.masks)
        self.notes: list[str] = []

    def _float_twin(self, op: inspection.OpInfo) -> int | None:
        """The float model's op that writes the same tensor as `op`, if it is of the same type."""
        for output in op.outputs:
            reference = self.mapping.get(output)
            twin = self.float_producers.get(reference) if reference is not None else None
            if twin is not None and twin.op == op.op:
                return twin.index
        return None

    def share(self, op_indices: Sequence[int]) -> float | None:
        """(E - E') / E with the given ops exact and their readers in float."""
        if self.total == 0:
            return None
        inspected = self.quantized.inspected
        model_object = inspection.load_model_object(self.quantized.data)
        exact = {}
        for index in op_indices:
            twin = self._float_twin(inspected.ops[index])
            if twin is not None:
                exact[index] = twin
        region = set(op_indices) | float_regions.consumers(model_object, op_indices)
        self.notes.extend(
            float_regions.run_region_in_float(
                model_object,
                region,
                exact=exact,
                float_object=self.float_object,
                float_to_quantized=self.float_to_quantized,
                hybrid=False,
            )
        )
        runner = _Runner(writing.pack(model_object))
        logits = []
        for window in range(self.count):
            runner.run(_feed(self.windows, window, runner.inputs))
            logits.append(runner.logits())
        remaining = _logits_mse(logits, self.float_logits, self.masks)
        return (self.total - remaining) / self.total


# --------------------------------------------------------------------------- the report


def debug_quantization(
    float_model: bytes | str | os.PathLike,
    quantized_model: bytes | str | os.PathLike,
    windows: Any,
    *,
    max_windows: int = DEFAULT_MAX_WINDOWS,
    share_candidates: int = DEFAULT_SHARE_CANDIDATES,
    share_windows: int = DEFAULT_SHARE_WINDOWS,
    op_type_shares: bool = True,
    progress: bool = False,
) -> QuantDebugReport:
    """Measures where a quantized model departs from its float model, tensor by tensor.

    Args:
      float_model: the fp32 `.tflite` (path or bytes) the quantized model was converted from.
      quantized_model: the int8 or int16x8 `.tflite` (path or bytes).
      windows: `representative_data.TokenWindows` or a `.npz` of token windows
        (evaluation windows: calibration never saw them).
      max_windows: windows to run for the accumulated and local errors.
      share_candidates: ops whose share of the output error is measured (one
        extra run of the model each), taken in turn from the largest local
        relative RMSE and the largest local RMSE in quantization steps.
      share_windows: windows each share measurement runs.
      op_type_shares: also measure the share of every op type (all its ops exact).
      progress: log progress on stderr.

    Returns:
      A `QuantDebugReport`.

    Raises:
      FileNotFoundError: a model or windows file does not exist.
      ValueError: a file is not a model of this project; the two models are not
        the same graph; the quantized model has no quantized activations; the
        windows do not fit the model (sequence length, vocabulary); a count
        below 1.
    """
    import representative_data  # pylint: disable=import-outside-toplevel

    started = time.perf_counter()
    for name, value in (("max_windows", max_windows), ("share_windows", share_windows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer of at least 1; got {value!r}.")
    if isinstance(share_candidates, bool) or not isinstance(share_candidates, int) or share_candidates < 0:
        raise ValueError(f"share_candidates must be an integer of at least 0; got {share_candidates!r}.")
    quantized = _read_model(quantized_model, "quantized")
    float_ = _read_model(float_model, "float")
    mapping, mismatched = _reference_map(quantized.inspected, float_.inspected)
    activations = _check_same_graph(float_, quantized, mapping, mismatched)
    if not isinstance(windows, representative_data.TokenWindows):
        windows = representative_data.load_windows(windows)
    seq_len = quantized.inspected.inputs["token_ids"].shape[-1]
    vocabulary_size = quantized.inspected.outputs["logits"].shape[-1]
    representative_data.validate_windows(windows, vocabulary_size=vocabulary_size, seq_len=seq_len)
    count = min(max_windows, windows.num_windows)
    share_count = min(share_windows, count)

    inspected = quantized.inspected
    producer = {t: op for op in inspected.ops for t in op.outputs}
    # Attention scores after the mask: the float model fills masked positions with
    # -1e9, the quantized one with a bounded fill (or a clipped -1e9); neither counts.
    mask_scores = {t for op in float_.inspected.ops if op.op in _MASK_SELECTS for t in op.outputs}
    progress_lib.log("quant_debug", f"{len(activations)} quantized tensors; cutting out their ops", enabled=progress)
    cutouts = _OpCutouts(quantized, mapping, progress)
    float_runner, quantized_runner = _Runner(float_.data), _Runner(quantized.data)
    stats = {index: _TensorStats() for index in activations}
    float_logits, quantized_logits = [], []
    from benchmarks import accuracy  # pylint: disable=import-outside-toplevel

    agree = positions = 0
    kl_sum, max_error, squared, total, total_squared = 0.0, 0.0, 0.0, 0.0, 0.0
    for window in range(count):
        progress_lib.log("quant_debug", f"window {window + 1}/{count}", enabled=progress)
        float_runner.run(_feed(windows, window, float_runner.inputs))
        quantized_runner.run(_feed(windows, window, quantized_runner.inputs))
        reference_logits, logits = float_runner.logits(), quantized_runner.logits()
        if window < share_count:
            float_logits.append(reference_logits)
            quantized_logits.append(logits)
        keep = windows.padding_mask[window].astype(bool)
        real_reference, real = reference_logits[0][keep], logits[0][keep]
        agree += int(accuracy.top1_agreement(real_reference, real).sum())
        kl_sum += float(accuracy.kl_divergence(real_reference, real).sum())
        positions += int(keep.sum())
        max_error = max(max_error, float(np.max(np.abs(real - real_reference))))
        squared += float(np.sum(np.square(real.astype(np.float64) - real_reference)))
        total += float(np.sum(real_reference, dtype=np.float64))
        total_squared += float(np.sum(np.square(real_reference.astype(np.float64))))
        reference_cache: dict[int, np.ndarray] = {}

        def reference(index: int, reference_cache=reference_cache) -> np.ndarray:
            if index not in reference_cache:
                reference_cache[index] = float_runner.interpreter.get_tensor(mapping[index]).astype(np.float64)
            return reference_cache[index]

        for index in activations:
            if index not in mapping:
                continue
            tensor = inspected.tensors[index]
            values = _dequantize(quantized_runner.interpreter.get_tensor(index), tensor)
            _accumulate(
                stats[index], values, reference(index), tensor, masked=mapping[index] in mask_scores, local=False
            )
        for op_index, (interpreter, runtime_inputs) in cutouts.runs.items():
            op = inspected.ops[op_index]
            for detail, source in zip(interpreter.get_input_details(), runtime_inputs):
                tensor = inspected.tensors[source]
                value = reference(source)
                fed = _quantize(value, tensor) if tensor.dtype in _QUANTIZED_DTYPES else value.astype(detail["dtype"])
                interpreter.set_tensor(detail["index"], fed.reshape(detail["shape"]))
            interpreter.invoke()
            for detail, output in zip(interpreter.get_output_details(), op.outputs):
                if output not in stats or output not in mapping:
                    continue
                tensor = inspected.tensors[output]
                values = _dequantize(interpreter.get_tensor(detail["index"]), tensor)
                _accumulate(
                    stats[output], values, reference(output), tensor, masked=mapping[output] in mask_scores, local=True
                )
        reference_cache.clear()
    logits_error = LogitsError(
        positions=positions,
        rmse=(squared / (positions * vocabulary_size)) ** 0.5,
        max_abs_error=max_error,
        top1_agreement=agree / positions,
        mean_kl=kl_sum / positions,
        reference_std=max(
            total_squared / (positions * vocabulary_size) - (total / (positions * vocabulary_size)) ** 2, 0.0
        )
        ** 0.5,
    )

    local_relative = {index: stats[index].local.relative() for index in activations if stats[index].local.count}
    op_shares: dict[int, float | None] = {}
    type_shares: dict[str, float | None] = {}
    meter = None
    if share_candidates or op_type_shares:
        meter = _ShareMeter(quantized, float_, mapping, windows, share_count, float_logits, quantized_logits)
    if share_candidates:
        scales = {index: inspected.tensors[index].quantization.scale[0] for index in activations}
        ranked_ops = _share_candidates(stats, producer, scales, share_candidates)
        for position, op_index in enumerate(ranked_ops):
            progress_lib.log(
                "quant_debug",
                f"share of op {op_index} ({inspected.ops[op_index].op}) [{position + 1}/{len(ranked_ops)}]",
                enabled=progress,
            )
            op_shares[op_index] = meter.share([op_index])
    type_counts = collections.Counter(producer[i].op for i in activations)
    if op_type_shares:
        for op_type in sorted(type_counts):
            if op_type in _CONVERTER_OPS:
                continue
            progress_lib.log("quant_debug", f"share of every {op_type}", enabled=progress)
            type_shares[op_type] = meter.share(
                [op.index for op in inspected.ops if op.op == op_type and any(t in stats for t in op.outputs)]
            )

    tensors = []
    for index in activations:
        tensor, op = inspected.tensors[index], producer[index]
        item = stats[index]
        scale = tensor.quantization.scale[0]
        note = ""
        if index not in mapping:
            note = "no float counterpart"
        elif op.index in cutouts.skipped:
            note = cutouts.skipped[op.index]
        accumulated = item.accumulated
        tensors.append(
            TensorError(
                tensor=tensor.name,
                index=index,
                op=op.op,
                op_index=op.index,
                dtype=tensor.dtype,
                shape=tensor.shape,
                scale=scale,
                zero_point=tensor.quantization.zero_point[0],
                float_min=item.minimum if accumulated.count else None,
                float_max=item.maximum if accumulated.count else None,
                clipped_fraction=item.clipped / accumulated.count if accumulated.count else None,
                accumulated_rmse_over_scale=(accumulated.rmse() / scale) if accumulated.count else None,
                accumulated_relative_rmse=accumulated.relative() if accumulated.count else None,
                local_rmse_over_scale=(item.local.rmse() / scale) if item.local.count else None,
                local_relative_rmse=local_relative.get(index),
                output_error_share=op_shares.get(op.index),
                note=note,
            )
        )
    tensors.sort(key=_tensor_rank)
    by_type: dict[str, list[TensorError]] = collections.defaultdict(list)
    for item in tensors:
        by_type[item.op].append(item)
    op_types = []
    for op_type, items in by_type.items():
        locals_ = [t.local_relative_rmse for t in items if t.local_relative_rmse is not None]
        op_types.append(
            OpTypeError(
                op=op_type,
                tensors=len(items),
                worst_local_relative_rmse=max(locals_) if locals_ else None,
                median_local_relative_rmse=float(np.median(locals_)) if locals_ else None,
                output_error_share=type_shares.get(op_type),
            )
        )
    op_types.sort(
        key=lambda row: (
            row.output_error_share is None,
            -(row.output_error_share or 0.0),
            -(row.worst_local_relative_rmse or 0.0),
        )
    )
    notes = [f"op {i} ({inspected.ops[i].op}): {reason}" for i, reason in sorted(cutouts.skipped.items())]
    if meter is not None:
        notes += sorted(set(meter.notes))
    return QuantDebugReport(
        float_model=float_.label,
        quantized_model=quantized.label,
        activation_dtype=collections.Counter(inspected.tensors[i].dtype for i in activations).most_common(1)[0][0],
        windows=count,
        share_windows=share_count,
        logits=logits_error,
        tensors=tuple(tensors),
        op_types=tuple(op_types),
        unmatched_tensors=tuple(inspected.tensors[i].name for i in activations if i not in mapping),
        notes=tuple(notes),
        seconds=round(time.perf_counter() - started, 2),
    )


def _share_candidates(
    stats: Mapping[int, _TensorStats], producer, scales: Mapping[int, float], count: int
) -> list[int]:
    """Ops to measure the share of, taken in turn from two rankings of local error.

    Relative RMSE finds tensors whose scale is too coarse for their values;
    RMSE in quantization steps finds clipping and broken kernels, whose
    relative error may be no larger.
    """
    eligible = {
        index: item
        for index, item in stats.items()
        if item.local.count
        and producer[index].op not in _CONVERTER_OPS
        and producer[index].op not in _DATA_MOVEMENT_OPS
    }
    by_relative = sorted(eligible, key=lambda i: -eligible[i].local.relative())
    by_steps = sorted(eligible, key=lambda i: -(eligible[i].local.rmse() / scales[i]))
    chosen: list[int] = []
    for pair in zip(by_relative, by_steps):
        for index in pair:
            op_index = producer[index].index
            if op_index not in chosen and len(chosen) < count:
                chosen.append(op_index)
    return chosen


def _tensor_rank(item: TensorError):
    # Measured shares first (largest first), then the largest local error.
    local = item.local_relative_rmse if item.local_relative_rmse is not None else -1.0
    if item.output_error_share is not None:
        return (0, -item.output_error_share, -local)
    return (1, 0.0, -local)


# --------------------------------------------------------------------------- command line


@dataclasses.dataclass(frozen=True)
class DebugPaths:
    """The files one debug run reads and writes."""

    name: str
    float_model: pathlib.Path
    quantized_model: pathlib.Path
    windows: pathlib.Path
    json: pathlib.Path
    markdown: pathlib.Path


def resolve_paths(
    model: str,
    mode: str,
    *,
    build_dir: str | os.PathLike = "build",
    float_model: str | os.PathLike | None = None,
    windows: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
) -> DebugPaths:
    """Finds the models and windows of a built model, or beside a `.tflite` path.

    A name reads `<build_dir>/<name>/<name>_<mode>.tflite`, its fp32 twin
    `<name>_fp32.tflite` and the evaluation windows `<name>_seq<N>_evaluation.npz`
    beside them; a `.tflite` path is the quantized model and the others are
    looked for in its folder. Reports go to `<out_dir>/<name>_<mode>_debug.{json,md}`
    (default: the quantized model's folder).

    Raises:
      ValueError: the mode has no quantized activations.
      FileNotFoundError: a model or the windows are missing (the message says how to make them).
    """
    from converter.core import modes  # pylint: disable=import-outside-toplevel

    parsed = modes.parse_mode(mode)
    if not parsed.needs_calibration:
        raise ValueError(
            f"Mode {parsed.value} has float activations; quantization debugging needs a mode "
            "with quantized activations: int8 or int16x8."
        )
    text = os.fspath(model)
    if text.endswith(".tflite"):
        quantized = pathlib.Path(text)
        stem = quantized.stem
        name = stem[: -len(parsed.value) - 1] if stem.endswith(f"_{parsed.value}") else stem
        folder = quantized.parent
        hint = f"Pass --float_model=<the fp32 .tflite of {name}>."
    else:
        name, folder = text, pathlib.Path(build_dir) / text
        quantized = folder / f"{name}_{parsed.value}.tflite"
        hint = f"Convert it first: make convert MODEL={name} MODE=fp32."
    if not quantized.is_file():
        raise FileNotFoundError(
            f"No quantized model at {str(quantized)!r}. Convert it first "
            f"(make convert MODEL={name} MODE={parsed.value}) or pass a .tflite path."
        )
    float_path = pathlib.Path(float_model) if float_model else folder / f"{name}_fp32.tflite"
    if not float_path.is_file():
        raise FileNotFoundError(f"No float model at {str(float_path)!r}. {hint}")
    if windows:
        windows_path = pathlib.Path(windows)
    else:
        seq_len = inspection.inspect_model(quantized).inputs["token_ids"].shape[-1]
        windows_path = folder / f"{name}_seq{seq_len}_evaluation.npz"
    if not windows_path.is_file():
        raise FileNotFoundError(
            f"No token windows at {str(windows_path)!r}. `make convert MODEL={name}` cuts "
            "them from text; or pass --windows=<windows.npz>."
        )
    target = pathlib.Path(out_dir) if out_dir else quantized.parent
    stem = f"{name}_{parsed.value}_debug"
    return DebugPaths(
        name=name,
        float_model=float_path,
        quantized_model=quantized,
        windows=windows_path,
        json=target / f"{stem}.json",
        markdown=target / f"{stem}.md",
    )
