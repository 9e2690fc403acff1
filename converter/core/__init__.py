"""The conversion core: modes, recipes, calibration forms, wrapping, `convert_keras` and its result.

Imports flow down from here to `converter.passes`, `converter.models`,
`converter.compat` and the file toolkit; TensorFlow and Keras are imported
inside the functions that need them.
"""

from converter.core.calibration import FORMS as CALIBRATION_FORMS
from converter.core.conversion import DEFAULT_SEQ_LEN, agreement_warning, convert_keras, resolve_seq_len
from converter.core.modes import MODE_NAMES, Mode, parse_mode
from converter.core.recipe import DEFAULT_NUM_CALIBRATION_SAMPLES, CalibrationSettings, Recipe, resolve_recipe
from converter.core.results import (
    DEFAULT_BUILD_DIR,
    ConversionResult,
    artifact_paths,
    default_output_path,
    package_versions,
    windows_paths,
)
from converter.core.rewriting import apply_post_calibration

__all__ = [
    "CALIBRATION_FORMS",
    "CalibrationSettings",
    "ConversionResult",
    "DEFAULT_BUILD_DIR",
    "DEFAULT_NUM_CALIBRATION_SAMPLES",
    "DEFAULT_SEQ_LEN",
    "MODE_NAMES",
    "Mode",
    "Recipe",
    "agreement_warning",
    "apply_post_calibration",
    "artifact_paths",
    "convert_keras",
    "default_output_path",
    "package_versions",
    "parse_mode",
    "resolve_recipe",
    "resolve_seq_len",
    "windows_paths",
]
