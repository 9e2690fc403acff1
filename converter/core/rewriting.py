"""The one place that applies a recipe's rewrites to a converted model, in their one order.

`convert_keras` calls `apply_post_calibration` on the model the TFLite
converter calibrated; `auto` calls it on one bare calibration per mode to make
every candidate. Rewrites that must happen before calibration (the mask fill,
the measured ranges) are applied inside the conversion itself
(`conversion.py`), since the converter offers no other place for them.
"""

from __future__ import annotations

from converter.core import modes
from converter.core.recipe import Recipe
from converter.passes import graph_surgery, int4, selective, symmetric_operands
from converter.passes.result import SurgeryResult


def apply_post_calibration(model: bytes, recipe: Recipe) -> SurgeryResult:
    """Applies the rewrites that follow calibration, in order.

    1. int16x8: ops without an int16 kernel run in float between a
       DEQUANTIZE and a QUANTIZE (`modes.FLOAT_FALLBACK_OPS`).
    2. The float region: the residual stream and norm statistics
       (`recipe.float_residual_stream`) and the selective choices
       (`recipe.keep_float`), as one region.
    3. int8: symmetric attention operands (`recipe.symmetric_matmul`), last,
       since the float region decides which BATCH_MATMULs stay int8.

    Args:
      model: the calibrated model, as the TFLite converter wrote it.
      recipe: the recipe it was calibrated for.

    Returns:
      The rewritten model and one line per change.
    """
    changes: list[str] = []
    fallback = modes.FLOAT_FALLBACK_OPS.get(recipe.mode)
    if fallback:
        floated = graph_surgery.run_ops_in_float(model, fallback)
        model, changes = floated.model, changes + list(floated.changes)
    if recipe.mode.needs_calibration and recipe.float_region:
        floated = selective.keep_in_float(model, recipe.keep_float, residual_stream=recipe.float_residual_stream)
        model, changes = floated.model, changes + list(floated.changes)
    if recipe.symmetric_matmul:
        symmetric = symmetric_operands.symmetric_matmul_operands(model)
        model, changes = symmetric.model, changes + list(symmetric.changes)
    return SurgeryResult(model=bytes(model), changes=tuple(changes))


def apply_weight_quantization(
    model: bytes,
    recipe: Recipe,
    *,
    feeds=(),
    positions=None,
    signature: str | None = None,
    hessians=None,
    progress: bool = True,
) -> SurgeryResult:
    """Quantizes the weights of an fp32 model the TF converter wrote, for modes that do it on the flatbuffer.

    int4: `passes.int4.quantize` (embedding lookup, ai-edge-quantizer, GPTQ
    values from `feeds`). Other modes: the model unchanged.
    """
    options = recipe.int4_options
    if options is None:
        return SurgeryResult(model=bytes(model), changes=())
    return int4.quantize(
        model, options, feeds=feeds, positions=positions, signature=signature, hessians=hessians, progress=progress
    )
