"""Runs a set of ops of a quantized `.tflite` model in float, tensors between them kept float.

`graph_surgery.run_ops_in_float` puts a DEQUANTIZE before and a QUANTIZE after
each op it moves to float, so every tensor keeps its calibrated scale. That
cannot remove an error that lives in a tensor's scale (a range taken by a few
outliers). A *region* goes further: every quantized tensor that one region op
writes and another reads stays float between them; only tensors entering the
region are dequantized and only tensors read outside it (or returned) are
quantized again, with their original scale and zero point.

`run_residual_and_norms_in_float` finds, by graph pattern, the residual
stream and the normalization statistics of an LM and runs them as one region:
the prototype fix for Llama-family models (`convert_keras(...,
float_residual_stream=True)`).

An op of the region may also be made *exact*: replaced by its twin from the
float model the quantized one was converted from (float weights, float
arithmetic). `quant_debug` uses that to measure how much of the output error
one op causes.

Only `ai_edge_litert`'s schema, `flatbuffers` and numpy are needed.
"""

from __future__ import annotations

import collections
from collections.abc import Collection, Mapping

import numpy as np

from converter.passes.result import SurgeryResult
from converter.tflite_file import inspection, writing

# Ops that only convert between float and integer: inside a region they are
# rewired, never run in float themselves.
_QUANTIZE, _DEQUANTIZE = "QUANTIZE", "DEQUANTIZE"

# Quantized constants of at least this many elements read by a region op are
# dequantized by an op when the model runs rather than stored as float.
_LARGE_CONSTANT = 1024
# The version TensorFlow gives a FULLY_CONNECTED with float input and
# per-channel int8 weights (`dynamic` mode).
_HYBRID_FULLY_CONNECTED_VERSION = 12

_NUMPY_TYPES = {
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
}


def _type_names() -> dict[int, str]:
    return inspection.enum_names(inspection.schema().TensorType)


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
    zero_point = np.asarray(
        q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0] * scale.size, dtype=np.float64
    )
    if scale.size > 1:
        # Per-channel: one scale along quantizedDimension.
        axis_shape = [1] * values.ndim
        axis_shape[int(q.quantizedDimension)] = scale.size
        scale, zero_point = scale.reshape(axis_shape), zero_point.reshape(axis_shape)
    return ((values - zero_point) * scale).astype(np.float32)


