"""Runs a set of ops of a quantized `.tflite` model in float, tensors between them kept float.

`graph_surgery.run_ops_in_float` puts a DEQUANTIZE before and a QUANTIZE after
each op it moves to float, so every tensor keeps its calibrated scale. That
cannot remove an error that lives in a tensor's scale (a range taken by a few
outliers). A *region* goes further: every quantized tensor that one region op
writes and another reads stays float between them; only tensors entering the
region are dequantized and only tensors read outside it (or returned) are
quantized again, with their original scale and zero point.

An op of the region may also be made *exact*: replaced by its twin from the
float model the quantized one was converted from (float weights, float
arithmetic). `quant_debug` uses that to measure how much of the output error
one op causes.

Only `ai_edge_litert`'s schema, `flatbuffers` and numpy are needed.
"""

from __future__ import annotations

import collections
from typing import Collection, Mapping

import numpy as np

from converter import graph_surgery, inspection

# Ops that only convert between float and integer: inside a region they are
# rewired, never run in float themselves.
_QUANTIZE, _DEQUANTIZE = "QUANTIZE", "DEQUANTIZE"

_NUMPY_TYPES = {
    "INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
}


def _type_names() -> dict[int, str]:
    return inspection._enum_names(inspection._schema().TensorType)  # pylint: disable=protected-access


def _is_constant(model_object, tensor) -> bool:
    if tensor.buffer <= 0 or tensor.buffer >= len(model_object.buffers):
        return False
    data = model_object.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _has_scale(tensor) -> bool:
    q = tensor.quantization
    return q is not None and q.scale is not None and len(q.scale) > 0


def dequantized_constant(model_object, tensor) -> np.ndarray:
    """The real values of a quantized constant (per-tensor or per-channel).

    Raises:
      ValueError: the tensor's type cannot be dequantized here (e.g. packed int4).
    """
    type_name = _type_names()[tensor.type]
    if type_name not in _NUMPY_TYPES:
        raise ValueError(f"cannot dequantize a constant of type {type_name}")
    shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else ()
    data = np.frombuffer(bytes(model_object.buffers[tensor.buffer].data), _NUMPY_TYPES[type_name])
    values = data.reshape(shape).astype(np.float64)
    q = tensor.quantization
    scale = np.asarray(q.scale, dtype=np.float64)
    zero_point = np.asarray(q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0] * scale.size,
                            dtype=np.float64)
    if scale.size > 1:
        # Per-channel: one scale along quantizedDimension.
        axis_shape = [1] * values.ndim
        axis_shape[int(q.quantizedDimension)] = scale.size
        scale, zero_point = scale.reshape(axis_shape), zero_point.reshape(axis_shape)
    return ((values - zero_point) * scale).astype(np.float32)


