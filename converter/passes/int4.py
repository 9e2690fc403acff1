"""Int4 weights with activations quantized on the fly, run by XNNPACK's `qd8-f32-qc4w` / `qb4w` kernels.

The TF converter cannot write INT4 tensors; Google's AI Edge Quantizer (AEQ)
can: per-channel scales, or blockwise fp16 scales over 32/64/128/256 input
channels, zero point 0. This pass takes the fp32 `.tflite` and

1. turns the constant-table GATHER of the token embedding into
   RESHAPE -> EMBEDDING_LOOKUP -> RESHAPE, the op AEQ quantizes (it leaves a
   GATHER table in float, 113 MB of SmolLM2's 135M parameters);
2. quantizes every FULLY_CONNECTED weight and the embedding table with AEQ
   (int4; the groups named in `int8` stay int8 per channel);
3. with `method="gptq"`, replaces AEQ's round-to-nearest int4 values by
   error-compensated ones (GPTQ, Frantar et al. 2023) with per-block clipped
   scales, from the Hessians `X^T X` of each FULLY_CONNECTED input measured
   on calibration windows, and writes them into AEQ's file in place: the
   same INT4 tensors and scale tensors AEQ laid out, new values.

Round-to-nearest int4 costs SmolLM2-135M +101 % perplexity at block 32 and
+1192 % per channel; GPTQ with clipped scales +14 % and +100 %
(docs/2026-12-02-int4.md). A block size must divide every input channel
count; `check_block_size` says which weight it does not.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from converter.common import progress as progress_lib
from converter.passes import selective
from converter.passes.result import SurgeryResult
from converter.tflite_file import inspection, writing

BLOCK_SIZES = (0, 32, 64, 128, 256)  # 0: one scale per output channel
METHODS = ("gptq", "rtn")
# Weight groups an int4 recipe may keep int8. `attention`: the FULLY_CONNECTEDs
# outside the MLP and the lm head (q, k, v and output projections).
INT8_CHOICES = ("attention", "mlp", "mlp_down", "logits", "embedding")
_TAG = "int4"
_CAPTURE_PREFIX = "int4_capture_"
_CLIP_FACTORS = np.linspace(1.0, 0.6, 17)
# Calibration rows per input channel below which a Hessian is not trusted (rank-deficient, GPTQ would fit noise).
_MIN_ROWS_PER_CHANNEL = 2
# Columns GPTQ updates together before it propagates the error to the rest
# (the "lazy batch" of the paper): the same result, fewer large matmuls.
_GPTQ_BATCH = 128


@dataclasses.dataclass(frozen=True)
class Int4Options:
    """How weights become int4.

    Attributes:
      block_size: input channels per scale (32, 64, 128, 256), or 0 for one
        scale per output channel.
      method: `gptq` (error-compensated, needs calibration windows) or `rtn`
        (AEQ's round to nearest).
      int8: groups whose weights stay int8 per channel: `attention`, `mlp`,
        `mlp_down`, `logits` (the lm head), `embedding` (the token table).
      damping: GPTQ's diagonal damping, as a fraction of the mean diagonal.
    """

    block_size: int = 32
    method: str = "gptq"
    int8: tuple[str, ...] = ()
    damping: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.block_size, bool) or self.block_size not in BLOCK_SIZES:
            raise ValueError(
                f"int4 block size {self.block_size!r} is not one LiteRT stores: use one of "
                f"{', '.join(map(str, BLOCK_SIZES[1:]))} or 0 (one scale per output channel)."
            )
        if self.method not in METHODS:
            raise ValueError(f"int4 method {self.method!r}: use one of {', '.join(METHODS)}.")
        unknown = [c for c in self.int8 if c not in INT8_CHOICES]
        if unknown:
            raise ValueError(f"int8 choice(s) {unknown} unknown in int4 recipes: use {', '.join(INT8_CHOICES)}.")
        if not 0 < self.damping < 1:
            raise ValueError(f"GPTQ damping must be in (0, 1), got {self.damping!r}.")

    @property
    def needs_calibration(self) -> bool:
        return self.method == "gptq"


# ---------------------------------------------------------------- the graph


def _constant(model_object, subgraph, tensor: int) -> bool:
    if tensor < 0:
        return False
    buffer = subgraph.tensors[tensor].buffer
    data = model_object.buffers[buffer].data if 0 < buffer < len(model_object.buffers) else None
    return data is not None and len(data) > 0


def _ops_of(model_object, subgraph, kind: str):
    for index, op in enumerate(subgraph.operators):
        if inspection.op_type_name(model_object, op.opcodeIndex) == kind:
            yield index, op


def embedding_lookups(model: bytes) -> SurgeryResult:
    """Rewrites each constant-table GATHER on axis 0 into RESHAPE -> EMBEDDING_LOOKUP -> RESHAPE, in every subgraph.

    EMBEDDING_LOOKUP reads the same `[vocab, dim]` table with flat int32 ids
    and, unlike GATHER, has kernels for int8 and int4 tables (bit-exact
    against the dequantized table on LiteRT 2.3). The table buffer stays
    shared between subgraphs.
    """
    fb = inspection.schema()
    model_object = inspection.load_model_object(model)
    rewritten = 0
    for index, subgraph in enumerate(model_object.subgraphs):
        operators = []
        for op in subgraph.operators:
            kind = inspection.op_type_name(model_object, op.opcodeIndex)
            options = op.builtinOptions
            table = subgraph.tensors[op.inputs[0]] if kind == "GATHER" else None
            if (
                table is None
                or not _constant(model_object, subgraph, op.inputs[0])
                or len(table.shape) != 2
                or options.axis != 0
                or options.batchDims != 0
            ):
                operators.append(op)
                continue
            ids, out = subgraph.tensors[op.inputs[1]], subgraph.tensors[op.outputs[0]]
            count = int(np.prod(ids.shape))
            flat_ids = _new_tensor(subgraph, inspection.decode_name(ids.name) + "/flat", [count], ids.type)
            rows = _new_tensor(
                subgraph, inspection.decode_name(out.name) + "/lookup", [count, int(table.shape[1])], out.type
            )
            ids_shape = writing.add_constant(
                model_object,
                subgraph,
                np.array([count], np.int32),
                name=f"sg{index}/lookup_ids_shape",
                tensor_type=fb.TensorType.INT32,
            )
            out_shape = writing.add_constant(
                model_object,
                subgraph,
                np.asarray(out.shape, np.int32),
                name=f"sg{index}/lookup_out_shape",
                tensor_type=fb.TensorType.INT32,
            )
            reshape = writing.opcode_at_least(model_object, fb.BuiltinOperator.RESHAPE, 1)
            lookup = writing.opcode_at_least(model_object, fb.BuiltinOperator.EMBEDDING_LOOKUP, 1)
            operators += [
                _reshape(reshape, op.inputs[1], ids_shape, flat_ids, [count]),
                _operator(lookup, [flat_ids, op.inputs[0]], [rows]),
                _reshape(reshape, rows, out_shape, op.outputs[0], list(out.shape)),
            ]
            rewritten += 1
        subgraph.operators = operators
    if not rewritten:
        return SurgeryResult(model, ())
    writing.prune_operator_codes(model_object)
    return SurgeryResult(
        writing.pack(model_object),
        (f"token embedding: {rewritten} GATHER -> EMBEDDING_LOOKUP, so its table can be quantized",),
    )


def _new_tensor(subgraph, name: str, shape: list[int], tensor_type: int) -> int:
    tensor = inspection.schema().TensorT()
    tensor.name, tensor.shape, tensor.type, tensor.buffer = name.encode(), shape, tensor_type, 0
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1


def _operator(opcode: int, inputs: list[int], outputs: list[int]):
    op = inspection.schema().OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, list(inputs), list(outputs)
    return op


def _reshape(opcode: int, source: int, shape_tensor: int, out: int, shape: list[int]):
    fb = inspection.schema()
    op = _operator(opcode, [source, shape_tensor], [out])
    op.builtinOptionsType = fb.BuiltinOptions.ReshapeOptions
    op.builtinOptions = fb.ReshapeOptionsT()
    op.builtinOptions.newShape = list(shape)
    return op


def fully_connected_weights(model: bytes | Any, *, subgraph: int = 0) -> dict[str, tuple[int, int, tuple[int, ...]]]:
    """Weight tensor name -> (input tensor, buffer, shape) of every FULLY_CONNECTED with a constant weight."""
    model_object = model if not isinstance(model, (bytes, bytearray)) else inspection.load_model_object(model)
    graph = model_object.subgraphs[subgraph]
    found = {}
    for _, op in _ops_of(model_object, graph, "FULLY_CONNECTED"):
        if _constant(model_object, graph, op.inputs[1]):
            weight = graph.tensors[op.inputs[1]]
            found[inspection.decode_name(weight.name)] = (int(op.inputs[0]), int(weight.buffer), tuple(weight.shape))
    return found


def check_block_size(model: bytes, block_size: int) -> None:
    """Raises ValueError naming the first FULLY_CONNECTED whose input channels `block_size` does not divide."""
    if not block_size:
        return
    for name, (_, _, shape) in fully_connected_weights(model).items():
        if shape[-1] % block_size:
            raise ValueError(
                f"int4 block size {block_size} does not divide the {shape[-1]} input channels of {name!r} "
                f"(weight {list(shape)}); pick a block size that divides every layer's input width "
                f"({', '.join(map(str, BLOCK_SIZES[1:]))}), or 0 for per-channel scales."
            )


# ---------------------------------------------------------------- Hessians


def capture_hessians(
    model: bytes,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    signature: str | None = None,
    positions: Sequence[np.ndarray] | None = None,
    num_threads: int = 2,
    progress: bool = True,
) -> dict[int, np.ndarray]:
    """`H = X^T X / n` of the input of every FULLY_CONNECTED, keyed by its weight's buffer, over calibration feeds.

    The inputs are made extra outputs of the signature, so XNNPACK runs the
    float model at full speed and still hands them over (LiteRT's
    preserve-all-tensors mode would need its reference kernels: 3.3 s per
    SmolLM2 window in the research runs).

    Args:
      model: the float `.tflite`.
      feeds: one dict per run, input name -> array, for `signature`.
      signature: the signature to run (a prefill for a generation model);
        None: the model's only one.
      positions: per feed, a boolean mask of the rows (token positions) that
        count; None: all of them.
      num_threads: interpreter threads.
      progress: show a progress bar.
    """
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel

    fb = inspection.schema()
    model_object = inspection.load_model_object(model)
    names = [inspection.decode_name(s.signatureKey) for s in model_object.signatureDefs or []]
    if signature is None and len(names) != 1:
        raise ValueError(f"The model has signatures {names}; name the one to calibrate on.")
    key = signature or names[0]
    if key not in names:
        raise ValueError(f"No signature {key!r} in the model; it has {names}.")
    definition = model_object.signatureDefs[names.index(key)]
    weights = fully_connected_weights(model_object, subgraph=definition.subgraphIndex)
    inputs = sorted({tensor for tensor, _, _ in weights.values()})
    graph = model_object.subgraphs[definition.subgraphIndex]
    for tensor in inputs:
        entry = fb.TensorMapT()
        entry.name, entry.tensorIndex = f"{_CAPTURE_PREFIX}{tensor}".encode(), tensor
        definition.outputs.append(entry)
        if tensor not in graph.outputs:
            graph.outputs = [*graph.outputs, tensor]
    interpreter = litert.Interpreter(model_content=writing.pack(model_object), num_threads=num_threads)
    runner = interpreter.get_signature_runner(key)
    sums = {tensor: 0.0 for tensor in inputs}
    rows = dict.fromkeys(inputs, 0)
    bar = progress_lib.progress_bar(
        list(enumerate(feeds)),
        tag=_TAG,
        description="Hessians of FULLY_CONNECTED inputs",
        enabled=progress,
        unit="window",
    )
    for index, feed in bar:
        outputs = runner(**feed)
        keep = None if positions is None else np.asarray(positions[index], bool).reshape(-1)
        for tensor in inputs:
            x = outputs[f"{_CAPTURE_PREFIX}{tensor}"]
            x = x.reshape(-1, x.shape[-1]).astype(np.float64)
            if keep is not None and len(keep) == len(x):
                x = x[keep]
            sums[tensor] = sums[tensor] + x.T @ x
            rows[tensor] += len(x)
    # One array per input, shared by the weights that read it (apply_gptq solves those stacked).
    by_tensor = {t: (sums[t] / rows[t]).astype(np.float32) for t in inputs if rows[t]}
    # A prefill's lm head sees one row (the last position) per feed: too few to estimate an
    # [in, in] Hessian, so that weight is left to rounding with clipped scales.
    return {
        buffer: by_tensor[tensor]
        for tensor, buffer, shape in weights.values()
        if rows[tensor] >= _MIN_ROWS_PER_CHANNEL * shape[-1]
    }


def transfer_hessians(source: bytes, hessians: Mapping[int, np.ndarray], target: bytes) -> dict[int, np.ndarray]:
    """Hessians measured on `source` (keyed by its weight buffers), keyed by the buffers of `target` holding the same
    float weights byte for byte (a generation model and the fixed-window model of one Keras model)."""
    import hashlib  # pylint: disable=import-outside-toplevel

    def digests(model: bytes) -> dict[int, str]:
        model_object = inspection.load_model_object(model)
        return {
            buffer: hashlib.sha256(bytes(model_object.buffers[buffer].data)).hexdigest()
            for _, buffer, _ in fully_connected_weights(model_object).values()
        }

    by_digest = {digests_of: hessians[buffer] for buffer, digests_of in digests(source).items() if buffer in hessians}
    target_object = inspection.load_model_object(target)
    found = {}
    for index in range(len(target_object.subgraphs)):
        for _, buffer, _ in fully_connected_weights(target_object, subgraph=index).values():
            digest = hashlib.sha256(bytes(target_object.buffers[buffer].data)).hexdigest()
            if digest in by_digest:
                found[buffer] = by_digest[digest]
    return found


# ---------------------------------------------------------------- int4 values


def _block_view(weight: np.ndarray, block_size: int) -> np.ndarray:
    rows, columns = weight.shape
    return weight.reshape(rows, -1, block_size) if block_size else weight.reshape(rows, 1, columns)


def _bf16(values: np.ndarray) -> np.ndarray:
    # AEQ rounds block scales to bfloat16 precision before storing them as fp16.
    import ml_dtypes  # pylint: disable=import-outside-toplevel

    return values.astype(ml_dtypes.bfloat16).astype(np.float32)


def clipped_scales(weight: np.ndarray, block_size: int, h_diagonal: np.ndarray | None = None) -> np.ndarray:
    """Per output channel (block 0) or per block, the scale `c * max|w| / 7` whose rounding error is smallest.

    `c` runs over 17 factors from 1.0 to 0.6; the error of a block is
    weighted by the Hessian diagonal (how much each input channel matters).

    Returns:
      `[out]` scales (block 0) or `[out, in / block_size]`.
    """
    blocks = _block_view(weight, block_size)
    weights = 1.0 if h_diagonal is None else _block_view(h_diagonal[None, :], block_size)
    peak = np.abs(blocks).max(-1)
    best, best_error = None, None
    for factor in _CLIP_FACTORS:
        scale = np.maximum(factor * peak / 7, 1e-9)
        if block_size:
            scale = _bf16(scale)
        q = np.clip(np.rint(blocks / scale[..., None]), -8, 7)
        error = (((q * scale[..., None] - blocks) ** 2) * weights).sum(-1)
        if best is None:
            best, best_error = scale, error
        else:
            better = error < best_error
            best, best_error = np.where(better, scale, best), np.where(better, error, best_error)
    return (best if block_size else best[:, 0]).astype(np.float32)


def _column_scales(scales: np.ndarray, block_size: int, columns: int) -> np.ndarray:
    return np.repeat(scales, block_size, axis=1) if block_size else np.repeat(scales[:, None], columns, axis=1)


def gptq(
    weight: np.ndarray, hessian: np.ndarray, scales: np.ndarray, *, block_size: int, damping: float = 0.01
) -> np.ndarray:
    """GPTQ with fixed scales: int4 values in [-8, 7] whose error the later columns compensate.

    Columns go in order of decreasing Hessian diagonal ("act order"); each
    column's rounding error is spread over the columns not yet quantized
    through the inverse Hessian's Cholesky factor. Rows are independent, so
    weights reading the same input (q/k/v, gate/up) can be passed stacked.

    Args:
      weight: `[out, in]` float weight.
      hessian: `[in, in]` `X^T X / n` of its input.
      scales: from `clipped_scales`.
      block_size: as for `scales`.
      damping: added to the diagonal, as a fraction of its mean.

    Returns:
      `[out, in]` int8 array of int4 values.
    """
    work = weight.astype(np.float32).copy()
    h = hessian.astype(np.float64).copy()
    columns = work.shape[1]
    column_scales = _column_scales(scales, block_size, columns)
    dead = np.diag(h) == 0
    h[dead, dead] = 1
    work[:, dead] = 0
    order = np.argsort(-np.diag(h), kind="stable")
    work, column_scales, h = work[:, order], column_scales[:, order], h[order][:, order]
    h[np.diag_indices(columns)] += damping * np.mean(np.diag(h))
    inverse = np.linalg.cholesky(np.linalg.inv(h)).T.astype(np.float32)
    q = np.zeros(work.shape, np.int8)
    for start in range(0, columns, _GPTQ_BATCH):
        stop = min(start + _GPTQ_BATCH, columns)
        batch = work[:, start:stop].copy()
        errors = np.zeros_like(batch)
        local = inverse[start:stop, start:stop]
        for i in range(stop - start):
            column, scale = batch[:, i], column_scales[:, start + i]
            values = np.clip(np.rint(column / scale), -8, 7)
            q[:, start + i] = values
            error = (column - values * scale) / local[i, i]
            batch[:, i:] -= np.outer(error, local[i, i:])
            errors[:, i] = error
        work[:, stop:] -= errors @ inverse[start:stop, stop:]
    return q[:, np.argsort(order)]


# ---------------------------------------------------------------- the file


@dataclasses.dataclass(frozen=True)
class Int4Tensor:
    """An INT4 weight in a `.tflite` file: where its values and scales are."""

    name: str
    op: str
    shape: tuple[int, ...]
    buffer: int
    data: tuple[int, int]  # file offset, bytes
    block_size: int  # 0: per-channel
    block_scales: tuple[tuple[int, int], ...]  # fp16 [out, in / block] buffers (offset, bytes), one per tensor
    channel_scales: tuple[tuple[int, int], ...]  # float32 scale vectors (offset, count), one per tensor
    names: tuple[tuple[int, str], ...] = ()  # (subgraph, tensor name) of every tensor on the buffer


def _buffer_span(model, index: int) -> tuple[int, int] | None:
    buffer = model.Buffers(index)
    if buffer.Offset() > 1:  # stored after the flatbuffer, as AEQ writes large models
        return int(buffer.Offset()), int(buffer.Size())
    field = buffer._tab.Offset(4)  # pylint: disable=protected-access
    if field == 0:
        return None
    return buffer._tab.Vector(field), buffer._tab.VectorLen(field)  # pylint: disable=protected-access


def int4_tensors(model: bytes | bytearray) -> list[Int4Tensor]:
    """Every INT4 weight of FULLY_CONNECTED and EMBEDDING_LOOKUP ops, once per buffer, with its scale locations."""
    fb = inspection.schema()
    root = fb.Model.GetRootAs(model, 0)
    codes = [
        max(root.OperatorCodes(i).BuiltinCode(), root.OperatorCodes(i).DeprecatedBuiltinCode())
        for i in range(root.OperatorCodesLength())
    ]
    op_names = inspection.enum_names(fb.BuiltinOperator)
    found: dict[int, dict[str, Any]] = {}
    for s in range(root.SubgraphsLength()):
        graph = root.Subgraphs(s)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            kind = op_names.get(codes[op.OpcodeIndex()], "")
            if kind not in ("FULLY_CONNECTED", "EMBEDDING_LOOKUP") or op.InputsLength() < 2:
                continue
            tensor = graph.Tensors(op.Inputs(1))
            if tensor.Type() != fb.TensorType.INT4:
                continue
            entry = found.setdefault(
                tensor.Buffer(),
                {
                    "name": inspection.decode_name(tensor.Name()),
                    "op": kind,
                    "shape": tuple(int(d) for d in tensor.ShapeAsNumpy()),
                    "data": _buffer_span(root, tensor.Buffer()),
                    "block_size": 0,
                    "block_scales": [],
                    "channel_scales": [],
                    "names": [],
                },
            )
            entry["names"].append((s, inspection.decode_name(tensor.Name())))
            if kind == "FULLY_CONNECTED" and entry["op"] != kind:
                # A tied table that an lm head reads too: GPTQ solves it as that FULLY_CONNECTED's weight.
                entry["name"], entry["op"] = inspection.decode_name(tensor.Name()), kind
            quantization = tensor.Quantization()
            if quantization is None:
                continue
            if quantization.DetailsType() == fb.QuantizationDetails.BlockwiseQuantization:
                details = fb.BlockwiseQuantization()
                details.Init(quantization.Details().Bytes, quantization.Details().Pos)
                entry["block_size"] = int(details.BlockSize())
                span = _buffer_span(root, graph.Tensors(details.Scales()).Buffer())
                if span not in entry["block_scales"]:
                    entry["block_scales"].append(span)
            elif quantization.ScaleLength() > 1:
                field = quantization._tab.Offset(8)  # pylint: disable=protected-access  # the `scale` vector
                span = (quantization._tab.Vector(field), quantization._tab.VectorLen(field))  # pylint: disable=protected-access
                if span not in entry["channel_scales"]:
                    entry["channel_scales"].append(span)
    return [
        Int4Tensor(
            name=e["name"],
            op=e["op"],
            shape=e["shape"],
            buffer=b,
            data=e["data"],
            block_size=e["block_size"],
            block_scales=tuple(e["block_scales"]),
            channel_scales=tuple(e["channel_scales"]),
            names=tuple(e["names"]),
        )
        for b, e in found.items()
    ]


def pack_int4(values: np.ndarray) -> bytes:
    """Two int4 values per byte, the first in the low nibble (LiteRT's layout)."""
    nibbles = (np.asarray(values, np.int8).reshape(-1) & 0x0F).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.concatenate([nibbles, np.zeros(1, np.uint8)])
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_int4(raw: bytes, shape: Sequence[int]) -> np.ndarray:
    """The inverse of `pack_int4`: int8 values in [-8, 7]."""
    data = np.frombuffer(raw, np.uint8)
    values = np.stack([data & 0x0F, data >> 4], -1).reshape(-1)[: int(np.prod(shape))].astype(np.int8)
    return np.where(values > 7, values - 16, values).astype(np.int8).reshape(tuple(shape))


def read_int4(model: bytes | bytearray, tensor: Int4Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(int4 values, scales) of a tensor: `[out]` float32 or `[out, in / block]` fp16-valued float32 scales."""
    offset, size = tensor.data
    values = unpack_int4(bytes(model[offset : offset + size]), tensor.shape)
    if tensor.block_size:
        offset, size = tensor.block_scales[0]
        scales = np.frombuffer(bytes(model[offset : offset + size]), np.float16).astype(np.float32)
        return values, scales.reshape(tensor.shape[0], -1)
    offset, count = tensor.channel_scales[0]
    return values, np.frombuffer(bytes(model[offset : offset + 4 * count]), np.float32).copy()


def dequantize(values: np.ndarray, scales: np.ndarray, block_size: int) -> np.ndarray:
    """The float weight int4 `values` and their scales stand for."""
    return (_block_view(values.astype(np.float32), block_size) * scales.reshape(values.shape[0], -1, 1)).reshape(
        values.shape
    )


def write_int4(model: bytearray, tensor: Int4Tensor, values: np.ndarray, scales: np.ndarray) -> None:
    """Overwrites a tensor's int4 values and every copy of its scales in place (same sizes, same layout)."""
    offset, size = tensor.data
    raw = pack_int4(values)
    if len(raw) != size:
        raise ValueError(f"{tensor.name}: {len(raw)} int4 bytes for a {size}-byte buffer.")
    model[offset : offset + size] = raw
    if tensor.block_size:
        raw = np.asarray(scales, np.float16).tobytes()
        spans = tensor.block_scales
    else:
        raw = np.asarray(scales, np.float32).reshape(-1).tobytes()
        spans = tuple((offset, 4 * count) for offset, count in tensor.channel_scales)
    for offset, size in spans:
        if len(raw) != size:
            raise ValueError(f"{tensor.name}: {len(raw)} scale bytes for a {size}-byte scale buffer.")
        model[offset : offset + size] = raw


# ---------------------------------------------------------------- AEQ


def _scope_regex(names: Iterable[str]) -> str:
    # AEQ matches a regex against each op's output names joined by ';' with a trailing ';'.
    return "|".join(f"(^|;){re.escape(name)};" for name in sorted(set(names)))


def int8_scopes(model_object, choices: Sequence[str]) -> dict[str, set[str]]:
    """Choice -> output names (all subgraphs) of the FULLY_CONNECTED / EMBEDDING_LOOKUP ops that stay int8.

    Groups are found by graph pattern in the subgraph of each op; an op is
    int8 when its weight buffer is, so every signature sharing it agrees.
    """
    buffers: dict[str, set[int]] = collections.defaultdict(set)
    for index, graph in enumerate(model_object.subgraphs):
        selected = selective.select_ops(model_object, ["mlp", "mlp_down", "logits"], subgraph=index)
        fully_connected = {
            i
            for i, op in _ops_of(model_object, graph, "FULLY_CONNECTED")
            if _constant(model_object, graph, op.inputs[1])
        }
        ops = {name: selected[name] & fully_connected for name in ("mlp", "mlp_down", "logits")}
        ops["attention"] = fully_connected - ops["mlp"] - ops["logits"]
        ops["embedding"] = {i for i, _ in _ops_of(model_object, graph, "EMBEDDING_LOOKUP")}
        for choice in choices:
            buffers[choice].update(int(graph.tensors[graph.operators[i].inputs[1]].buffer) for i in ops[choice])
    scopes: dict[str, set[str]] = {}
    for choice in choices:
        names = set()
        for graph in model_object.subgraphs:
            for op in graph.operators:
                kind = inspection.op_type_name(model_object, op.opcodeIndex)
                weight = op.inputs[1] if kind in ("FULLY_CONNECTED", "EMBEDDING_LOOKUP") and len(op.inputs) > 1 else -1
                if weight >= 0 and int(graph.tensors[weight].buffer) in buffers[choice]:
                    names.update(inspection.decode_name(graph.tensors[t].name) for t in op.outputs)
        scopes[choice] = names
    return scopes


def quantize_with_aeq(
    model: bytes, options: Int4Options, *, progress: bool = False
) -> tuple[bytes, dict[str, set[str]]]:
    """AEQ's dynamic-range int4 (and int8 for `options.int8`) of FULLY_CONNECTED and EMBEDDING_LOOKUP.

    Returns:
      The quantized model and, per int8 choice, the op output names it kept int8.

    Raises:
      RuntimeError: AEQ could not read or quantize the model (its message kept).
    """
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager  # pylint: disable=import-outside-toplevel

    granularity = (
        qtyping.QuantGranularity[f"BLOCKWISE_{options.block_size}"]
        if options.block_size
        else qtyping.QuantGranularity.CHANNELWISE
    )
    manager = recipe_manager.RecipeManager()
    for op_name in ("FULLY_CONNECTED", "EMBEDDING_LOOKUP"):
        manager.add_dynamic_config(
            regex=".*", operation_name=qtyping.TFLOperationName[op_name], num_bits=4, granularity=granularity
        )
    scopes = int8_scopes(inspection.load_model_object(model), options.int8) if options.int8 else {}
    for choice, names in scopes.items():
        if not names:
            raise ValueError(f"int8 choice {choice!r} selects no weight of this model; leave it out.")
        for op_name in ("FULLY_CONNECTED", "EMBEDDING_LOOKUP"):
            # Later configs win in AEQ's recipe manager.
            manager.add_dynamic_config(
                regex=_scope_regex(names),
                operation_name=qtyping.TFLOperationName[op_name],
                num_bits=8,
                granularity=qtyping.QuantGranularity.CHANNELWISE,
            )
    try:
        result = quantizer.Quantizer(bytearray(model), manager.get_quantization_recipe()).quantize(
            enable_progress_bar=progress, enable_progress_report=False
        )
    except Exception as error:
        raise RuntimeError(
            f"ai-edge-quantizer could not quantize the model to int4: {error}. Check that the fp32 model loads "
            "in LiteRT, or convert with MODE=dynamic."
        ) from error
    return bytes(result.quantized_model), scopes


# ---------------------------------------------------------------- the pass


@dataclasses.dataclass(frozen=True)
class GptqStats:
    """How close the GPTQ weights are to the float ones: means over all rewritten weights."""

    weights: int
    rounded: int  # int4 weights without a Hessian (embedding tables, a prefill's lm head): clipped rounding
    relative_weight_error: float  # rms(W_q - W) / rms(W)
    relative_output_error: float  # E H E^T / W H W^T: the error of the layer's output on calibration inputs
    seconds: float


def apply_gptq(
    quantized: bytes,
    float_model: bytes,
    hessians: Mapping[int, np.ndarray],
    options: Int4Options,
    *,
    progress: bool = True,
) -> tuple[bytes, GptqStats]:
    """Replaces the int4 FULLY_CONNECTED values of AEQ's `quantized` file by clip-searched GPTQ ones.

    Weights that read the same input share one Hessian and are solved
    stacked. The embedding table (no Hessian) gets the clipped scales with
    plain rounding.
    """
    started = time.perf_counter()
    float_object = inspection.load_model_object(float_model)
    float_buffers: dict[tuple[int, str], int] = {}
    float_weights: dict[int, np.ndarray] = {}
    for index, graph in enumerate(float_object.subgraphs):
        for op in graph.operators:
            kind = inspection.op_type_name(float_object, op.opcodeIndex)
            if kind in ("FULLY_CONNECTED", "EMBEDDING_LOOKUP") and _constant(float_object, graph, op.inputs[1]):
                tensor = graph.tensors[op.inputs[1]]
                float_buffers[(index, inspection.decode_name(tensor.name))] = tensor.buffer
                data = np.frombuffer(float_object.buffers[tensor.buffer].data, np.float32)
                float_weights.setdefault(tensor.buffer, data.reshape(tuple(tensor.shape)))
    patched = bytearray(quantized)
    # AEQ keeps tensor names but renumbers buffers: a weight is found again by (subgraph, name).
    originals = {}
    for tensor in int4_tensors(patched):
        if tensor.block_size != options.block_size:
            continue
        found = next((float_buffers[n] for n in tensor.names if n in float_buffers), None)
        if found is None:
            raise ValueError(f"int4 weight {tensor.name!r} has no float original in the fp32 model.")
        originals[tensor] = found
    groups: dict[int, list[Int4Tensor]] = collections.defaultdict(list)
    tables = []
    for tensor, buffer in originals.items():
        hessian = hessians.get(buffer) if tensor.op == "FULLY_CONNECTED" else None
        if hessian is None:
            tables.append(tensor)
        else:
            groups[id(hessian)].append(tensor)
    by_id = {id(h): h for h in hessians.values()}
    weight_errors, output_errors = [], []
    work = list(groups.items())
    for key, members in progress_lib.progress_bar(work, tag=_TAG, description="GPTQ", enabled=progress, unit="input"):
        hessian = by_id[key]
        stacked = np.concatenate([float_weights[originals[t]] for t in members])
        scales = clipped_scales(stacked, options.block_size, np.diag(hessian))
        values = gptq(stacked, hessian, scales, block_size=options.block_size, damping=options.damping)
        error = dequantize(values, scales, options.block_size) - stacked
        weight_errors.append(float(np.sqrt((error**2).mean() / (stacked**2).mean())))
        output_errors.append(
            float(np.einsum("oi,ij,oj->", error, hessian, error) / np.einsum("oi,ij,oj->", stacked, hessian, stacked))
        )
        row = 0
        for tensor in members:
            rows = tensor.shape[0]
            write_int4(patched, tensor, values[row : row + rows], scales[row : row + rows])
            row += rows
    for tensor in tables:
        weight = float_weights[originals[tensor]]
        scales = clipped_scales(weight, options.block_size)
        values = np.clip(np.rint(weight / _column_scales(scales, options.block_size, weight.shape[1])), -8, 7)
        write_int4(patched, tensor, values.astype(np.int8), scales)
    stats = GptqStats(
        weights=sum(len(m) for m in groups.values()),
        rounded=len(tables),
        relative_weight_error=round(float(np.mean(weight_errors)), 5) if weight_errors else 0.0,
        relative_output_error=round(float(np.mean(output_errors)), 6) if output_errors else 0.0,
        seconds=round(time.perf_counter() - started, 1),
    )
    return bytes(patched), stats


def quantize(
    model: bytes,
    options: Int4Options,
    *,
    feeds: Sequence[Mapping[str, np.ndarray]] = (),
    positions: Sequence[np.ndarray] | None = None,
    signature: str | None = None,
    hessians: Mapping[int, np.ndarray] | None = None,
    progress: bool = True,
) -> SurgeryResult:
    """The whole pass on an fp32 `.tflite`: embedding lookup, AEQ int4 (and int8 groups), GPTQ values.

    Args:
      model: the fp32 model.
      options: block size, method, int8 groups.
      feeds: calibration inputs of `signature` (required by GPTQ).
      positions: per feed, the token positions that count (padding off).
      signature: the signature the feeds are for (a prefill bucket of a
        generation model); None: the only one.
      hessians: Hessians already measured, keyed by `model`'s weight buffers
        (`capture_hessians`, `transfer_hessians`); then `feeds` only count.
      progress: progress bars.

    Raises:
      ValueError: a block size that does not divide an input width; GPTQ
        without calibration feeds; an int8 group the model does not have.
    """
    check_block_size(model, options.block_size)
    if options.needs_calibration and not feeds and hessians is None:
        raise ValueError("GPTQ int4 needs calibration windows: pass calibration=, or use the rtn method.")
    lookups = embedding_lookups(model)
    float_model = lookups.model
    changes = list(lookups.changes)
    progress_lib.log(_TAG, "quantizing weights with ai-edge-quantizer", enabled=progress)
    quantized, scopes = quantize_with_aeq(float_model, options, progress=progress)
    layout = "per channel" if not options.block_size else f"blocks of {options.block_size}"
    tensors = int4_tensors(quantized)
    counts = collections.Counter(t.op for t in tensors)
    changes.append(
        f"int4 weights ({layout}, ai-edge-quantizer): "
        + ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
        + "".join(f"; {choice} int8 ({len(names)} ops)" for choice, names in scopes.items())
    )
    if options.method == "gptq":
        if hessians is None:
            hessians = capture_hessians(float_model, feeds, signature=signature, positions=positions, progress=progress)
        quantized, stats = apply_gptq(quantized, float_model, hessians, options, progress=progress)
        changes.append(
            f"GPTQ int4 values with clipped scales from {len(feeds)} calibration windows: {stats.weights} weights "
            f"({stats.rounded} without a Hessian rounded), "
            f"relative output error {stats.relative_output_error:.4f} (weight rms {stats.relative_weight_error:.3f}), "
            f"{stats.seconds:.0f} s"
        )
    return SurgeryResult(quantized, tuple(changes))
