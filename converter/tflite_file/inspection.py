"""Reads a `.tflite` flatbuffer without TensorFlow: ops, dtypes, quantization.

The schema ships in `ai_edge_litert`, so this module runs on a device as well
as on the host. It is how tests and reports check that a mode produced the
graph it promises (int8 weights, int8 or int16 activations, no Flex ops).
"""

from __future__ import annotations

import collections
import dataclasses
import mmap
import os
from collections.abc import Mapping, Sequence
from typing import Any

_FLEX_PREFIX = "Flex"
_MIN_RUNTIME_VERSION = "min_runtime_version"


def schema():
    """The flatbuffer schema module that ships in `ai_edge_litert` (`schema_py_generated`)."""
    from ai_edge_litert import schema_py_generated  # pylint: disable=import-outside-toplevel

    return schema_py_generated


def enum_names(enum_class) -> dict[int, str]:
    """Value -> name of a schema enum class (`BuiltinOperator`, `TensorType`, ...)."""
    return {
        value: name for name, value in vars(enum_class).items() if not name.startswith("_") and isinstance(value, int)
    }


@dataclasses.dataclass(frozen=True)
class Quantization:
    """Affine quantization of one tensor: real = scale * (q - zero_point)."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    quantized_dimension: int

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor of the graph, as a reader of the file sees it."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: Quantization | None
    is_constant: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One operator: its type, version and the tensors it reads and writes."""

    index: int
    op: str
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class SubgraphInfo:
    """One subgraph: its tensors and its operators in execution order."""

    index: int
    name: str
    tensors: tuple[TensorInfo, ...]
    ops: tuple[OpInfo, ...]

    def input_dtypes(self, op: OpInfo) -> list[str | None]:
        """Dtypes of an op's inputs; None for an omitted optional input."""
        return [self.tensors[i].dtype if i >= 0 else None for i in op.inputs]

    def output_dtypes(self, op: OpInfo) -> list[str]:
        return [self.tensors[i].dtype for i in op.outputs]


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    """One signature: the subgraph it runs and its named inputs and outputs."""

    key: str
    subgraph: int
    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subgraph": self.subgraph,
            "inputs": {k: v.to_dict() for k, v in self.inputs.items()},
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
        }


@dataclasses.dataclass(frozen=True)
class ModelInspection:
    """What a `.tflite` file holds, read from its flatbuffer.

    Attributes:
      size_bytes: size of the serialized model.
      tensors: every tensor of the main subgraph.
      ops: every operator of the main subgraph, in execution order.
      inputs: the signature's inputs, keyed by signature name.
      outputs: the signature's outputs, keyed by signature name.
      metadata: model metadata entries (UTF-8 text where decodable).
      custom_ops: names of custom (non-builtin, non-Flex) ops.
      flex_ops: names of Flex (TensorFlow fallback) ops.
      num_subgraphs: how many subgraphs the model holds.
      subgraphs: every subgraph (a model with several signatures has one each).
      signatures: every signature by key, with its subgraph, inputs and outputs.
    """

    size_bytes: int
    tensors: tuple[TensorInfo, ...]
    ops: tuple[OpInfo, ...]
    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]
    custom_ops: tuple[str, ...]
    flex_ops: tuple[str, ...]
    num_subgraphs: int
    subgraphs: tuple[SubgraphInfo, ...] = ()
    signatures: Mapping[str, SignatureInfo] = dataclasses.field(default_factory=dict)

    @property
    def all_ops(self) -> list[OpInfo]:
        """The operators of every subgraph."""
        return [op for subgraph in self.subgraphs for op in subgraph.ops] if self.subgraphs else list(self.ops)

    @property
    def op_histogram(self) -> dict[str, dict[str, Any]]:
        """Op type -> {"count": n, "versions": sorted versions} over every subgraph, most frequent first."""
        counts = collections.Counter(op.op for op in self.all_ops)
        versions: dict[str, set[int]] = collections.defaultdict(set)
        for op in self.all_ops:
            versions[op.op].add(op.version)
        return {name: {"count": count, "versions": sorted(versions[name])} for name, count in counts.most_common()}

    @property
    def min_runtime_version(self) -> str | None:
        return self.metadata.get(_MIN_RUNTIME_VERSION)

    def ops_of_type(self, *op_types: str) -> list[OpInfo]:
        return [op for op in self.ops if op.op in op_types]

    def input_dtypes(self, op: OpInfo) -> list[str | None]:
        """Dtypes of an op's inputs; None for an omitted optional input."""
        return [self.tensors[i].dtype if i >= 0 else None for i in op.inputs]

    def output_dtypes(self, op: OpInfo) -> list[str]:
        return [self.tensors[i].dtype for i in op.outputs]

    def summary(self) -> dict[str, Any]:
        """A JSON-serialisable digest for reports (no per-tensor listing)."""
        return {
            "size_bytes": self.size_bytes,
            "num_ops": len(self.all_ops),
            "op_histogram": self.op_histogram,
            "inputs": {k: v.to_dict() for k, v in self.inputs.items()},
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
            "min_runtime_version": self.min_runtime_version,
            "custom_ops": list(self.custom_ops),
            "flex_ops": list(self.flex_ops),
            "constant_dtypes": dict(collections.Counter(t.dtype for t in self.tensors if t.is_constant)),
            "activation_dtypes": dict(collections.Counter(t.dtype for t in self.tensors if not t.is_constant)),
            "signatures": {key: signature.to_dict() for key, signature in self.signatures.items()},
        }


