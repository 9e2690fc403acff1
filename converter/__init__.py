"""Convert Keras language models to LiteRT (`.tflite`) in float, float16 and quantized modes.

TensorFlow and Keras are imported lazily, inside the functions that need them,
so importing this package (and `--help`) stays fast.
"""

from converter.android_export import AndroidExport, export_android
from converter.auto import AutoResult, auto_convert
from converter.conversion import ConversionResult, convert_keras, default_output_path
from converter.inspection import ModelInspection, inspect_model
from converter.modes import MODE_NAMES, Mode, parse_mode
from converter.model_sources import BUILTIN_MODELS, LoadedModel, load_model
from converter.selective import keep_in_float

__all__ = [
    "AndroidExport",
    "AutoResult",
    "BUILTIN_MODELS",
    "ConversionResult",
    "LoadedModel",
    "MODE_NAMES",
    "Mode",
    "ModelInspection",
    "auto_convert",
    "convert_keras",
    "default_output_path",
    "export_android",
    "inspect_model",
    "keep_in_float",
    "load_model",
    "parse_mode",
]
