"""The device side: latency, memory, size and LM accuracy of converted models.

Imports numpy and a LiteRT runtime (`ai_edge_litert` or `tflite_runtime`) only,
never TensorFlow or Keras, so it runs on a Raspberry Pi as it is. ONNX Runtime
is an optional peer backend.
"""

from benchmarks.accuracy import AccuracyAccumulator, AccuracyResult, kl_divergence, next_token_nll, top1_agreement
from benchmarks.generation import (
    CacheBinding,
    GeneratedText,
    Generation,
    Generator,
    NotAGenerationModelError,
    Sampling,
    generate_text,
)
from benchmarks.harness import benchmark_file, check_windows_fit, evaluate_accuracy, measure
from benchmarks.machine import MachineInfo, machine_info
from benchmarks.results import BenchmarkResult, MemoryStats, ModelInfo, check_results_dir, load_results
from benchmarks.runtimes import (
    RUNTIME_NAMES,
    ModelLoadError,
    Runner,
    Runtime,
    RuntimeInfo,
    RuntimeUnavailableError,
    open_runner,
)
from benchmarks.text import TextStream, TextTokenizer, load_text_tokenizer
from benchmarks.timing import LatencyStats
from converter.common.files import sha256_of
from converter.tflite_file.validation import ModelFileError, check_model_file

__all__ = [
    "AccuracyAccumulator",
    "AccuracyResult",
    "BenchmarkResult",
    "CacheBinding",
    "GeneratedText",
    "Generation",
    "Generator",
    "LatencyStats",
    "MachineInfo",
    "MemoryStats",
    "NotAGenerationModelError",
    "ModelFileError",
    "ModelInfo",
    "ModelLoadError",
    "RUNTIME_NAMES",
    "Runner",
    "Runtime",
    "RuntimeInfo",
    "RuntimeUnavailableError",
    "Sampling",
    "TextStream",
    "TextTokenizer",
    "benchmark_file",
    "check_model_file",
    "check_results_dir",
    "check_windows_fit",
    "evaluate_accuracy",
    "generate_text",
    "kl_divergence",
    "load_results",
    "load_text_tokenizer",
    "machine_info",
    "measure",
    "next_token_nll",
    "open_runner",
    "sha256_of",
    "top1_agreement",
]
