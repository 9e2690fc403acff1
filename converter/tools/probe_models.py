"""Probe models for the runtime support table: whole models, single ops, edited op codes.

Everything here edits flatbuffers through the schema that ships in
`ai_edge_litert` (no TensorFlow), except `convert_probe_models`, which runs
the converter.

A single-op probe keeps one operator of a converted model with the tensors it
touches: constant inputs keep their data, the other inputs become the probe's
inputs, its outputs the probe's outputs (an op on constants alone gets its first
input fed at run time). Fed the values those tensors held when the whole model
ran, it asks a runtime exactly one question: can you run this op signature?
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np

from converter import tflite_file
from converter.common import progress as progress_lib
from converter.compat import runtime_support
from converter.tflite_file import inspection

# The architectures the converter supports, in miniature: GPT-2 (tiny-gpt2,
# gpt2-6l) and Llama (smollm2-135m), with one and two layers, trained-looking
# and freshly initialised weights, and grouped- and multi-query attention:
# what differs between them changes which op signatures the converter writes.
PROBE_CONFIGS = {
    "gpt2": {"architecture": "gpt2", "num_layers": 2, "perturb": True},
    "gpt2-fresh": {"architecture": "gpt2", "num_layers": 1, "perturb": False},
    "llama": {"architecture": "llama", "num_layers": 2, "num_key_value_heads": 2, "perturb": True},
    "llama-mqa": {"architecture": "llama", "num_layers": 1, "num_key_value_heads": 1, "perturb": True},
}
ARCHITECTURES = tuple(PROBE_CONFIGS)
# The modes the stored support table covers. int4 is not among them yet: the probe re-run on 2026-12-02
# to add it stopped as inconsistent on tflite-runtime 2.14's dynamic models, at the commit before int4
# too (docs/2026-12-02-int4.md), so `converter.check` says `unknown` for int4 until that is fixed.
PROBED_MODES = ("fp32", "fp16", "dynamic", "int8", "int16x8")
PROBE_SEQ_LEN = 16
PROBE_VOCABULARY = 256
_PROBE_WINDOWS = 16
# A custom op no runtime has, and a Flex (TensorFlow fallback) op.
PROBE_CUSTOM_OP = "KerasLmLitertProbeOp"
PROBE_FLEX_OP = "FlexAddV2"


def tiny_keras_model(name: str):
    """A random-weight causal LM of a probe configuration, small enough to convert in seconds."""
    import keras  # pylint: disable=import-outside-toplevel
    import keras_hub  # pylint: disable=import-outside-toplevel

    if name not in PROBE_CONFIGS:
        raise ValueError(f"Unknown probe model {name!r}; choose one of {', '.join(PROBE_CONFIGS)}.")
    config = PROBE_CONFIGS[name]
    keras.utils.set_random_seed(0)
    if config["architecture"] == "gpt2":
        backbone = keras_hub.models.GPT2Backbone(
            vocabulary_size=PROBE_VOCABULARY,
            num_layers=config["num_layers"],
            num_heads=2,
            hidden_dim=32,
            intermediate_dim=64,
            max_sequence_length=PROBE_SEQ_LEN,
        )
        model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    else:
        # As smollm2-135m: grouped-query attention, untied output embedding.
        backbone = keras_hub.models.LlamaBackbone(
            vocabulary_size=PROBE_VOCABULARY,
            num_layers=config["num_layers"],
            num_query_heads=4,
            num_key_value_heads=config["num_key_value_heads"],
            hidden_dim=32,
            intermediate_dim=64,
            tie_word_embeddings=False,
        )
        model = keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)
    if config["perturb"]:
        # Fresh layers have zero biases and unit norms, which the converter
        # folds away; a trained model has neither, so every weight gets noise.
        rng = np.random.default_rng(0)
        for variable in model.weights:
            value = np.asarray(variable.numpy())
            if np.issubdtype(value.dtype, np.floating):
                variable.assign(value + rng.normal(0.0, 0.02, value.shape).astype(value.dtype))
    return model


def probe_windows():
    """Random token windows for calibrating and running the probe models."""
    import representative_data  # pylint: disable=import-outside-toplevel

    stream = np.random.default_rng(0).integers(0, PROBE_VOCABULARY, _PROBE_WINDOWS * PROBE_SEQ_LEN)
    return representative_data.make_windows(
        stream.astype(np.int32), seq_len=PROBE_SEQ_LEN, metadata={"source": "random ids"}
    )


def convert_probe_models(
    folder: pathlib.Path, *, modes: Sequence[str], architectures: Sequence[str] = ARCHITECTURES, progress: bool = True
) -> dict[tuple[str, str], pathlib.Path]:
    """Converts each architecture in each mode with this project's converter.

    Returns:
      (architecture, mode) -> `.tflite` path.
    """
    from converter.core import conversion  # pylint: disable=import-outside-toplevel

    windows = probe_windows()
    paths = {}
    for architecture in architectures:
        model = tiny_keras_model(architecture)
        for mode in modes:
            path = folder / f"{architecture}_{mode}.tflite"
            progress_lib.log("probe", f"converting the {architecture} probe to {mode}", enabled=progress)
            conversion.convert_keras(
                model,
                mode,
                calibration=windows,
                seq_len=PROBE_SEQ_LEN,
                output_path=path,
                overwrite=True,
                name=architecture,
                progress=False,
            )
            paths[(architecture, mode)] = path
    return paths


def model_inputs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Inputs for a whole converted model, keyed by position: a window of ids, a mask of ones."""
    model_object = inspection.load_model_object(path)
    inspected = inspection.inspect_model(path)
    names = {tensor.index: name for name, tensor in inspected.inputs.items()}
    arrays = {}
    for position, index in enumerate(model_object.subgraphs[0].inputs):
        tensor = inspected.tensors[int(index)]
        if "token_ids" in names.get(tensor.index, tensor.name):
            seq_len = tensor.shape[-1]
            ids = np.random.default_rng(0).integers(0, PROBE_VOCABULARY, (1, seq_len))
            arrays[str(position)] = ids.astype(np.int32)
        else:
            arrays[str(position)] = np.ones(tensor.shape, dtype=np.int32)
    return arrays