class _Rewriter:
    """Builds the new operator list of subgraph 0; one instance per rewrite."""

    def __init__(self, model_object, float_object, float_to_quantized):
        schema = inspection.schema()
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
        # The versions TensorFlow gives these ops (QUANTIZE to int8 is 1, DEQUANTIZE from it 2; int16 3),
        # so that runtime checks find them in their tables.
        if self.subgraph.tensors[quantized].type == schema.TensorType.INT16:
            version = 3
        else:
            version = 1 if builtin_name == _QUANTIZE else 2
        op.opcodeIndex = writing.opcode_with_version(self.model, getattr(schema.BuiltinOperator, builtin_name), version)
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
            if (
                index not in self.float_constants
                and tensor.type == self.schema.TensorType.INT8
                and len(tensor.quantization.scale) == 1
                and int(np.prod(tensor.shape)) >= _LARGE_CONSTANT
            ):
                # A large table (GPT-2's position embedding) stays int8 in the file, dequantized when run.
                twin = writing.float_twin(self.subgraph, index)
                self.ops.append(self._converter_op(_DEQUANTIZE, index, twin, index))
                self.float_constants[index] = twin
            if index not in self.float_constants:
                self.float_constants[index] = self._new_tensor(
                    inspection.decode_name(tensor.name) + "/dequantized",
                    tensor.shape,
                    data=dequantized_constant(self.model, tensor),
                )
            return self.float_constants[index]
        if tensor.type not in self.quantized_types:
            return index
        if index not in self.dequantized:
            twin = writing.float_twin(self.subgraph, index)
            self.ops.append(self._converter_op(_DEQUANTIZE, index, twin, index))
            self.dequantized[index] = twin
        return self.dequantized[index]

    def hybrid_fully_connected(self, op, name: str) -> bool:
        """Turns an int8 FULLY_CONNECTED into a dynamic-range one (float in and out, int8 weights kept).

        Dequantizing the weights would store them 4x larger; LiteRT's hybrid
        kernel (what `dynamic` mode uses, XNNPACK runs it) quantizes the
        float input per row on the fly instead. Returns False for other ops.
        """
        if name != "FULLY_CONNECTED" or len(op.inputs) < 2 or op.inputs[1] < 0:
            return False
        weights = self.subgraph.tensors[op.inputs[1]]
        if (
            weights.type != self.schema.TensorType.INT8
            or not _is_constant(self.model, weights)
            or not _has_scale(weights)
            or np.any(np.asarray(weights.quantization.zeroPoint) != 0)
        ):
            return False
        inputs = list(op.inputs)
        inputs[0] = self.float_input(inputs[0])
        if len(inputs) > 2 and inputs[2] >= 0:
            inputs[2] = self.float_input(inputs[2])
        op.inputs = inputs
        op.builtinOptions.asymmetricQuantizeInputs = True
        op.opcodeIndex = writing.opcode_with_version(
            self.model, self.schema.BuiltinOperator.FULLY_CONNECTED, _HYBRID_FULLY_CONNECTED_VERSION
        )
        return True

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
                    copy.name = inspection.decode_name(tensor.name) + "/exact"
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
                self.twins[index] = writing.float_twin(self.subgraph, index)
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
    hybrid: bool = True,
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
      hybrid: int8 FULLY_CONNECTED ops of the region keep their int8 weights
        and run dynamic-range (float activations, quantized per row on the
        fly); False dequantizes their weights into float constants.

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
            source = rewriter.aliases.get(op.inputs[0], op.inputs[0])
            source = rewriter.twins.get(source, source)
            target = op.outputs[0]
            if (
                subgraph.tensors[source].type == rewriter.schema.TensorType.FLOAT32
                and target not in graph_outputs
                and all(reads_in_region(r) for r in readers.get(target, ()))
            ):
                # Only region ops read the quantized copy: they read the float value instead.
                rewriter.aliases[target] = source
                continue
            op.inputs = [source]
            rewriter.ops.append(op)
            continue
        new_op = op
        if position in exact:
            float_op = float_object.subgraphs[0].operators[exact[position]]
            inputs = rewriter.exact_inputs(float_op)
            if inputs is None or len(float_op.outputs) != len(op.outputs):
                notes.append(
                    f"op {position} ({name}) ran in float with its quantized weights: "
                    "the float model's op reads tensors this model does not have"
                )
            else:
                new_op = rewriter.schema.OperatorT()
                code = float_object.operatorCodes[float_op.opcodeIndex]
                new_op.opcodeIndex = writing.opcode_at_least(
                    model_object, max(code.builtinCode, code.deprecatedBuiltinCode), code.version
                )
                new_op.builtinOptionsType = float_op.builtinOptionsType
                new_op.builtinOptions = float_op.builtinOptions
                new_op.inputs = inputs
        if new_op is op and hybrid and rewriter.hybrid_fully_connected(op, name):
            pass
        elif new_op is op:
            new_op.inputs = [rewriter.float_input(t) for t in op.inputs]
            code = model_object.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin != rewriter.schema.BuiltinOperator.CUSTOM:
                # The float kernel's version, so that runtime checks read the op as float.
                new_op.opcodeIndex = writing.opcode_with_version(
                    model_object, builtin, writing.float_op_version(model_object, op)
                )
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
    writing.prune_operator_codes(model_object)
    return notes


