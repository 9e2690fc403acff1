"""Calibration ranges measured without in-place buffer sharing.

TensorFlow 2.21's calibrator (`tensorflow.lite.python.optimize.calibrator`,
which `TFLiteConverter` uses for int8 and int16x8) runs the float model in an
interpreter that logs each op's inputs *after* the op has run. LiteRT lets an
elementwise op such as ADD write its result into its first input's buffer when
nothing reads that input later, so the logged input is partly the op's output
and the input's range becomes the union of both. In a transformer the first
input of every residual ADD is an attention or MLP output projection: its int8
range becomes the residual stream's. Measured here: 23 tensors of tiny-gpt2
with ranges up to 4.6x too wide, 138 of SmolLM2-135M up to 1180x (every
output projection of layers 12-28 was calibrated to [-1250, 29300], the range of
the residual's massive activation, instead of about +-30, so each one rounded to
zero).

`measured_ranges()` replaces, while it is active, the min/max the calibrator
records with min/max measured by running the same float model with
`experimental_preserve_all_tensors=True` (no buffer shared) on the same
samples. Tensors that no op overwrote keep the same range: the two
measurements agree on them. Measuring costs one more float pass over the
calibration samples (6 s for tiny-gpt2, 2.5 min for SmolLM2-135M on 2 cores).

The measuring functions need only `ai_edge_litert` and numpy; the context
manager patches TensorFlow's calibrator class and imports TensorFlow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from converter.tflite_file import inspection, writing


def measure_ranges(model: bytes, samples: Iterable[Any]) -> dict[int, tuple[float, float]]:
    """Min and max of every float tensor of `model` over `samples`, no buffer shared.

    Args:
      model: a float `.tflite` model.
      samples: calibration samples: dicts keyed by signature input name, or
        lists of arrays in the order of the model's inputs.

    Returns:
      Tensor index (subgraph 0) -> (min, max), for tensors that held values.

    Raises:
      ValueError: `samples` is empty.
    """
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel

    runner = litert.Interpreter(
        model_content=bytes(model),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    runner.allocate_tensors()
    signatures = runner._get_full_signature_list()  # pylint: disable=protected-access
    by_name = next(iter(signatures.values()))["inputs"] if signatures else {}
    in_order = [detail["index"] for detail in runner.get_input_details()]
    floats = [d["index"] for d in runner.get_tensor_details() if d["dtype"] == np.float32]
    lowest: dict[int, float] = {}
    highest: dict[int, float] = {}
    count = 0
    for sample in samples:
        pairs = sample.items() if isinstance(sample, Mapping) else zip(in_order, sample)
        for key, value in pairs:
            runner.set_tensor(by_name[key] if isinstance(key, str) else key, np.asarray(value))
        runner.invoke()
        for index in floats:
            try:
                values = runner.get_tensor(index)
            except ValueError:  # a tensor without data (an omitted optional input)
                continue
            if values.size:
                lowest[index] = min(lowest.get(index, np.inf), float(values.min()))
                highest[index] = max(highest.get(index, -np.inf), float(values.max()))
        count += 1
    if count == 0:
        raise ValueError("measure_ranges needs at least one calibration sample.")
    return {index: (lowest[index], highest[index]) for index in lowest}


def apply_ranges(calibrated: bytes, ranges: Mapping[int, tuple[float, float]]) -> tuple[bytes, list[str]]:
    """Writes measured ranges into a calibrated model's min/max statistics.

    Args:
      calibrated: the calibrator's output (float model with min/max per tensor).
      ranges: tensor index -> (min, max) from `measure_ranges` on the same model.

    Returns:
      The model with the measured ranges, and one line per tensor whose
      recorded range was more than 1 % wider or narrower than measured.
    """
    model_object = inspection.load_model_object(calibrated)
    subgraph = model_object.subgraphs[0]
    corrected = []
    for index, tensor in enumerate(subgraph.tensors):
        stats = tensor.quantization
        if index not in ranges or stats is None or stats.min is None or len(stats.min) != 1:
            continue
        low, high = ranges[index]
        old_low, old_high = float(stats.min[0]), float(stats.max[0])
        span = max(high - low, 1e-12)
        if abs(old_low - low) > 0.01 * span or abs(old_high - high) > 0.01 * span:
            corrected.append(
                f"{inspection.decode_name(tensor.name)}: recorded [{old_low:.4g}, {old_high:.4g}], "
                f"measured [{low:.4g}, {high:.4g}]"
            )
        stats.min = np.asarray([low], dtype=np.float32)
        stats.max = np.asarray([high], dtype=np.float32)
    return writing.pack(model_object), corrected


@contextlib.contextmanager
def measured_ranges(*, corrections: list[str] | None = None) -> Iterator[None]:
    """While active, TensorFlow's calibrator records ranges measured without shared buffers.

    Both quantizers are covered: the int8 path (`Calibrator.calibrate`, then
    the MLIR quantizer) and the int16x8 path (`Calibrator.calibrate_and_quantize`,
    which then quantizes from a model that already holds the measured ranges
    and logs none of its own).

    Args:
      corrections: if given, one line per corrected tensor is appended to it.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from tensorflow.lite.python.optimize import (  # pylint: disable=import-outside-toplevel
        _pywrap_tensorflow_lite_calibration_wrapper as wrapper_module,
    )
    from tensorflow.lite.python.optimize import calibrator  # pylint: disable=import-outside-toplevel

    stock_calibrate = calibrator.Calibrator.calibrate
    stock_calibrate_and_quantize = calibrator.Calibrator.calibrate_and_quantize

    def calibrate(self, dataset_gen: Callable[[], Iterable[Any]]):
        calibrated = stock_calibrate(self, dataset_gen)
        fixed, corrected = apply_ranges(calibrated, measure_ranges(self._model_content, dataset_gen()))  # pylint: disable=protected-access
        if corrections is not None:
            corrections.extend(corrected)
        return fixed

    def calibrate_and_quantize(
        self,
        dataset_gen,
        input_type,
        output_type,
        allow_float,
        activations_type=tf.int8,
        bias_type=tf.int32,
        resize_input=True,
        disable_per_channel=False,
        disable_per_channel_quantization_for_dense_layers=False,
    ):
        del resize_input  # calibrate() resizes, as the stock method does
        calibrated = calibrate(self, dataset_gen)
        # A fresh wrapper has logged nothing, so it quantizes from the ranges in the model.
        fresh = wrapper_module.CalibrationWrapper(calibrated, [], [])
        fresh.Prepare()
        return fresh.QuantizeModel(
            np.dtype(input_type.as_numpy_dtype()).num,
            np.dtype(output_type.as_numpy_dtype()).num,
            allow_float,
            np.dtype(activations_type.as_numpy_dtype()).num,
            np.dtype(bias_type.as_numpy_dtype()).num,
            disable_per_channel,
            disable_per_channel_quantization_for_dense_layers,
        )

    # The converter builds its Calibrator inside `_quantize`; the class is the
    # only place to reach it. Restored on exit, also on error.
    calibrator.Calibrator.calibrate = calibrate
    calibrator.Calibrator.calibrate_and_quantize = calibrate_and_quantize
    try:
        yield
    finally:
        calibrator.Calibrator.calibrate = stock_calibrate
        calibrator.Calibrator.calibrate_and_quantize = stock_calibrate_and_quantize
