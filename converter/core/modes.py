"""Conversion modes and the one place that maps each to TFLiteConverter settings."""

from __future__ import annotations

import enum
from collections.abc import Callable


class Mode(str, enum.Enum):
    """Precision of the converted model.

    The naming follows what is stored and what is computed:
      fp32: float weights, float compute (the reference).
      fp16: float16 weights, dequantized to float32 at load time.
      dynamic: int8 weights, float activations quantized on the fly per op.
      int8: int8 weights and int8 activations, calibrated on token windows;
        token ids stay int32 and logits come out as float32.
      int16x8: int16 activations with int8 weights, calibrated; ops LiteRT
        cannot run in int16 stay float (listed in the report).
      int4: int4 weights (per channel, or blockwise with the recipe's block
        size), float activations quantized on the fly, written by
        ai-edge-quantizer; GPTQ values from calibration windows by default.
    """

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    INT16X8 = "int16x8"
    INT4 = "int4"

    @property
    def needs_calibration(self) -> bool:
        return self in (Mode.INT8, Mode.INT16X8)

    @property
    def quantizes_weights(self) -> bool:
        return self in (Mode.DYNAMIC, Mode.INT8, Mode.INT16X8, Mode.INT4)

    @property
    def converts_through_fp32(self) -> bool:
        """The TF converter writes fp32 and a pass on the flatbuffer quantizes (int4: passes.int4)."""
        return self is Mode.INT4


MODE_NAMES = tuple(mode.value for mode in Mode)

# Ops that the 16x8 quantizer marks int16 but LiteRT 2.3 has no int16 kernel
# for ("SquaredDifference only supports FLOAT32 and INT32"); they run in float.
FLOAT_FALLBACK_OPS = {
    Mode.INT16X8: ("SQUARED_DIFFERENCE",),
}


# Ops an int8 model runs in float unless told otherwise (`convert_keras(keep_float=...)`).
# LiteRT 2.3's XNNPACK delegate runs SOFTMAX only in float; the int8 kernel
# left to LiteRT was 11 % of tiny-gpt2's int8 time, and float is also exact.
DEFAULT_KEEP_FLOAT = {
    Mode.INT8: ("SOFTMAX",),
}


def parse_mode(value: str | Mode) -> Mode:
    """Returns the `Mode` named by `value`.

    Raises:
      ValueError: the name is not a mode; the message lists the valid ones.
    """
    if isinstance(value, Mode):
        return value
    try:
        return Mode(str(value).strip().lower())
    except ValueError:
        raise ValueError(f"Unknown mode {value!r}. Valid modes: {', '.join(MODE_NAMES)}.") from None


def configure_converter(converter, mode: Mode, *, representative_dataset: Callable | None) -> None:
    """Sets `converter` (a `tf.lite.TFLiteConverter`) up for `mode`.

    Args:
      converter: the converter to configure in place.
      mode: the target mode.
      representative_dataset: calibration generator; required by int8/int16x8.

    Raises:
      ValueError: a calibrated mode without a representative dataset.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    if mode.needs_calibration and representative_dataset is None:
        raise ValueError(f"Mode {mode.value} needs a representative dataset.")
    if mode is Mode.FP32 or mode.converts_through_fp32:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode is Mode.FP16:
        converter.target_spec.supported_types = [tf.float16]
    elif mode is Mode.DYNAMIC:
        pass
    elif mode is Mode.INT8:
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    elif mode is Mode.INT16X8:
        converter.representative_dataset = representative_dataset
        # TFLITE_BUILTINS lets ops without a 16x8 kernel (NEG, SELECT_V2) stay float.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    else:  # pragma: no cover - guarded by the enum
        raise ValueError(f"Unknown mode {mode!r}. Valid modes: {', '.join(MODE_NAMES)}.")
