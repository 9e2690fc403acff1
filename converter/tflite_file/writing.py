"""Building and serialising `.tflite` flatbuffers: the primitives every graph rewrite uses.

They work on the schema's mutable object tree (`inspection.load_model_object`)
and need `ai_edge_litert`'s schema and `flatbuffers` only: no TensorFlow.
"""

from __future__ import annotations

from converter.tflite_file.inspection import decode_name, schema

FILE_IDENTIFIER = b"TFL3"


def pack(model_object) -> bytes:
    """Serialises a `ModelT` into `.tflite` bytes."""
    import flatbuffers  # pylint: disable=import-outside-toplevel

    builder = flatbuffers.Builder(1024)
    builder.Finish(model_object.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def prune_operator_codes(model_object) -> None:
    """Drops operator codes no op uses any more, renumbering the ops' code indices.

    An interpreter resolves every operator code, used or not, so codes left
    behind by removed ops must go too.
    """
    used = sorted({op.opcodeIndex for g in model_object.subgraphs for op in g.operators})
    remap = {old: new for new, old in enumerate(used)}
    model_object.operatorCodes = [model_object.operatorCodes[i] for i in used]
    for subgraph in model_object.subgraphs:
        for op in subgraph.operators:
            op.opcodeIndex = remap[op.opcodeIndex]


def builtin_code(code) -> int:
    """The builtin operator of an operator code (the larger of its two fields)."""
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def append_opcode(model_object, builtin: int, version: int) -> int:
    """Adds the operator code (`builtin`, `version`) and returns its index."""
    fb = schema()
    code = fb.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, fb.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = version
    model_object.operatorCodes.append(code)
    return len(model_object.operatorCodes) - 1


def opcode_at_least(model_object, builtin: int, version: int) -> int:
    """The index of the code of `builtin`, its version raised to at least `version`; added when missing."""
    for index, code in enumerate(model_object.operatorCodes):
        if builtin_code(code) == builtin:
            code.version = max(code.version, version)
            return index
    return append_opcode(model_object, builtin, version)


def opcode_with_version(model_object, builtin: int, version: int) -> int:
    """The index of the operator code (`builtin`, `version`), added when missing.

    Unlike `opcode_at_least` it never changes the version of an existing code:
    a model may hold int8 ADDs (version 2) and float ADDs (version 1) side by side.
    """
    for index, code in enumerate(model_object.operatorCodes):
        if builtin_code(code) == builtin and code.version == version:
            return index
    return append_opcode(model_object, builtin, version)


def float_op_version(model_object, op) -> int:
    """The version TensorFlow gives the float form of `op` (the quantized form's is higher).

    Float kernels of the ops an LM uses are version 1, but FULLY_CONNECTED
    with keep_num_dims, which is version 5.
    """
    code = model_object.operatorCodes[op.opcodeIndex]
    if builtin_code(code) == schema().BuiltinOperator.FULLY_CONNECTED:
        return 5 if getattr(op.builtinOptions, "keepNumDims", False) else 1
    return 1


def float_twin(subgraph, tensor_index: int, *, suffix: str = "/float") -> int:
    """Adds a float32 activation tensor shaped like `tensor_index`; returns its index."""
    fb = schema()
    original = subgraph.tensors[tensor_index]
    twin = fb.TensorT()
    twin.name = decode_name(original.name) + suffix
    twin.shape = original.shape
    twin.shapeSignature = original.shapeSignature
    twin.type = fb.TensorType.FLOAT32
    twin.buffer = 0
    subgraph.tensors.append(twin)
    return len(subgraph.tensors) - 1


def add_constant(model_object, subgraph, values, *, name: str, tensor_type: int) -> int:
    """Adds a constant tensor holding `values` (a numpy array) with a buffer of its own; returns its index."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    fb = schema()
    buffer = fb.BufferT()
    array = np.ascontiguousarray(values)
    buffer.data = np.frombuffer(array.tobytes(), dtype=np.uint8)
    model_object.buffers.append(buffer)
    tensor = fb.TensorT()
    tensor.name = name
    tensor.shape = list(array.shape)
    tensor.type = tensor_type
    tensor.buffer = len(model_object.buffers) - 1
    subgraph.tensors.append(tensor)
    return len(subgraph.tensors) - 1
