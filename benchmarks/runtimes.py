"""Runtimes that run a converted LM: LiteRT (two packagings) and ONNX Runtime.

Each backend opens a model as a `Runner` with the same three steps, so the
timing loop measures only the inference itself, as TFLite's benchmark_model
does: `prepare` copies the inputs in once, `invoke` runs the model, `logits`
copies the output out.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import importlib.metadata
import os
import re
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from converter import tflite_file

TOKEN_IDS = "token_ids"
PADDING_MASK = "padding_mask"
LOGITS = "logits"


class Runtime(str, enum.Enum):
    """Which runtime executes the model."""

    AI_EDGE_LITERT = "ai-edge-litert"
    TFLITE_RUNTIME = "tflite-runtime"
    ONNXRUNTIME = "onnxruntime"


RUNTIME_NAMES = tuple(runtime.value for runtime in Runtime)
_MODULES = {
    Runtime.AI_EDGE_LITERT: "ai_edge_litert.interpreter",
    Runtime.TFLITE_RUNTIME: "tflite_runtime.interpreter",
    Runtime.ONNXRUNTIME: "onnxruntime",
}
# What the device can install to run models that TensorFlow 2.21 writes.
_NEWEST_LITERT = "ai-edge-litert==2.3.0"
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(?P<op>\w+)' version '(?P<version>\d+)'")
_MISSING_CUSTOM_OP = re.compile(r"Encountered unresolved custom op: (?P<op>[\w.]+)")
# A registered kernel that refuses its tensors (tflite-runtime 2.14 on int16 RSQRT).
_KERNEL_REFUSED = re.compile(r"Node number \d+ \((?P<op>\w+)\) failed to (?:prepare|invoke)")


class RuntimeUnavailableError(ImportError):
    """The requested runtime is not installed."""


class ModelLoadError(RuntimeError):
    """A runtime refused a model; the message names the op and what would run it."""

    def __init__(self, message: str, *, op: str | None = None, version: int | None = None):
        super().__init__(message)
        self.op = op
        self.version = version


@dataclasses.dataclass(frozen=True)
class RuntimeInfo:
    """The runtime a result was measured with."""

    name: str
    version: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def parse_runtime(value: str | Runtime) -> Runtime:
    """Turns a runtime name into a `Runtime`, naming the valid ones on error."""
    try:
        return Runtime(value)
    except ValueError:
        raise ValueError(f"Unknown runtime {value!r}; choose one of {', '.join(RUNTIME_NAMES)}.") from None


def runtime_for_path(path: str | os.PathLike, runtime: Runtime | str | None = None) -> Runtime:
    """The runtime to use for a file: ONNX Runtime for `.onnx`, else LiteRT."""
    if os.fspath(path).endswith(tflite_file.ONNX_SUFFIX):
        return Runtime.ONNXRUNTIME
    chosen = parse_runtime(runtime) if runtime else Runtime.AI_EDGE_LITERT
    if chosen is Runtime.ONNXRUNTIME:
        raise ValueError(f"{os.fspath(path)!r} is a TFLite model; ONNX Runtime runs .onnx files only.")
    return chosen


def runtime_info(runtime: Runtime) -> RuntimeInfo:
    """The installed version of a runtime.

    Raises:
      RuntimeUnavailableError: it is not installed; the message says how to get it.
    """
    module = _import_runtime(runtime)
    version = getattr(module, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version(runtime.value)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    return RuntimeInfo(name=runtime.value, version=str(version))


def _import_runtime(runtime: Runtime):
    try:
        module = importlib.import_module(_MODULES[runtime])
    except ImportError as error:
        hint = {
            Runtime.AI_EDGE_LITERT: f"pip install {_NEWEST_LITERT}",
            Runtime.TFLITE_RUNTIME: "pip install tflite-runtime (needs numpy<2), or use --runtime=ai-edge-litert",
            Runtime.ONNXRUNTIME: "pip install onnxruntime (make bench installs it)",
        }[runtime]
        raise RuntimeUnavailableError(f"Runtime {runtime.value} is not installed ({error}); {hint}.") from error
    if runtime is not Runtime.ONNXRUNTIME:
        # The version lives on the package, not on its interpreter module.
        return importlib.import_module(_MODULES[runtime].split(".")[0])
    return module


class Runner(Protocol):
    """A loaded model that maps a token window to next-token logits."""

    runtime: RuntimeInfo
    threads: int
    input_names: tuple[str, ...]
    seq_len: int
    vocabulary_size: int

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> None: ...

    def invoke(self) -> None: ...

    def logits(self) -> np.ndarray: ...


def open_runner(path: str | os.PathLike, *, runtime: Runtime | str | None = None, threads: int = 1) -> Runner:
    """Loads a model file for inference.

    Args:
      path: a `.tflite` file (LiteRT) or an `.onnx` file (ONNX Runtime).
      runtime: `ai-edge-litert` (default for .tflite), `tflite-runtime`, or
        `onnxruntime` (implied by .onnx).
      threads: CPU threads the runtime may use, at least 1.

    Returns:
      A `Runner`.

    Raises:
      FileNotFoundError, tflite_file.ModelFileError: the file is missing or broken.
      RuntimeUnavailableError: the runtime is not installed.
      ModelLoadError: the runtime cannot run the model (op and version named).
      ValueError: threads below 1, or inputs/outputs that are not an LM's.
    """
    check_threads(threads)
    path = tflite_file.check_model_file(path)
    chosen = runtime_for_path(path, runtime)
    if chosen is Runtime.ONNXRUNTIME:
        return _OnnxRunner(path, threads=threads)
    return _LiteRTRunner(path, runtime=chosen, threads=threads)


def check_threads(threads: int) -> int:
    """Raises ValueError unless `threads` is an integer of at least 1."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer of at least 1; got {threads!r}.")
    return threads