def residual_and_norm_ops(model_object, *, residual: bool = True) -> set[int]:
    """The ops of subgraph 0 that carry the residual stream and compute normalization statistics.

    Found by graph pattern, not by name:

    * a norm: RSQRT, walked back through an ADD or SUB of a constant (epsilon)
      to a MEAN, and from there to what the MEAN averages when it is x * x or
      a SQUARED_DIFFERENCE (through a QUANTIZE / DEQUANTIZE bridge, and the
      MEAN of x that SQUARED_DIFFERENCE subtracts); forward, the MULs that read
      the RSQRT and, when those multiply by a constant (LayerNorm's gamma),
      the MULs that read them.
    * the residual stream (with `residual`): starting from each GATHER
      (the token embedding), every ADD that reads a stream tensor and writes
      a tensor of the same shape is part of the stream.

    Args:
      model_object: a quantized model (`ModelT`).
      residual: include the residual stream's ADDs.

    Returns:
      Op indices in execution order of subgraph 0.
    """
    subgraph = model_object.subgraphs[0]
    operators = subgraph.operators
    kinds = [inspection.op_type_name(model_object, op.opcodeIndex) for op in operators]
    producer = {t: i for i, op in enumerate(operators) for t in op.outputs}
    readers: dict[int, list[int]] = collections.defaultdict(list)
    for i, op in enumerate(operators):
        for t in op.inputs:
            if t >= 0:
                readers[t].append(i)
    constant = lambda t: t >= 0 and _is_constant(model_object, subgraph.tensors[t])  # noqa: E731

    def through_bridge(tensor: int) -> tuple[int | None, set[int]]:
        """The op that computes `tensor`, looking through QUANTIZE / DEQUANTIZE; and the bridge ops passed."""
        passed = set()
        index = producer.get(tensor)
        while index is not None and kinds[index] in (_QUANTIZE, _DEQUANTIZE):
            passed.add(index)
            index = producer.get(operators[index].inputs[0])
        return index, passed

    region: set[int] = set()
    for index, kind in enumerate(kinds):
        if kind != "RSQRT":
            continue
        chain, (step, passed) = {index}, through_bridge(operators[index].inputs[0])
        chain |= passed
        while step is not None and kinds[step] in ("ADD", "SUB") and any(constant(t) for t in operators[step].inputs):
            chain.add(step)
            variable = next(t for t in operators[step].inputs if not constant(t))
            step, passed = through_bridge(variable)
            chain |= passed
        if step is None or kinds[step] != "MEAN":
            continue
        chain.add(step)
        source, passed = through_bridge(operators[step].inputs[0])
        if source is not None:
            inputs = operators[source].inputs
            if kinds[source] == "MUL" and len(inputs) == 2 and inputs[0] == inputs[1]:
                chain |= passed | {source}
            elif kinds[source] == "SQUARED_DIFFERENCE":
                chain |= passed | {source}
                for tensor in inputs:
                    mean, bridge = through_bridge(tensor)
                    chain |= bridge
                    if mean is not None and kinds[mean] == "MEAN":
                        chain.add(mean)
        for reader in readers.get(operators[index].outputs[0], ()):
            if kinds[reader] != "MUL":
                continue
            chain.add(reader)
            if any(constant(t) for t in operators[reader].inputs):
                chain |= {r for r in readers.get(operators[reader].outputs[0], ()) if kinds[r] == "MUL"}
        region |= chain
    if residual:
        stream = {t for i, kind in enumerate(kinds) if kind == "GATHER" for t in operators[i].outputs}
        for index, op in enumerate(operators):
            if kinds[index] != "ADD":
                continue
            shape = tuple(subgraph.tensors[op.outputs[0]].shape)
            if any(t in stream and tuple(subgraph.tensors[t].shape) == shape for t in op.inputs):
                region.add(index)
                stream.add(op.outputs[0])
    return region


def run_residual_and_norms_in_float(model: bytes, *, residual: bool = True) -> SurgeryResult:
    """Runs the residual stream and the normalization statistics of a quantized LM in float.

    A Llama-family residual stream carries a few huge activations (SmolLM2-135M:
    about 24000 in one channel of the first position, against +-50 elsewhere).
    With one scale per tensor, the residual, x * x and mean(x * x) round every
    other position to a few steps, in int8 and in int16 alike; moving single
    ops to float (`graph_surgery.run_ops_in_float`) does not help, since the
    tensors between them stay quantized. Here the tensors between these ops
    stay float: the attention and MLP outputs are dequantized into the stream,
    and only the normalized tensor the projections read is quantized again,
    with its calibrated scale. No new calibration is needed.

    Args:
      model: a quantized (int8 or int16x8) `.tflite` LM.
      residual: also keep the residual stream's ADDs in float (norms only otherwise).

    Returns:
      The rewritten model and one line summing up what runs in float.
    """
    model_object = inspection.load_model_object(model)
    region = residual_and_norm_ops(model_object, residual=residual)
    kinds = collections.Counter(
        inspection.op_type_name(model_object, model_object.subgraphs[0].operators[i].opcodeIndex) for i in region
    )
    computing = {kind: count for kind, count in sorted(kinds.items()) if kind not in (_QUANTIZE, _DEQUANTIZE)}
    if not computing:
        return SurgeryResult(model=bytes(model), changes=())
    run_region_in_float(model_object, region)
    summary = ", ".join(f"{count} {kind}" for kind, count in computing.items())
    what = "residual stream and norm statistics" if residual else "norm statistics"
    return SurgeryResult(model=writing.pack(model_object), changes=(f"{what} run in float: {summary}",))


def consumers(model_object, op_indices: Collection[int]) -> set[int]:
    """Indices of the ops that read an output of any op in `op_indices`."""
    operators = model_object.subgraphs[0].operators
    written = {t for i in op_indices for t in operators[i].outputs}
    return {i for i, op in enumerate(operators) if any(t in written for t in op.inputs)}