def load_model_object(model: bytes | bytearray | str | os.PathLike):
    """Parses a `.tflite` model into the schema's mutable object tree.

    Args:
      model: the serialized model, or a path to it.

    Returns:
      A `schema_py_generated.ModelT`.

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: the bytes are not a TFLite flatbuffer.
    """
    fb = schema()
    data = _read_bytes(model)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(
            "Not a TFLite model: the flatbuffer identifier 'TFL3' is missing "
            f"({len(data)} bytes). Pass a .tflite file written by the converter."
        )
    try:
        return fb.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as error:  # flatbuffers raises assorted errors on bad data
        raise ValueError(
            f"The TFLite flatbuffer could not be parsed ({error}); the file is "
            "probably truncated or corrupt. Convert the model again."
        ) from error


def _read_bytes(model: bytes | bytearray | str | os.PathLike) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No TFLite model at {path!r}.")
    with open(path, "rb") as handle:
        return handle.read()


def op_type_name(model_object, opcode_index: int) -> str:
    """The op type of an operator code: a builtin name, 'Flex...' or a custom code."""
    fb = schema()
    code = model_object.operatorCodes[opcode_index]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == fb.BuiltinOperator.CUSTOM:
        custom = code.customCode
        return custom.decode() if isinstance(custom, bytes) else str(custom)
    return enum_names(fb.BuiltinOperator)[builtin]


def _tensor_info(subgraph, buffers, index: int, dtypes: Mapping[int, str]) -> TensorInfo:
    tensor = subgraph.tensors[index]
    quantization = None
    q = tensor.quantization
    if q is not None and q.scale is not None and len(q.scale) > 0:
        zero_point = q.zeroPoint if q.zeroPoint is not None else [0] * len(q.scale)
        quantization = Quantization(
            scale=tuple(float(s) for s in q.scale),
            zero_point=tuple(int(z) for z in zero_point),
            quantized_dimension=int(q.quantizedDimension),
        )
    buffer = buffers[tensor.buffer] if 0 < tensor.buffer < len(buffers) else None
    is_constant = buffer is not None and ((buffer.data is not None and len(buffer.data) > 0) or bool(buffer.size))
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
    shape = tuple(int(d) for d in tensor.shape) if tensor.shape is not None else ()
    return TensorInfo(
        index=index,
        name=name,
        shape=shape,
        dtype=dtypes[tensor.type],
        quantization=quantization,
        is_constant=is_constant,
    )


def _signature_tensors(model_object, subgraph, which: str) -> list[tuple[str, int]]:
    for signature in model_object.signatureDefs or []:
        if signature.subgraphIndex == 0:
            entries = getattr(signature, which) or []
            return [(e.name.decode() if isinstance(e.name, bytes) else e.name, e.tensorIndex) for e in entries]
    indices = getattr(subgraph, which)
    # The schema gives numpy arrays, whose truth value is ambiguous.
    return [(decode_name(subgraph.tensors[i].name), int(i)) for i in (indices if indices is not None else [])]