def captured_tensors(model_bytes: bytes, inputs: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Every tensor's value after one run in ai-edge-litert, without delegates (so none is fused away)."""
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel

    interpreter = litert.Interpreter(
        model_content=model_bytes,
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interpreter.allocate_tensors()
    for position, detail in enumerate(interpreter.get_input_details()):
        interpreter.set_tensor(detail["index"], np.asarray(inputs[str(position)], dtype=detail["dtype"]))
    interpreter.invoke()
    values = {}
    for detail in interpreter.get_tensor_details():
        with contextlib.suppress(ValueError):  # tensors without data (omitted inputs)
            values[detail["index"]] = np.array(interpreter.get_tensor(detail["index"]))
    return values


@dataclasses.dataclass(frozen=True)
class SingleOpProbe:
    """One operator cut out of a model, with the values its inputs and outputs held in the whole model."""

    signature: runtime_support.OpSignature
    model: bytes
    inputs: dict[str, np.ndarray]
    expected_outputs: tuple[np.ndarray, ...]


def single_op_probes(path: str | os.PathLike, *, seen: Iterable[str] = ()) -> list[SingleOpProbe]:
    """One probe per builtin op signature of a model, skipping signature keys in `seen`."""
    model_bytes = pathlib.Path(path).read_bytes()
    model_object = inspection.load_model_object(model_bytes)
    inspected = inspection.inspect_model(model_bytes)
    values = captured_tensors(model_bytes, model_inputs(path))
    special = set(inspected.custom_ops) | set(inspected.flex_ops)
    done = set(seen)
    probes = []
    for op in inspected.ops:
        if op.op in special:
            continue
        signature = runtime_support.OpSignature(
            op=op.op,
            version=op.version,
            inputs=tuple(d or runtime_support.OMITTED for d in inspected.input_dtypes(op)),
            outputs=tuple(inspected.output_dtypes(op)),
        )
        if signature.key in done:
            continue
        done.add(signature.key)
        probe_bytes, sources = tflite_file.single_op_model(model_object, op.index)
        probes.append(
            SingleOpProbe(
                signature=signature,
                model=probe_bytes,
                inputs={str(k): values[index] for k, index in enumerate(sources)},
                expected_outputs=tuple(values[index] for index in op.outputs),
            )
        )
    return probes


def with_op_version(model: bytes, version: int) -> bytes:
    """The same (single-op) model with its op code's version field set to `version`."""
    model_object = inspection.load_model_object(model)
    for code in model_object.operatorCodes:
        code.version = version
    return tflite_file.pack(model_object)


def as_custom_op(model: bytes, name: str) -> bytes:
    """The same (single-op) model with its op turned into the custom op `name` (Flex if it starts so)."""
    schema = inspection.schema()
    model_object = inspection.load_model_object(model)
    for code in model_object.operatorCodes:
        code.builtinCode = schema.BuiltinOperator.CUSTOM
        code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode = name.encode()
        code.version = 1
    for operator in model_object.subgraphs[0].operators:
        operator.builtinOptionsType = 0
        operator.builtinOptions = None
    return tflite_file.pack(model_object)
