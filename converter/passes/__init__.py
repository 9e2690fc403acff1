"""Rewrites that make a quantized LM accurate and fast: of the Keras weights and of the `.tflite` graph.

One job per module: `graph_surgery` (index wrap, mask fill, float fallback
for ops without a kernel), `calibration_ranges` (ranges without shared
buffers), `float_regions` (a set of ops run in float, tensors between them
float), `selective` (which ops: groups found by graph pattern),
`symmetric_operands` (zero points XNNPACK needs), `smoothing` (SmoothQuant on
the Keras weights), `int4` (int4 weights through ai-edge-quantizer, GPTQ
values). Which of them a conversion applies, and in what order, is
decided in one place: `converter.core.rewriting`, from a `Recipe`.
"""

from converter.passes.int4 import Int4Options
from converter.passes.result import SurgeryResult
from converter.passes.selective import keep_in_float, parse_choices
from converter.passes.smoothing import smoothed

__all__ = ["Int4Options", "SurgeryResult", "keep_in_float", "parse_choices", "smoothed"]