def decode_name(value) -> str:
    """A flatbuffer string field (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _metadata(model_object) -> dict[str, str]:
    entries = {}
    for entry in model_object.metadata or []:
        buffer = model_object.buffers[entry.buffer]
        raw = bytes(buffer.data) if buffer.data is not None else b""
        try:
            text = raw.decode("utf-8").rstrip("\x00")
        except UnicodeDecodeError:
            text = f"<{len(raw)} bytes>"
        entries[decode_name(entry.name)] = text
    return entries


def inspect_model(model: bytes | bytearray | str | os.PathLike) -> ModelInspection:
    """Reads ops, tensors, signature and metadata of a `.tflite` model.

    Args:
      model: the serialized model, or a path to a `.tflite` file.

    Returns:
      A `ModelInspection` of the main subgraph.

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: the data is not a TFLite flatbuffer.
    """
    fb = schema()
    data = _read_bytes(model)
    model_object = load_model_object(data)
    if not model_object.subgraphs:
        raise ValueError("The TFLite model has no subgraph; convert the model again.")
    dtypes = {k: v.lower() for k, v in enum_names(fb.TensorType).items()}
    buffers = model_object.buffers or []
    custom, flex = set(), set()
    subgraphs = []
    for number, subgraph in enumerate(model_object.subgraphs):
        tensors = tuple(_tensor_info(subgraph, buffers, i, dtypes) for i in range(len(subgraph.tensors or [])))
        ops = []
        for index, operator in enumerate(subgraph.operators or []):
            name = op_type_name(model_object, operator.opcodeIndex)
            code = model_object.operatorCodes[operator.opcodeIndex]
            if max(code.builtinCode, code.deprecatedBuiltinCode) == fb.BuiltinOperator.CUSTOM:
                (flex if name.startswith(_FLEX_PREFIX) else custom).add(name)
            ops.append(
                OpInfo(
                    index=index,
                    op=name,
                    version=int(code.version),
                    inputs=tuple(int(i) for i in (operator.inputs if operator.inputs is not None else [])),
                    outputs=tuple(int(i) for i in (operator.outputs if operator.outputs is not None else [])),
                )
            )
        subgraphs.append(SubgraphInfo(number, decode_name(subgraph.name or b""), tensors, tuple(ops)))
    main = subgraphs[0]
    signatures = {}
    for signature in model_object.signatureDefs or []:
        tensors = subgraphs[signature.subgraphIndex].tensors
        key = decode_name(signature.signatureKey)
        signatures[key] = SignatureInfo(
            key=key,
            subgraph=int(signature.subgraphIndex),
            inputs={decode_name(e.name): tensors[e.tensorIndex] for e in signature.inputs or []},
            outputs={decode_name(e.name): tensors[e.tensorIndex] for e in signature.outputs or []},
        )
    return ModelInspection(
        size_bytes=len(data),
        tensors=main.tensors,
        ops=main.ops,
        inputs={n: main.tensors[i] for n, i in _signature_tensors(model_object, model_object.subgraphs[0], "inputs")},
        outputs={n: main.tensors[i] for n, i in _signature_tensors(model_object, model_object.subgraphs[0], "outputs")},
        metadata=_metadata(model_object),
        custom_ops=tuple(sorted(custom)),
        flex_ops=tuple(sorted(flex)),
        num_subgraphs=len(model_object.subgraphs),
        subgraphs=tuple(subgraphs),
        signatures=signatures,
    )


def inspect_signatures(model: bytes | bytearray | str | os.PathLike) -> dict[str, SignatureInfo]:
    """The signatures of a `.tflite` model, read without loading its weights.

    `inspect_model` unpacks the whole flatbuffer, weights included, into Python
    objects (hundreds of megabytes for an LM, held until it returns); a device
    that only needs the signatures' names, shapes and dtypes reads them here
    from a memory map, touching only the pages of the tensor tables.

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: the data is not a TFLite flatbuffer.
    """
    fb = schema()
    dtypes = {k: v.lower() for k, v in enum_names(fb.TensorType).items()}
    if isinstance(model, (bytes, bytearray)):
        return _signatures_of(bytes(model), fb, dtypes)
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No TFLite model at {path!r}.")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _signatures_of(data, fb, dtypes)


def _signatures_of(data, fb, dtypes: Mapping[int, str]) -> dict[str, SignatureInfo]:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(
            "Not a TFLite model: the flatbuffer identifier 'TFL3' is missing "
            f"({len(data)} bytes). Pass a .tflite file written by the converter."
        )
    try:
        model = fb.Model.GetRootAs(data, 0)
        signatures = {}
        for number in range(model.SignatureDefsLength()):
            signature = model.SignatureDefs(number)
            subgraph = model.Subgraphs(signature.SubgraphIndex())

            def tensor(index: int, subgraph=subgraph) -> TensorInfo:
                entry = subgraph.Tensors(index)
                q = entry.Quantization()
                quantization = None
                if q is not None and q.ScaleLength() > 0:
                    scale = tuple(float(q.Scale(i)) for i in range(q.ScaleLength()))
                    zero = tuple(int(q.ZeroPoint(i)) for i in range(q.ZeroPointLength())) or (0,) * len(scale)
                    quantization = Quantization(
                        scale=scale, zero_point=zero, quantized_dimension=int(q.QuantizedDimension())
                    )
                return TensorInfo(
                    index=index,
                    name=decode_name(entry.Name() or b""),
                    shape=tuple(int(entry.Shape(i)) for i in range(entry.ShapeLength())),
                    dtype=dtypes[entry.Type()],
                    quantization=quantization,
                    # Signature inputs and outputs are never constants.
                    is_constant=False,
                )

            key = decode_name(signature.SignatureKey() or b"")
            signatures[key] = SignatureInfo(
                key=key,
                subgraph=int(signature.SubgraphIndex()),
                inputs={
                    decode_name(e.Name()): tensor(e.TensorIndex())
                    for e in (signature.Inputs(i) for i in range(signature.InputsLength()))
                },
                outputs={
                    decode_name(e.Name()): tensor(e.TensorIndex())
                    for e in (signature.Outputs(i) for i in range(signature.OutputsLength()))
                },
            )
        return signatures
    except Exception as error:  # flatbuffers raises assorted errors on bad data
        raise ValueError(
            f"The TFLite flatbuffer could not be parsed ({error}); the file is "
            "probably truncated or corrupt. Convert the model again."
        ) from error


def weight_dtypes(inspection: ModelInspection, op_types: Sequence[str]) -> set[str]:
    """Dtypes of the constant weight input (input 1) of the given op types."""
    found = set()
    for op in inspection.ops_of_type(*op_types):
        if len(op.inputs) > 1 and op.inputs[1] >= 0:
            tensor = inspection.tensors[op.inputs[1]]
            if tensor.is_constant:
                found.add(tensor.dtype)
    return found