class _Rewriter:
    """Builds the new operator list of subgraph 0; one instance per rewrite."""

    def __init__(self, model_object, float_object, float_to_quantized):
        schema = inspection._schema()  # pylint: disable=protected-access
        self.schema = schema
        self.model = model_object
        self.subgraph = model_object.subgraphs[0]
        self.float_object = float_object
        self.float_to_quantized = float_to_quantized or {}
        self.quantized_types = {schema.TensorType.INT8, schema.TensorType.INT16, schema.TensorType.UINT8}
        self.twins: dict[int, int] = {}  # quantized tensor written in the region -> its float twin
        self.dequantized: dict[int, int] = {}  # quantized tensor entering the region -> DEQUANTIZE output
        self.float_constants: dict[int, int] = {}  # quantized constant -> float constant tensor
        self.copied_constants: dict[int, int] = {}  # float-model constant -> its copy in this model
        self.aliases: dict[int, int] = {}  # output of a removed DEQUANTIZE -> the float twin it read
        self.ops: list = []

    def _is_quantized_activation(self, index: int) -> bool:
        tensor = self.subgraph.tensors[index]
        return tensor.type in self.quantized_types and not _is_constant(self.model, tensor)

    def _new_tensor(self, name: str, shape, *, shape_signature=None, data: np.ndarray | None = None) -> int:
        tensor = self.schema.TensorT()
        tensor.name = name
        tensor.shape = shape
        tensor.shapeSignature = shape_signature
        tensor.type = self.schema.TensorType.FLOAT32
        tensor.buffer = 0
        if data is not None:
            buffer = self.schema.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data, dtype=np.float32).tobytes(), dtype=np.uint8)
            self.model.buffers.append(buffer)
            tensor.buffer = len(self.model.buffers) - 1
        self.subgraph.tensors.append(tensor)
        return len(self.subgraph.tensors) - 1

    def _converter_op(self, builtin_name: str, source: int, target: int, quantized: int):
        schema = self.schema
        op = schema.OperatorT()
        version = 3 if self.subgraph.tensors[quantized].type == schema.TensorType.INT16 else 2
        op.opcodeIndex = graph_surgery._opcode_index(  # pylint: disable=protected-access
            self.model, getattr(schema.BuiltinOperator, builtin_name), version
        )
        op.inputs, op.outputs = [source], [target]
        return op

    def float_input(self, index: int) -> int:
        """The float tensor a region op reads in place of `index`."""
        if index < 0:
            return index
        index = self.aliases.get(index, index)
        if index in self.twins:
            return self.twins[index]
        tensor = self.subgraph.tensors[index]
        if _is_constant(self.model, tensor):
            if not _has_scale(tensor) or tensor.type == self.schema.TensorType.FLOAT32:
                return index
            if index not in self.float_constants:
                self.float_constants[index] = self._new_tensor(
                    inspection._decode(tensor.name) + "/dequantized",  # pylint: disable=protected-access
                    tensor.shape, data=dequantized_constant(self.model, tensor),
                )
            return self.float_constants[index]
        if tensor.type not in self.quantized_types:
            return index
        if index not in self.dequantized:
            twin = graph_surgery._float_twin(self.schema, self.subgraph, index)  # pylint: disable=protected-access
            self.ops.append(self._converter_op(_DEQUANTIZE, index, twin, index))
            self.dequantized[index] = twin
        return self.dequantized[index]

    def exact_inputs(self, float_op) -> list[int] | None:
        """Inputs for the float model's op: its constants copied, its activations mapped here."""
        float_subgraph = self.float_object.subgraphs[0]
        inputs = []
        for index in float_op.inputs:
            if index < 0:
                inputs.append(-1)
                continue
            tensor = float_subgraph.tensors[index]
            if _is_constant(self.float_object, tensor):
                if index not in self.copied_constants:
                    buffer = self.float_object.buffers[tensor.buffer]
                    copy = self.schema.TensorT()
                    copy.name = inspection._decode(tensor.name) + "/exact"  # pylint: disable=protected-access
                    copy.shape, copy.type, copy.quantization = tensor.shape, tensor.type, tensor.quantization
                    self.model.buffers.append(buffer)  # read-only: shared with the float model object
                    copy.buffer = len(self.model.buffers) - 1
                    self.subgraph.tensors.append(copy)
                    self.copied_constants[index] = len(self.subgraph.tensors) - 1
                inputs.append(self.copied_constants[index])
            elif index in self.float_to_quantized:
                inputs.append(self.float_input(self.float_to_quantized[index]))
            else:
                return None
        return inputs

    def float_outputs(self, outputs) -> list[int]:
        result = []
        for index in outputs:
            if index >= 0 and self.subgraph.tensors[index].type in self.quantized_types:
                self.twins[index] = graph_surgery._float_twin(self.schema, self.subgraph, index)  # pylint: disable=protected-access
                result.append(self.twins[index])
            else:
                result.append(index)
        return result


