"""`convert_keras`: a Keras LM and a recipe in, a `.tflite` model and its report out."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import Any

from converter.common import progress as progress_lib
from converter.common import resources
from converter.core import calibration as calibration_lib
from converter.core import generation as generation_lib
from converter.core import modes, results, rewriting, wrapping
from converter.core.generation import GenerationSettings
from converter.core.recipe import Recipe, resolve_recipe
from converter.core.results import (
    ConversionResult,
    artifact_paths,
    check_writable,
    model_fields,
    now_utc,
    package_versions,
)
from converter.models import model_sources
from converter.passes import calibration_ranges, graph_surgery, int4
from converter.tflite_file import inspection

DEFAULT_SEQ_LEN = 128
# Calibration samples run through the float model to measure attention scores
# before the mask fill is bounded; a few windows give the range.
_MASK_PROBE_SAMPLES = 8
# Windows used for the built-in check against the Keras model.
_CHECK_WINDOWS = 2
# Tokens of each window the generation check prefills and decodes.
_GENERATION_CHECK_TOKENS = 48
_TAG = "convert"
# Below this top-1 agreement with Keras the CLI warns that the mode loses accuracy.
LOW_AGREEMENT = 0.9


def preflight(
    model: Any,
    recipe: Recipe,
    *,
    calibration: Any = None,
    seq_len: int | None = None,
    output_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    target_runtime: str | None = None,
) -> None:
    """Checks everything that is cheap to check, before any model is loaded.

    Raises:
      ValueError, TypeError, FileExistsError, FileNotFoundError: as `convert_keras`.
    """
    mode = recipe.mode
    if recipe.uses_calibration and not mode.needs_calibration and calibration is None:
        raise ValueError(
            f"Recipe {recipe.name} chooses int4 values by GPTQ on calibration windows and needs calibration "
            "data: pass calibration='builtin' (the built-in corpus), a .txt or .jsonl file, a .npz of token "
            f"windows or token ids (CLI: --calibration=...), or use {recipe.name.split('+')[0]}-rtn (round to "
            "nearest, no calibration)."
        )
    if mode.needs_calibration and calibration is None:
        raise ValueError(
            f"Mode {mode.value} calibrates activation ranges and needs calibration data. "
            "Pass calibration='builtin' (the built-in corpus), a .txt or .jsonl file, a "
            ".npz of token windows, token ids or a representative dataset (CLI: --calibration=...)."
        )
    if seq_len is not None and seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}.")
    if output_path is not None:
        check_writable(artifact_paths(output_path)[0], overwrite=overwrite)
    calibration_lib.check_calibration(calibration)
    if isinstance(model, (str, os.PathLike)) and os.fspath(model) not in model_sources.BUILTIN_MODELS:
        model_sources.check_model_path(model)
    if target_runtime is not None:
        from converter.compat import runtime_support  # pylint: disable=import-outside-toplevel

        runtime_support.load_table().select([target_runtime])  # a runtime never probed is refused here


def _check_int4_widths(model: Any, recipe: Recipe) -> None:
    """Refuses an int4 block size that a keras-hub model's layer widths do not divide, before any tracing.

    (Any other model is checked on its fp32 flatbuffer, before quantization: `passes.int4.check_block_size`.)
    """
    options = recipe.int4_options
    backbone = getattr(model, "backbone", model)
    if options is None or not options.block_size:
        return
    for attribute in ("hidden_dim", "intermediate_dim"):
        width = getattr(backbone, attribute, None)
        if isinstance(width, int) and width % options.block_size:
            raise ValueError(
                f"int4 block size {options.block_size} does not divide the model's {attribute} {width}, the input "
                f"width of some of its FULLY_CONNECTED layers; pick one that does "
                f"({', '.join(str(b) for b in int4.BLOCK_SIZES[1:] if width % b == 0) or 'none does'}), or "
                "0 / mode int4 for per-channel scales."
            )


def resolve_seq_len(model: Any, seq_len: int | None) -> int:
    """The sequence length to trace: the one asked for, or 128 capped at the model's maximum.

    Raises:
      ValueError: `seq_len` is above the model's maximum sequence length.
    """
    limit = wrapping.model_facts(model).max_sequence_length
    if seq_len is None:
        return min(DEFAULT_SEQ_LEN, limit) if limit else DEFAULT_SEQ_LEN
    if limit is not None and seq_len > limit:
        raise ValueError(
            f"seq_len {seq_len} is above the model's maximum sequence length {limit}. Pass seq_len <= {limit}."
        )
    return seq_len


def convert_keras(
    model: Any,
    mode: str | modes.Mode | None = None,
    *,
    recipe: Recipe | str | os.PathLike | None = None,
    calibration: Any = None,
    seq_len: int | None = None,
    padding_mask: bool = False,
    output_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    name: str | None = None,
    build_dir: str | os.PathLike = "build",
    progress: bool = True,
    target_runtime: str | None = None,
    num_calibration_samples: int | None = None,
    seed: int | None = None,
    measured_ranges: bool | None = None,
    float_residual_stream: bool | None = None,
    keep_float: str | Iterable[str] | None = None,
    symmetric_matmul: bool | None = None,
    generation: GenerationSettings | bool | None = None,
) -> ConversionResult:
    """Converts a Keras language model to a LiteRT `.tflite` model.

    Args:
      model: a keras-hub CausalLM or Backbone, a `keras.Model` mapping int32
        token ids (and optionally a padding mask) to logits, a path to a
        `.keras` file or a local keras-hub preset folder, or a built-in name
        (`converter.BUILTIN_MODELS`).
      mode: one of `modes.Mode` (fp32, fp16, dynamic, int8, int16x8); may be
        left out when `recipe` is given.
      recipe: a `Recipe` (or a recipe / conversion report `.json`) deciding
        the mode, the rewrites and the calibration settings at once. Without
        one, the mode's default recipe with the switches below.
      calibration: required by int8 and int16x8, in any form of
        `core.calibration.FORMS`: `"builtin"`, a `.txt`/`.jsonl` file
        (tokenized with the model's own tokenizer), a `.npz` of windows,
        `representative_data.TokenWindows`, token ids `[N, seq_len]`, a dict
        of arrays keyed by input name, a list of such dicts, or a
        `representative_dataset`-style callable.
      seq_len: fixed sequence length; defaults to 128, capped at the model's
        maximum.
      padding_mask: give the model a `padding_mask` input as well.
      output_path: where to save the `.tflite` (and its `.json` report); None
        keeps the result in memory only.
      overwrite: replace an existing output.
      name: artifact name (defaults to the model's).
      build_dir: where built-in models are cached.
      progress: show progress on stderr.
      target_runtime: a runtime the model must load in, e.g.
        `tflite-runtime==2.14` (see `python -m converter.check`); None: no target.
      num_calibration_samples, seed: calibration windows to use (64) and the
        seed of the calibration/evaluation split (0); part of the recipe.
      measured_ranges, float_residual_stream, keep_float, symmetric_matmul:
        the recipe's switches one by one (`Recipe` says what each does);
        None takes the mode's default. Not together with `recipe`.
      generation: write generation signatures instead of the fixed window:
        `prefill_<T>` and `decode` with a per-layer KV cache (True: the
        default `GenerationSettings`, context 1024). keras-hub GPT-2 and Llama
        LMs, in fp32, fp16 and dynamic.

    Returns:
      A `ConversionResult`, saved to `output_path` when one is given.

    Raises:
      ValueError: unknown mode, a recipe step that does not apply to the
        mode, missing or invalid calibration data, a model that does not map
        token ids to [1, seq_len, vocab] logits, a seq_len above the model's
        maximum, a target runtime that was never probed.
      TypeError: calibration data in no accepted form (the message lists them).
      compat.check.IncompatibleModelError (a ValueError): the target runtime
        cannot load the converted model; nothing is written, the message names
        the op and version and a mode that loads there.
      FileExistsError: the output exists and `overwrite` is False.
      FileNotFoundError: a model or calibration path does not exist.
    """
    recipe = resolve_recipe(
        mode,
        recipe,
        keep_float=keep_float,
        measured_ranges=measured_ranges,
        float_residual_stream=float_residual_stream,
        symmetric_matmul=symmetric_matmul,
        num_calibration_samples=num_calibration_samples,
        seed=seed,
    )
    preflight(
        model,
        recipe,
        calibration=calibration,
        seq_len=seq_len,
        output_path=output_path,
        overwrite=overwrite,
        target_runtime=target_runtime,
    )
    generation = _generation_settings(generation, recipe=recipe, seq_len=seq_len, padding_mask=padding_mask)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    described = model if isinstance(model, (str, os.PathLike)) else getattr(model, "name", type(model).__name__)
    progress_lib.log(_TAG, f"loading model {described}", enabled=progress)
    loaded = model_sources.load_model(model, name=name, build_dir=build_dir)
    _check_int4_widths(loaded.model, recipe)
    if generation is not None:
        return _convert_for_generation(
            loaded,
            recipe,
            generation,
            calibration=calibration,
            output_path=output_path,
            overwrite=overwrite,
            target_runtime=target_runtime,
            progress=progress,
        )
    seq_len = resolve_seq_len(loaded.model, seq_len)
    wrapped = wrapping.wrap_model(loaded.model, seq_len=seq_len, padding_mask=padding_mask)
    vocabulary_size = int(wrapped.outputs[0].shape[-1])
    input_names = [wrapping.TOKEN_IDS] + ([wrapping.PADDING_MASK] if padding_mask else [])

    windows, calibration_info = None, None
    if recipe.uses_calibration or calibration is not None:
        import representative_data  # pylint: disable=import-outside-toplevel

        windows, calibration_info = _calibration_windows(
            calibration, loaded, seq_len=seq_len, recipe=recipe, progress=progress
        )
        representative_data.validate_windows(windows, vocabulary_size=vocabulary_size, seq_len=seq_len)
        used = min(recipe.calibration.num_samples, windows.num_windows)
        calibration_info.update(
            {"num_samples": used, "seed": recipe.calibration.seed, "windows_available": windows.num_windows}
        )

    progress_lib.log(_TAG, f"converting {loaded.name} to {recipe.name} (seq_len {seq_len})", enabled=progress)
    with resources.track_resources() as usage:
        model_bytes, changes = _convert(wrapped, recipe, windows=windows, input_names=input_names, progress=progress)
    progress_lib.log(
        _TAG, f"converted in {usage.seconds:.1f} s, peak RSS {usage.peak_rss_bytes / 2**20:.0f} MiB", enabled=progress
    )

    inspected = inspection.inspect_model(model_bytes)
    check = _check_against_keras(
        wrapped, model_bytes, windows, seq_len=seq_len, vocabulary_size=vocabulary_size, input_names=input_names
    )
    result = ConversionResult(
        model_name=loaded.name,
        model_source=loaded.source,
        mode=recipe.mode.value,
        seq_len=seq_len,
        vocabulary_size=vocabulary_size,
        **model_fields(model_bytes, inspected),
        path=None,
        graph_changes=tuple(changes),
        check=check,
        conversion_seconds=round(usage.seconds, 3),
        peak_rss_bytes=usage.peak_rss_bytes,
        rss_before_bytes=usage.start_rss_bytes,
        calibration=calibration_info,
        versions=package_versions(),
        created=now_utc(),
        recipe=recipe.to_dict(),
    )
    return _finish(
        result,
        inspected,
        target_runtime=target_runtime,
        output_path=output_path,
        overwrite=overwrite,
        progress=progress,
    )


def _finish(result: ConversionResult, inspected, *, target_runtime, output_path, overwrite, progress):
    """Refuses a model the target runtime cannot load, then saves it when asked."""
    if target_runtime is not None:
        from converter.compat import check as compat_check  # pylint: disable=import-outside-toplevel

        compat_check.require_loadable(
            compat_check.check_model(inspected, runtimes=[target_runtime]),
            mode=result.mode,
            everywhere=compat_check.check_model(inspected),
        )
        progress_lib.log(_TAG, f"{target_runtime} loads it (python -m converter.check)", enabled=progress)
    if output_path is not None:
        result = result.save(output_path, overwrite=overwrite)
        progress_lib.log(
            _TAG, f"wrote {result.path} ({result.size_bytes / 2**20:.2f} MiB) and its .json report", enabled=progress
        )
    return result


def _generation_settings(generation, *, recipe: Recipe, seq_len, padding_mask) -> GenerationSettings | None:
    """The generation settings asked for, refused with the reason before the model is loaded."""
    if generation is None or generation is False:
        return None
    settings = GenerationSettings() if generation is True else generation
    if not isinstance(settings, GenerationSettings):
        raise TypeError(f"generation must be True or GenerationSettings, got {type(generation).__name__}.")
    if seq_len is not None:
        raise ValueError(
            "seq_len is the fixed window's length; a generation model takes "
            "GenerationSettings(context_length=...) instead."
        )
    if padding_mask:
        raise ValueError("Generation signatures take tokens and input_pos; they have no padding_mask input.")
    generation_lib.check_mode(recipe.mode)
    return settings


def _check_windows(calibration_windows, vocabulary_size: int, context: int, count: int = _CHECK_WINDOWS):
    """Token sequences for the check against Keras: real calibration text where there is some."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    length = min(_GENERATION_CHECK_TOKENS, context)
    if calibration_windows is not None and calibration_windows.seq_len >= length:
        rows = calibration_windows.token_ids[:count, :length]
        return [list(map(int, row)) for row in rows], "calibration windows"
    rng = np.random.default_rng(0)
    return [list(map(int, rng.integers(0, vocabulary_size, length))) for _ in range(count)], "random token ids"


def _convert_for_generation(
    loaded,
    recipe: Recipe,
    settings: GenerationSettings,
    *,
    calibration,
    output_path,
    overwrite,
    target_runtime,
    progress,
) -> ConversionResult:
    """`convert_keras(..., generation=...)` once the model is loaded: the signatures, their check, the report."""
    import representative_data  # pylint: disable=import-outside-toplevel

    shape = generation_lib.check_generation(loaded.model, settings, recipe.mode)
    windows, calibration_info = None, None
    if calibration is not None:
        windows, calibration_info = _calibration_windows(
            calibration,
            loaded,
            seq_len=min(settings.context_length, _GENERATION_CHECK_TOKENS),
            recipe=recipe,
            progress=progress,
        )
        representative_data.validate_windows(windows, vocabulary_size=shape.vocabulary_size)
    names = settings.signature_names()
    progress_lib.log(
        _TAG,
        f"converting {loaded.name} to {recipe.name} with {len(names)} generation signatures "
        f"(context {', '.join(map(str, settings.contexts))})",
        enabled=progress,
    )
    changes = ["generation signatures: " + ", ".join(names)]
    with resources.track_resources() as usage:
        model_bytes = generation_lib.convert_generation(loaded.model, settings, recipe.mode)
        if recipe.mode.converts_through_fp32:
            quantized = _quantize_generation_weights(
                model_bytes, recipe, settings, loaded, calibration=calibration, progress=progress
            )
            model_bytes = quantized.model
            changes.extend(quantized.changes)
    progress_lib.log(
        _TAG, f"converted in {usage.seconds:.1f} s, peak RSS {usage.peak_rss_bytes / 2**20:.0f} MiB", enabled=progress
    )
    inspected = inspection.inspect_model(model_bytes)
    sequences, source = _check_windows(windows, shape.vocabulary_size, settings.context_length)
    check = generation_lib.check_against_keras(loaded.model, model_bytes, settings, sequences)
    check["inputs"] = f"{source}: {check['inputs']}"
    result = ConversionResult(
        model_name=loaded.name,
        model_source=loaded.source,
        mode=recipe.mode.value,
        seq_len=settings.context_length,
        vocabulary_size=shape.vocabulary_size,
        **model_fields(model_bytes, inspected),
        path=None,
        graph_changes=tuple(changes),
        check=check,
        conversion_seconds=round(usage.seconds, 3),
        peak_rss_bytes=usage.peak_rss_bytes,
        rss_before_bytes=usage.start_rss_bytes,
        calibration=calibration_info,
        versions=package_versions(),
        created=now_utc(),
        recipe=recipe.to_dict(),
        generation=generation_lib.describe(settings, shape, loaded.tokenizer),
    )
    return _finish(
        result,
        inspected,
        target_runtime=target_runtime,
        output_path=output_path,
        overwrite=overwrite,
        progress=progress,
    )


def _quantize_generation_weights(
    model_bytes, recipe: Recipe, settings: GenerationSettings, loaded, *, calibration, progress: bool
):
    """Int4 weights for a generation model, GPTQ calibrated on the fixed-window model of the same weights.

    A prefill signature computes its last layer and lm head on the last position only, too few rows for their
    Hessians; the fp32 window model (converted here, weights byte for byte the same) gives every FULLY_CONNECTED
    all positions.
    """
    if not recipe.uses_calibration:
        return rewriting.apply_weight_quantization(model_bytes, recipe, progress=progress)
    length = min(max(settings.prefill_lengths), DEFAULT_SEQ_LEN)
    windows, _ = _calibration_windows(calibration, loaded, seq_len=length, recipe=recipe, progress=progress)
    length = min(length, windows.seq_len)
    progress_lib.log(_TAG, f"fp32 window model ({length} tokens) to measure the int4 Hessians on", enabled=progress)
    window_model, _ = _convert(
        wrapping.wrap_model(loaded.model, seq_len=length),
        Recipe(modes.Mode.FP32),
        windows=None,
        input_names=[wrapping.TOKEN_IDS],
        progress=False,
    )
    count = min(recipe.calibration.num_samples, windows.num_windows)
    feeds = [{wrapping.TOKEN_IDS: ids[None]} for ids in windows.token_ids[:count, :length]]
    measured = int4.capture_hessians(
        window_model, feeds, positions=list(windows.padding_mask[:count, :length]), progress=progress
    )
    hessians = int4.transfer_hessians(window_model, measured, model_bytes)
    del window_model
    return rewriting.apply_weight_quantization(model_bytes, recipe, feeds=feeds, hessians=hessians, progress=progress)


def _calibration_windows(calibration, loaded, *, seq_len: int, recipe: Recipe, progress: bool):
    """Calibration windows from any accepted form, and what the report says of their source."""
    import representative_data  # pylint: disable=import-outside-toplevel

    if not calibration_lib.is_text_source(calibration):
        windows = calibration_lib.to_windows(calibration, num_samples=recipe.calibration.num_samples)
        source = os.fspath(calibration) if isinstance(calibration, (str, os.PathLike)) else None
        return windows, {"source": source or dict(windows.metadata).get("source", "in-memory windows")}
    text = os.fspath(calibration)
    if loaded.tokenizer is None:
        raise ValueError(
            f"Model {loaded.name!r} has no tokenizer, so text {text!r} cannot be tokenized "
            "for calibration. Pass token windows instead: a .npz made with the model's own "
            "tokenizer (calibration='windows.npz'), or the token ids themselves."
        )
    progress_lib.log(_TAG, f"tokenizing calibration text from {text}", enabled=progress)
    windows, _ = representative_data.build_windows(
        text,
        loaded.tokenizer,
        seq_len=seq_len,
        seed=recipe.calibration.seed,
        max_calibration=recipe.calibration.num_samples,
        separator_id=representative_data.TokenizerAdapter(loaded.tokenizer).end_token_id,
    )
    return windows, {"source": text}


def _feeds(windows, input_names, limit):
    import representative_data  # pylint: disable=import-outside-toplevel

    return list(
        representative_data.representative_dataset(
            windows, input_names=input_names, num_samples=min(limit, windows.num_windows), progress=False
        )()
    )


def _calibration_progress(dataset, *, enabled: bool):
    """The representative dataset, counting its samples on a progress bar as the calibrator reads them.

    The calibrator reads it once; with measured ranges it is read a second time to measure them.
    """
    passes = ["calibration", "measuring ranges"]

    def counted():
        description = passes.pop(0) if len(passes) > 1 else passes[0]
        return progress_lib.progress_bar(
            dataset(), total=dataset.num_samples, tag=_TAG, description=description, enabled=enabled, unit="window"
        )

    return counted


def _convert(wrapped, recipe: Recipe, *, windows, input_names, progress: bool):
    """Runs the TFLite converter with the recipe's rewrites. Returns (bytes, changes)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    mode = recipe.mode
    changes: list[str] = []
    converter = tf.lite.TFLiteConverter.from_keras_model(wrapped)
    representative_dataset = None
    if mode.needs_calibration:
        import representative_data  # pylint: disable=import-outside-toplevel

        dataset = representative_data.representative_dataset(
            windows, input_names=input_names, num_samples=recipe.calibration.num_samples, progress=False
        )
        representative_dataset = _calibration_progress(dataset, enabled=progress)
        probe_feeds = _feeds(windows, input_names, _MASK_PROBE_SAMPLES) if recipe.bound_mask_fill else None
        stock_quantize = converter._quantize  # pylint: disable=protected-access

        def quantize_rewritten(float_model, *args, **kwargs):
            # The float graph is rewritten after conversion and before
            # calibration: the quantizer then sees no int32 index arithmetic
            # and no -1e9 mask constants.
            unwrapped = graph_surgery.drop_negative_index_wrap(float_model)
            model, rewritten = unwrapped.model, list(unwrapped.changes)
            if probe_feeds is not None:
                bounded = graph_surgery.bound_mask_fill(model, probe_feeds)
                model, rewritten = bounded.model, rewritten + list(bounded.changes)
            changes.extend(rewritten)
            return stock_quantize(model, *args, **kwargs)

        # TFLiteConverter has no public hook between conversion and
        # quantization; replacing the bound method on this one instance keeps
        # all of its calibration and quantization logic.
        converter._quantize = quantize_rewritten  # pylint: disable=protected-access
    modes.configure_converter(converter, mode, representative_dataset=representative_dataset)
    corrections: list[str] = []
    measuring = recipe.measured_ranges
    try:
        with calibration_ranges.measured_ranges(corrections=corrections) if measuring else contextlib.nullcontext():
            model_bytes = converter.convert()
    except Exception as error:
        raise RuntimeError(f"The TFLite converter failed in mode {mode.value}: {error}") from error
    if measuring:
        changes.append(f"calibration ranges measured without shared buffers: {len(corrections)} tensors corrected")
    if not mode.needs_calibration:
        unwrapped = graph_surgery.drop_negative_index_wrap(model_bytes)
        model_bytes = unwrapped.model
        changes.extend(unwrapped.changes)
    if mode.converts_through_fp32:
        count = recipe.calibration.num_samples
        feeds = _feeds(windows, input_names, count) if recipe.uses_calibration else ()
        quantized = rewriting.apply_weight_quantization(
            model_bytes,
            recipe,
            feeds=feeds,
            positions=list(windows.padding_mask[:count]) if feeds else None,
            progress=progress,
        )
        model_bytes = quantized.model
        changes.extend(quantized.changes)
    rewritten = rewriting.apply_post_calibration(model_bytes, recipe)
    return rewritten.model, changes + list(rewritten.changes)


def _check_against_keras(wrapped, model_bytes, windows, *, seq_len, vocabulary_size, input_names) -> dict[str, Any]:
    """Runs the converted model beside Keras on a few windows: a conversion sanity check."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel

    if windows is not None:
        feeds = _feeds(windows, input_names, _CHECK_WINDOWS)
        source = "calibration windows"
    else:
        rng = np.random.default_rng(0)
        feeds = [
            {
                name: (
                    rng.integers(0, vocabulary_size, (1, seq_len))
                    if name == wrapping.TOKEN_IDS
                    else np.ones((1, seq_len))
                ).astype(np.int32)
                for name in input_names
            }
            for _ in range(_CHECK_WINDOWS)
        ]
        source = "random token ids"
    runner = litert.Interpreter(model_content=model_bytes).get_signature_runner()
    expected, actual = [], []
    for feed in feeds:
        expected.append(np.asarray(wrapped([feed[name] for name in input_names])[wrapping.LOGITS]))
        actual.append(runner(**feed)[wrapping.LOGITS])
    return {
        "against": "keras model",
        "inputs": source,
        "windows": len(feeds),
        **results.logit_agreement(np.concatenate(expected, axis=1)[0], np.concatenate(actual, axis=1)[0]),
    }


def agreement_warning(mode: str, top1_agreement: float) -> str | None:
    """A warning when the converted model often disagrees with Keras on the next token, else None.

    The model is still written (it is what was asked for), but nobody should
    ship it without knowing.
    """
    if top1_agreement >= LOW_AGREEMENT:
        return None
    return (
        f"warning: the {mode} model picks the same next token as the Keras model at only "
        f"{100 * top1_agreement:.1f} % of positions: this mode loses accuracy on this model. "
        "`make bench` measures its perplexity; fp16 keeps it; `make convert MODE=auto MAX_PPL_INCREASE=2%` "
        "finds the smallest mode within a budget."
    )
