"""The `.tflite` file toolkit: read, decode, build, pack, cut and validate LiteRT flatbuffers.

No TensorFlow: `ai_edge_litert`'s schema, `flatbuffers` and numpy (and the
standard library alone for `check_model_file`), so the device side uses it as
well as the converter. Every module that reads or rewrites a model goes
through these names rather than the schema's raw tables.
"""

from converter.tflite_file.cutting import single_op_model
from converter.tflite_file.inspection import (
    ModelInspection,
    OpInfo,
    Quantization,
    SignatureInfo,
    SubgraphInfo,
    TensorInfo,
    decode_name,
    enum_names,
    inspect_model,
    inspect_signatures,
    load_model_object,
    op_type_name,
    schema,
    weight_dtypes,
)
from converter.tflite_file.metadata import embed_metadata, read_metadata
from converter.tflite_file.validation import ONNX_SUFFIX, TFLITE_SUFFIX, ModelFileError, check_model_file
from converter.tflite_file.writing import (
    add_constant,
    append_opcode,
    builtin_code,
    float_op_version,
    float_twin,
    opcode_at_least,
    opcode_with_version,
    pack,
    prune_operator_codes,
)

__all__ = [
    "ModelFileError",
    "ModelInspection",
    "ONNX_SUFFIX",
    "OpInfo",
    "Quantization",
    "SignatureInfo",
    "SubgraphInfo",
    "TFLITE_SUFFIX",
    "TensorInfo",
    "add_constant",
    "append_opcode",
    "builtin_code",
    "check_model_file",
    "decode_name",
    "embed_metadata",
    "enum_names",
    "float_op_version",
    "float_twin",
    "inspect_model",
    "inspect_signatures",
    "load_model_object",
    "op_type_name",
    "opcode_at_least",
    "opcode_with_version",
    "pack",
    "prune_operator_codes",
    "read_metadata",
    "schema",
    "single_op_model",
    "weight_dtypes",
]