def run_region_in_float(
    model_object,
    region: Collection[int],
    *,
    exact: Mapping[int, int] | None = None,
    float_object=None,
    float_to_quantized: Mapping[int, int] | None = None,
) -> list[str]:
    """Rewrites subgraph 0 of `model_object` in place so that the ops in `region` run in float.

    Args:
      model_object: a quantized model as `schema_py_generated.ModelT`
        (`inspection.load_model_object`); modified in place.
      region: indices of the ops (in subgraph 0's execution order) to run in float.
      exact: quantized op index -> float model op index, for region ops to be
        replaced by their float twin (float weights and options).
      float_object: the float model (`ModelT`) that `exact` refers to.
      float_to_quantized: float model tensor index -> quantized model tensor
        index, for the activations an exact op reads.

    Returns:
      One line per op that could not be made exact (it ran in float with its
      dequantized weights instead).
    """
    exact = dict(exact or {})
    if exact and float_object is None:
        raise ValueError("exact ops need the float model (float_object).")
    rewriter = _Rewriter(model_object, float_object, float_to_quantized)
    subgraph = rewriter.subgraph
    operators = list(subgraph.operators)
    region = set(region)
    readers: dict[int, list[int]] = collections.defaultdict(list)
    for position, op in enumerate(operators):
        for tensor in op.inputs:
            if tensor >= 0:
                readers[tensor].append(position)
    graph_outputs = {int(t) for t in (subgraph.outputs if subgraph.outputs is not None else [])}
    op_type = lambda op: inspection.op_type_name(model_object, op.opcodeIndex)  # noqa: E731

    def reads_in_region(reader: int) -> bool:
        # A DEQUANTIZE that produces a graph output is kept: the signature points at its tensor.
        op = operators[reader]
        if reader not in region:
            return False
        return op_type(op) != _DEQUANTIZE or op.outputs[0] not in graph_outputs

    notes = []
    for position, op in enumerate(operators):
        name = op_type(op)
        if position not in region or not reads_in_region(position):
            op.inputs = [rewriter.aliases.get(t, t) if t >= 0 else t for t in op.inputs]
            rewriter.ops.append(op)
            continue
        if name == _DEQUANTIZE:
            source = rewriter.aliases.get(op.inputs[0], op.inputs[0])
            if source in rewriter.twins:
                rewriter.aliases[op.outputs[0]] = rewriter.twins[source]
            else:
                rewriter.ops.append(op)
            continue
        if name == _QUANTIZE:
            op.inputs = [rewriter.twins.get(rewriter.aliases.get(t, t), t) for t in op.inputs]
            rewriter.ops.append(op)
            continue
        new_op = op
        if position in exact:
            float_op = float_object.subgraphs[0].operators[exact[position]]
            inputs = rewriter.exact_inputs(float_op)
            if inputs is None or len(float_op.outputs) != len(op.outputs):
                notes.append(f"op {position} ({name}) ran in float with its quantized weights: "
                             "the float model's op reads tensors this model does not have")
            else:
                new_op = rewriter.schema.OperatorT()
                code = float_object.operatorCodes[float_op.opcodeIndex]
                new_op.opcodeIndex = graph_surgery._opcode_index(  # pylint: disable=protected-access
                    model_object, max(code.builtinCode, code.deprecatedBuiltinCode), code.version
                )
                new_op.builtinOptionsType = float_op.builtinOptionsType
                new_op.builtinOptions = float_op.builtinOptions
                new_op.inputs = inputs
        if new_op is op:
            new_op.inputs = [rewriter.float_input(t) for t in op.inputs]
        original_outputs = list(op.outputs)
        new_op.outputs = rewriter.float_outputs(original_outputs)
        rewriter.ops.append(new_op)
        for tensor in original_outputs:
            if tensor not in rewriter.twins:
                continue
            outside = any(not reads_in_region(r) for r in readers.get(tensor, ()))
            if outside or tensor in graph_outputs:
                # Readers outside the region get the tensor back with its own scale.
                rewriter.ops.append(rewriter._converter_op(_QUANTIZE, rewriter.twins[tensor], tensor, tensor))  # pylint: disable=protected-access
    subgraph.operators = rewriter.ops
    return notes


def consumers(model_object, op_indices: Collection[int]) -> set[int]:
    """Indices of the ops that read an output of any op in `op_indices`."""
    operators = model_object.subgraphs[0].operators
    written = {t for i in op_indices for t in operators[i].outputs}
    return {i for i, op in enumerate(operators) if any(t in written for t in op.inputs)}


def pack(model_object) -> bytes:
    """Serializes a `ModelT` into `.tflite` bytes."""
    return graph_surgery._pack(model_object)  # pylint: disable=protected-access