def _lm_shapes(name: str, token_shape, logits_shape) -> tuple[int, int]:
    token_shape, logits_shape = tuple(token_shape), tuple(logits_shape)
    if len(token_shape) != 2 or len(logits_shape) != 3 or token_shape[1] != logits_shape[1]:
        raise ValueError(
            f"{name}: expected token ids [1, seq_len] and logits [1, seq_len, vocab]; got "
            f"{token_shape} and {logits_shape}. Convert the model with this project's converter."
        )
    return int(token_shape[1]), int(logits_shape[2])


class _LiteRTRunner:
    """LiteRT's Interpreter API, which both packagings share."""

    def __init__(self, path, *, runtime: Runtime, threads: int):
        self.runtime = runtime_info(runtime)
        self.threads = threads
        interpreter_module = importlib.import_module(_MODULES[runtime])
        try:
            self._interpreter = interpreter_module.Interpreter(model_path=str(path), num_threads=threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise _load_error(path, self.runtime, error) from None
        signature = self._signature()
        self.input_names = tuple(signature["inputs"])
        if TOKEN_IDS not in signature["inputs"] or LOGITS not in signature["outputs"]:
            raise ValueError(
                f"{str(path)!r}: the model's signature has inputs {sorted(signature['inputs'])} and "
                f"outputs {sorted(signature['outputs'])}; expected input '{TOKEN_IDS}' and output "
                f"'{LOGITS}'. Convert the model with this project's converter."
            )
        details = {d["index"]: d for d in self._interpreter.get_input_details()}
        details.update({d["index"]: d for d in self._interpreter.get_output_details()})
        self._inputs = {name: details[index] for name, index in signature["inputs"].items()}
        self._output = details[signature["outputs"][LOGITS]]
        self.seq_len, self.vocabulary_size = _lm_shapes(
            str(path), self._inputs[TOKEN_IDS]["shape"], self._output["shape"]
        )

    def _signature(self) -> dict[str, dict[str, int]]:
        signatures = self._interpreter._get_full_signature_list()  # pylint: disable=protected-access
        if signatures:
            return next(iter(signatures.values()))
        # Models without a signature: fall back on tensor names.
        inputs = {_plain_name(d["name"]): d["index"] for d in self._interpreter.get_input_details()}
        outputs = {_plain_name(d["name"]): d["index"] for d in self._interpreter.get_output_details()}
        return {"inputs": inputs, "outputs": outputs}

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> None:
        for name, detail in self._inputs.items():
            self._interpreter.set_tensor(detail["index"], np.asarray(inputs[name], dtype=detail["dtype"]))

    def invoke(self) -> None:
        self._interpreter.invoke()

    def logits(self) -> np.ndarray:
        values = self._interpreter.get_tensor(self._output["index"])
        scale, zero_point = self._output.get("quantization", (0.0, 0))
        if np.issubdtype(values.dtype, np.integer) and scale:
            return (values.astype(np.float32) - zero_point) * np.float32(scale)
        return values.astype(np.float32, copy=False)


def _plain_name(name: str) -> str:
    name = name.split(":")[0]
    return name[len("serving_default_") :] if name.startswith("serving_default_") else name


def _load_error(path, runtime: RuntimeInfo, error: Exception) -> Exception:
    text = str(error)
    missing = _MISSING_OP.search(text)
    if missing:
        op, version = missing["op"], int(missing["version"])
        return ModelLoadError(
            f"{runtime.name} {runtime.version} cannot run {str(path)!r}: it has no kernel for "
            f"{op} version {version}. A runtime as new as the converter that wrote the model "
            f"runs it ({_NEWEST_LITERT}: `pip install {_NEWEST_LITERT}`, then --runtime=ai-edge-litert); "
            "or convert a mode whose ops this runtime knows (python -m converter.check names them).",
            op=op,
            version=version,
        )
    custom = _MISSING_CUSTOM_OP.search(text)
    if custom:
        return ModelLoadError(
            f"{runtime.name} {runtime.version} cannot run {str(path)!r}: custom op {custom['op']} "
            "is not built in. Convert without Flex/custom ops (this project's modes use none).",
            op=custom["op"],
        )
    refused = _KERNEL_REFUSED.search(text)
    if refused and refused["op"] != "TfLiteXNNPackDelegate":
        return ModelLoadError(
            f"{runtime.name} {runtime.version} cannot run {str(path)!r}: its {refused['op']} kernel refuses "
            f"the model's tensors ({text.strip()}). {_NEWEST_LITERT} runs it (`pip install {_NEWEST_LITERT}`, "
            "then --runtime=ai-edge-litert); or convert a mode whose ops this runtime knows "
            "(python -m converter.check names them).",
            op=refused["op"],
        )
    if "not a valid Flatbuffer" in text or "Could not open" in text:
        return tflite_file.ModelFileError(
            f"{runtime.name} could not read {str(path)!r} ({text.strip()}); the file is corrupt. "
            "Copy or convert it again."
        )
    return ModelLoadError(f"{runtime.name} {runtime.version} could not load {str(path)!r}: {text.strip()}")


class _OnnxRunner:
    """ONNX Runtime with I/O binding, so timing excludes output allocation as in LiteRT."""

    def __init__(self, path, *, threads: int):
        self.runtime = runtime_info(Runtime.ONNXRUNTIME)
        self.threads = threads
        ort = _import_runtime(Runtime.ONNXRUNTIME)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception classes
            raise ModelLoadError(f"onnxruntime could not load {str(path)!r}: {error}") from None
        self._ort = ort
        inputs = {node.name: node for node in self._session.get_inputs()}
        outputs = {node.name: node for node in self._session.get_outputs()}
        if TOKEN_IDS not in inputs or LOGITS not in outputs:
            raise ValueError(
                f"{str(path)!r}: inputs {sorted(inputs)} and outputs {sorted(outputs)}; expected "
                f"'{TOKEN_IDS}' in and '{LOGITS}' out."
            )
        self.input_names = tuple(inputs)
        self._input_types = {name: _onnx_dtype(node.type) for name, node in inputs.items()}
        token_shape = [1 if not isinstance(d, int) else d for d in inputs[TOKEN_IDS].shape]
        logits_shape = [1 if not isinstance(d, int) else d for d in outputs[LOGITS].shape]
        if not isinstance(outputs[LOGITS].shape[1], int):
            logits_shape[1] = token_shape[1]
        self.seq_len, self.vocabulary_size = _lm_shapes(str(path), token_shape, logits_shape)
        self._binding = self._session.io_binding()
        self._output = None

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> None:
        self._binding.clear_binding_inputs()
        self._binding.clear_binding_outputs()
        for name in self.input_names:
            array = np.ascontiguousarray(inputs[name], dtype=self._input_types[name])
            self._binding.bind_cpu_input(name, array)
        shape = (1, self.seq_len, self.vocabulary_size)
        self._output = self._ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cpu", 0)
        self._binding.bind_ortvalue_output(LOGITS, self._output)

    def invoke(self) -> None:
        self._session.run_with_iobinding(self._binding)

    def logits(self) -> np.ndarray:
        return self._output.numpy()


def _onnx_dtype(type_name: str) -> Any:
    return {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32}.get(type_name, np.int32)
