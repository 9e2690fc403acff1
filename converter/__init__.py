"""Convert Keras language models to LiteRT (`.tflite`): float, float16 and quantized, checked and reported.

The public API, one import away:

    import converter
    result = converter.convert_keras(model, "int8", calibration="builtin")
    recipe = converter.Recipe.load("build/m/m_int8.json")      # rebuild from a report
    search = converter.auto_convert(model, max_ppl_increase="2%", calibration=..., evaluation=...)
    converter.export_android(result, "app/src/main/assets", tokenizer=tokenizer)

Names are loaded on first use, so `import converter` (and `--help`, and the
device side, which uses the TensorFlow-free `converter.common` and
`converter.tflite_file`) stays fast; TensorFlow itself is imported only
inside the functions that convert. The layers, top to bottom: `cli` ->
`tools`, `deploy` -> `core` -> `passes`, `models` -> `compat` ->
`tflite_file` -> `common` (CONTRIBUTING.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module that defines it.
_EXPORTS = {
    "AndroidExport": "converter.deploy.android_export",
    "DeviceTokenizerExport": "converter.deploy",
    "export_device_tokenizer": "converter.deploy",
    "LitertLmBundle": "converter.deploy",
    "export_litertlm": "converter.deploy",
    "GenerationSettings": "converter.core.generation",
    "export_android": "converter.deploy.android_export",
    "AutoResult": "converter.tools.auto",
    "auto_convert": "converter.tools.auto",
    "BUILTIN_MODELS": "converter.models",
    "DEFAULT_MODEL": "converter.models",
    "LoadedModel": "converter.models",
    "load_model": "converter.models",
    "CALIBRATION_FORMS": "converter.core",
    "CalibrationSettings": "converter.core",
    "ConversionResult": "converter.core",
    "MODE_NAMES": "converter.core",
    "Mode": "converter.core",
    "Recipe": "converter.core",
    "convert_keras": "converter.core",
    "default_output_path": "converter.core",
    "parse_mode": "converter.core",
    "ModelInspection": "converter.tflite_file",
    "inspect_model": "converter.tflite_file",
    "keep_in_float": "converter.passes",
    "smoothed": "converter.passes",
    "QuantDebugReport": "converter.tools.quant_debug",
    "debug_quantization": "converter.tools.quant_debug",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for readers and type checkers only
    from converter.core import (  # noqa: F401
        CALIBRATION_FORMS,
        MODE_NAMES,
        CalibrationSettings,
        ConversionResult,
        Mode,
        Recipe,
        convert_keras,
        default_output_path,
        parse_mode,
    )
    from converter.core.generation import GenerationSettings  # noqa: F401
    from converter.deploy import DeviceTokenizerExport, LitertLmBundle, export_device_tokenizer, export_litertlm  # noqa: F401
    from converter.deploy.android_export import AndroidExport, export_android  # noqa: F401
    from converter.models import BUILTIN_MODELS, DEFAULT_MODEL, LoadedModel, load_model  # noqa: F401
    from converter.passes import keep_in_float, smoothed  # noqa: F401
    from converter.tflite_file import ModelInspection, inspect_model  # noqa: F401
    from converter.tools.auto import AutoResult, auto_convert  # noqa: F401
    from converter.tools.quant_debug import QuantDebugReport, debug_quantization  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'converter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
