"""`convert_keras`: a Keras LM in, a `.tflite` model and its report out."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import importlib.metadata
import json
import os
import pathlib
import sys
import tempfile
from typing import Any, Iterable, Mapping

from converter import (
    calibration_ranges, graph_surgery, inspection, model_sources, modes, resources, selective, symmetric_operands,
    wrapping,
)

DEFAULT_NUM_CALIBRATION_SAMPLES = 64
DEFAULT_SEQ_LEN = 128
# Calibration samples run through the float model to measure attention scores
# before the mask fill is bounded; a few windows give the range.
_MASK_PROBE_SAMPLES = 8
# Windows used for the built-in check against the Keras model.
_CHECK_WINDOWS = 2
_VERSIONED_PACKAGES = ("tensorflow", "keras", "keras-hub", "ai-edge-litert", "numpy")


def _log(message: str, progress: bool) -> None:
    if progress:
        print(f"[convert] {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class ConversionResult:
    """A converted model and everything the report says about it.

    `model` holds the `.tflite` bytes; every other field serialises to JSON
    (`to_dict`, `to_json`) and is what `save` writes beside the model.
    """

    model_name: str
    model_source: str
    mode: str
    seq_len: int
    vocabulary_size: int
    model: bytes = dataclasses.field(repr=False)
    path: str | None
    size_bytes: int
    op_histogram: Mapping[str, Any]
    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]
    tensor_dtypes: Mapping[str, Any]
    min_runtime_version: str | None
    graph_changes: tuple[str, ...]
    float_ops: Mapping[str, int]
    check: Mapping[str, Any]
    conversion_seconds: float
    peak_rss_bytes: int
    rss_before_bytes: int
    calibration: Mapping[str, Any] | None
    versions: Mapping[str, str]
    created: str
    recipe: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field but the model bytes, as JSON-ready values, and the runtime compatibility."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        data["graph_changes"] = list(self.graph_changes)
        data["compatibility"] = self.compatibility
        return json.loads(json.dumps(data, default=_json_default))

    @functools.cached_property
    def compatibility(self) -> dict[str, Any]:
        """Which probed runtimes load the model (`python -m converter.check`), read from its bytes.

        Derived from the model rather than stored, so it cannot disagree with it.
        """
        from converter import check  # pylint: disable=import-outside-toplevel

        try:
            report = check.check_model(self.model)
        except (OSError, ValueError) as error:
            return {"error": f"the compatibility preflight failed: {error}"}
        return {
            "verdicts": {label: verdict["verdict"] for label, verdict in report.to_dict()["verdicts"].items()},
            "details": report.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> "ConversionResult":
        """Writes `<path>` (.tflite) and its report `<path stem>.json` atomically.

        Args:
          path: where the `.tflite` file goes.
          overwrite: replace existing files; otherwise refuse.

        Returns:
          A copy of this result with `path` set.

        Raises:
          FileExistsError: a target exists and `overwrite` is False.
        """
        model_path, report_path = artifact_paths(path)
        check_writable(model_path, overwrite=overwrite)
        saved = dataclasses.replace(self, path=str(model_path))
        model_path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(model_path, self.model)
        _atomic_write(report_path, saved.to_json().encode())
        return saved


def _json_default(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def artifact_paths(path: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
    """The model path and its report path (same stem, `.json`)."""
    model_path = pathlib.Path(path)
    if model_path.suffix != ".tflite":
        raise ValueError(f"Output path {str(model_path)!r} must end in .tflite.")
    return model_path, model_path.with_suffix(".json")


def default_output_path(model_name: str, mode: modes.Mode, *, build_dir: str | os.PathLike = "build") -> pathlib.Path:
    """`build/<model>/<model>_<mode>.tflite`."""
    return pathlib.Path(build_dir) / model_name / f"{model_name}_{mode.value}.tflite"


def check_writable(model_path: pathlib.Path, *, overwrite: bool) -> None:
    """Refuses existing outputs unless `overwrite`, and folders in the way."""
    for target in artifact_paths(model_path):
        if target.is_dir():
            raise IsADirectoryError(f"Output {str(target)!r} is a folder; pass a .tflite file path.")
        if target.exists() and not overwrite:
            raise FileExistsError(
                f"{str(target)!r} exists. Pass overwrite=True (--overwrite, or OVERWRITE=1 "
                "with make) to replace it, or choose another output path."
            )


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        # mkstemp creates 0600 files; give the model the permissions of any new file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _resolve_calibration(calibration, loaded, *, seq_len, seed, num_samples, progress):
    """Turns the calibration argument into calibration windows (cheap checks first)."""
    import representative_data  # pylint: disable=import-outside-toplevel

    if isinstance(calibration, representative_data.TokenWindows):
        return calibration, {"source": dict(calibration.metadata).get("source", "in-memory windows")}
    text = os.fspath(calibration)
    if text.endswith(".npz"):
        windows = representative_data.load_windows(text)
        return windows, {"source": text}
    if loaded.tokenizer is None:
        raise ValueError(
            f"Model {loaded.name!r} has no tokenizer, so text {text!r} cannot be tokenized "
            "for calibration. Pass token windows instead: a .npz made by representative_data "
            "with the model's own tokenizer (calibration='windows.npz')."
        )
    _log(f"tokenizing calibration text from {text}", progress)
    calibration_windows, _ = representative_data.build_windows(
        text, loaded.tokenizer, seq_len=seq_len, seed=seed, max_calibration=num_samples,
        separator_id=representative_data.TokenizerAdapter(loaded.tokenizer).end_token_id,
    )
    return calibration_windows, {"source": text}


def check_calibration_source(calibration) -> None:
    """Validates a text or file calibration source before any model is loaded."""
    import representative_data  # pylint: disable=import-outside-toplevel

    if calibration is None or isinstance(calibration, representative_data.TokenWindows):
        return
    text = os.fspath(calibration)
    if text.endswith(".npz"):
        if not os.path.isfile(text):
            raise FileNotFoundError(f"Calibration windows {text!r} do not exist.")
        return
    representative_data.load_corpus(text)


def preflight(
    model: Any,
    mode: "str | modes.Mode",
    *,
    calibration: Any = None,
    seq_len: int | None = None,
    num_calibration_samples: int = DEFAULT_NUM_CALIBRATION_SAMPLES,
    output_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    target_runtime: str | None = None,
    keep_float: "str | Iterable[str] | None" = None,
) -> modes.Mode:
    """Checks everything that is cheap to check, before any model is loaded.

    Returns:
      The parsed mode.

    Raises:
      ValueError, FileExistsError, FileNotFoundError: as `convert_keras`.
    """
    mode = modes.parse_mode(mode)
    if mode.needs_calibration and calibration is None:
        raise ValueError(
            f"Mode {mode.value} calibrates activation ranges and needs calibration data. "
            "Pass calibration='builtin' (the built-in corpus), a .txt or .jsonl file, or a "
            ".npz of token windows (CLI: --calibration=...)."
        )
    if num_calibration_samples < 1:
        raise ValueError(f"num_calibration_samples must be at least 1, got {num_calibration_samples}.")
    if seq_len is not None and seq_len < 2:
        raise ValueError(f"seq_len must be at least 2, got {seq_len}.")
    if output_path is not None:
        check_writable(artifact_paths(output_path)[0], overwrite=overwrite)
    if mode.needs_calibration:
        check_calibration_source(calibration)
    if isinstance(model, (str, os.PathLike)) and os.fspath(model) not in model_sources.BUILTIN_MODELS:
        model_sources.check_model_path(model)
    if target_runtime is not None:
        from converter import runtime_support  # pylint: disable=import-outside-toplevel

        runtime_support.load_table().select([target_runtime])  # a runtime never probed is refused here
    if selective.parse_choices(keep_float) and not mode.needs_calibration:
        raise ValueError(
            f"keep_float chooses ops of a quantized model to run in float; mode {mode.value} has no quantized "
            "activations. Use it with int8 or int16x8."
        )
    return mode


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
            f"seq_len {seq_len} is above the model's maximum sequence length {limit}. "
            f"Pass seq_len <= {limit}."
        )
    return seq_len


def convert_keras(
    model: Any,
    mode: "str | modes.Mode",
    *,
    calibration: Any = None,
    seq_len: int | None = None,
    num_calibration_samples: int = DEFAULT_NUM_CALIBRATION_SAMPLES,
    padding_mask: bool = False,
    output_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    name: str | None = None,
    seed: int = 0,
    build_dir: str | os.PathLike = "build",
    progress: bool = True,
    target_runtime: str | None = None,
    measured_ranges: bool = True,
    float_residual_stream: bool = True,
    keep_float: "str | Iterable[str] | None" = None,
    symmetric_matmul: bool = True,
) -> ConversionResult:
    """Converts a Keras language model to a LiteRT `.tflite` model.

    Args:
      model: a keras-hub CausalLM or Backbone, a `keras.Model` mapping int32
        token ids (and optionally a padding mask) to logits, a path to a
        `.keras` file or a local keras-hub preset folder, or a built-in name
        (`tiny-gpt2`).
      mode: one of `modes.Mode` (fp32, fp16, dynamic, int8, int16x8).
      calibration: required by int8 and int16x8: `representative_data.TokenWindows`,
        a `.npz` of token windows, `"builtin"` (the built-in corpus) or a
        `.txt`/`.jsonl` file, tokenized with the model's own tokenizer.
      seq_len: fixed sequence length; defaults to 128, capped at the model's
        maximum.
      num_calibration_samples: how many windows calibrate the ranges.
      padding_mask: give the model a `padding_mask` input as well.
      output_path: where to save the `.tflite` (and its `.json` report); None
        keeps the result in memory only.
      overwrite: replace an existing output.
      name: artifact name (defaults to the model's).
      seed: seed of the calibration/evaluation split.
      build_dir: where built-in models are cached.
      progress: print progress to stderr.
      target_runtime: a runtime the model must load in, e.g.
        `tflite-runtime==2.14` (see `converter.check`); None: no target.
      measured_ranges: int8 and int16x8: calibrate with ranges measured
        without in-place buffer sharing. TensorFlow's calibrator gets the first
        input of residual ADDs wrong (`converter.calibration_ranges`); False
        keeps its ranges.
      float_residual_stream: int8 and int16x8: run the residual stream's ADDs
        and the norms' statistics in float inside the quantized model
        (`converter.float_regions`); every FULLY_CONNECTED and BATCH_MATMUL
        stays quantized. Llama-family residual streams carry activations
        around 24000 beside +-50 that no single int8 or int16 scale holds.
      keep_float: int8 and int16x8: selective quantization, ops that run in
        float (`converter.selective`): groups `attention`, `mlp_down`,
        `logits`, TFLite op types (`SOFTMAX`) or `name:<regex>` on op output
        names; a comma-separated string or a sequence. None: the mode's
        default (`modes.DEFAULT_KEEP_FLOAT`: SOFTMAX for int8); `()`: nothing.
        What runs in float is listed in the report (`float_ops`,
        `graph_changes`, `recipe`).
      symmetric_matmul: int8: give the second operand of every attention
        BATCH_MATMUL (K, V and the tensors reshaped from them) zero point 0.
        LiteRT's XNNPACK delegate runs an int8 BATCH_MATMUL only then; the
        fallback is a scalar reference kernel, 2-4x slower over the whole
        model (`converter.symmetric_operands`).

    Returns:
      A `ConversionResult`, saved to `output_path` when one is given.

    Raises:
      ValueError: unknown mode, missing or invalid calibration data, a model
        that does not map token ids to [1, seq_len, vocab] logits, a seq_len
        above the model's maximum, a target runtime that was never probed.
      check.IncompatibleModelError (a ValueError): the target runtime cannot
        load the converted model; nothing is written, the message names the
        op and version and a mode that loads there.
      FileExistsError: the output exists and `overwrite` is False.
      FileNotFoundError: a model or calibration path does not exist.
    """
    mode = preflight(
        model, mode, calibration=calibration, seq_len=seq_len,
        num_calibration_samples=num_calibration_samples, output_path=output_path, overwrite=overwrite,
        target_runtime=target_runtime, keep_float=keep_float,
    )
    keep_float = modes.DEFAULT_KEEP_FLOAT.get(mode, ()) if keep_float is None else selective.parse_choices(keep_float)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    _log(f"loading model {model if isinstance(model, (str, os.PathLike)) else type(model).__name__}", progress)
    loaded = model_sources.load_model(model, name=name, build_dir=build_dir)
    seq_len = resolve_seq_len(loaded.model, seq_len)
    wrapped = wrapping.wrap_model(loaded.model, seq_len=seq_len, padding_mask=padding_mask)
    vocabulary_size = int(wrapped.outputs[0].shape[-1])
    input_names = [wrapping.TOKEN_IDS] + ([wrapping.PADDING_MASK] if padding_mask else [])

    windows, calibration_info = None, None
    if mode.needs_calibration or calibration is not None:
        import representative_data  # pylint: disable=import-outside-toplevel

        windows, calibration_info = _resolve_calibration(
            calibration, loaded, seq_len=seq_len, seed=seed,
            num_samples=num_calibration_samples, progress=progress,
        )
        representative_data.validate_windows(windows, vocabulary_size=vocabulary_size, seq_len=seq_len)
        used = min(num_calibration_samples, windows.num_windows)
        calibration_info.update({"num_samples": used, "seed": seed, "windows_available": windows.num_windows})

    _log(f"converting {loaded.name} to {mode.value} (seq_len {seq_len})", progress)
    with resources.track_resources() as usage:
        model_bytes, changes = _convert(
            wrapped, mode, windows=windows, input_names=input_names,
            num_samples=num_calibration_samples, progress=progress, measured_ranges=measured_ranges,
            float_residual_stream=float_residual_stream, keep_float=keep_float, symmetric_matmul=symmetric_matmul,
        )
    _log(f"converted in {usage.seconds:.1f} s, peak RSS {usage.peak_rss_bytes / 2**20:.0f} MiB", progress)

    inspected = inspection.inspect_model(model_bytes)
    check = _check_against_keras(wrapped, model_bytes, windows, seq_len=seq_len, vocabulary_size=vocabulary_size, input_names=input_names)
    result = ConversionResult(
        model_name=loaded.name,
        model_source=loaded.source,
        mode=mode.value,
        seq_len=seq_len,
        vocabulary_size=vocabulary_size,
        **_model_fields(model_bytes, inspected),
        path=None,
        graph_changes=tuple(changes),
        check=check,
        conversion_seconds=round(usage.seconds, 3),
        peak_rss_bytes=usage.peak_rss_bytes,
        rss_before_bytes=usage.start_rss_bytes,
        calibration=calibration_info,
        versions=package_versions(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        recipe={
            "measured_ranges": measured_ranges, "float_residual_stream": float_residual_stream,
            "keep_float": list(keep_float), "symmetric_matmul": symmetric_matmul and mode is modes.Mode.INT8,
        } if mode.needs_calibration else None,
    )
    if target_runtime is not None:
        from converter import check  # pylint: disable=import-outside-toplevel

        check.require_loadable(
            check.check_model(inspected, runtimes=[target_runtime]), mode=mode.value,
            everywhere=check.check_model(inspected),
        )
        _log(f"{target_runtime} loads it (converter.check)", progress)
    if output_path is not None:
        result = result.save(output_path, overwrite=overwrite)
        _log(f"wrote {result.path} ({result.size_bytes / 2**20:.2f} MiB) and its .json report", progress)
    return result


def _model_fields(model_bytes: bytes, inspected: inspection.ModelInspection) -> dict[str, Any]:
    """The `ConversionResult` fields read from the model bytes."""
    summary = json.loads(json.dumps(inspected.summary(), default=_json_default))
    return {
        "model": model_bytes,
        "size_bytes": len(model_bytes),
        "op_histogram": summary["op_histogram"],
        "inputs": summary["inputs"],
        "outputs": summary["outputs"],
        "tensor_dtypes": {"constants": summary["constant_dtypes"], "activations": summary["activation_dtypes"]},
        "min_runtime_version": inspected.min_runtime_version,
        "float_ops": float_compute_ops(inspected),
    }


def replace_model(
    result: ConversionResult,
    model_bytes: bytes,
    *,
    changes: Iterable[str] = (),
    recipe: Mapping[str, Any] | None = None,
    check: Mapping[str, Any] | None = None,
) -> ConversionResult:
    """`result` for a rewrite of its model (`selective.keep_in_float`): fields read from the new bytes.

    Args:
      result: the conversion the model was rewritten from.
      model_bytes: the rewritten model.
      changes: what the rewrite did, appended to `graph_changes`.
      recipe: the new recipe (default: the old one).
      check: a check of the new model (default: the old one's, which then
        describes the model before the rewrite; pass a new one).
    """
    return dataclasses.replace(
        result,
        **_model_fields(model_bytes, inspection.inspect_model(model_bytes)),
        path=None,
        graph_changes=tuple(result.graph_changes) + tuple(changes),
        recipe=result.recipe if recipe is None else dict(recipe),
        check=result.check if check is None else dict(check),
    )


# Ops that only move data or convert types: they say nothing about the
# precision the model computes in.
_DATA_MOVEMENT_OPS = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "TRANSPOSE", "GATHER", "SELECT", "SELECT_V2"}


def float_compute_ops(inspected: inspection.ModelInspection) -> dict[str, int]:
    """Op type -> count of ops that compute in float (read a float32 activation)."""
    counts: dict[str, int] = {}
    for op in inspected.ops:
        if op.op in _DATA_MOVEMENT_OPS:
            continue
        reads_float = any(
            i >= 0 and not inspected.tensors[i].is_constant and inspected.tensors[i].dtype == "float32"
            for i in op.inputs
        )
        if reads_float:
            counts[op.op] = counts.get(op.op, 0) + 1
    return dict(sorted(counts.items()))


def _feeds(windows, input_names, limit):
    import representative_data  # pylint: disable=import-outside-toplevel

    return list(representative_data.representative_dataset(
        windows, input_names=input_names, num_samples=min(limit, windows.num_windows), progress=False
    )())


def _convert(wrapped, mode: modes.Mode, *, windows, input_names, num_samples: int, progress: bool,
             measured_ranges: bool = True, float_residual_stream: bool = True, keep_float: tuple[str, ...] = (),
             symmetric_matmul: bool = True):
    """Runs the TFLite converter with our graph rewrites. Returns (bytes, changes)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    changes: list[str] = []
    converter = tf.lite.TFLiteConverter.from_keras_model(wrapped)
    representative_dataset = None
    if mode.needs_calibration:
        import representative_data  # pylint: disable=import-outside-toplevel

        representative_dataset = representative_data.representative_dataset(
            windows, input_names=input_names, num_samples=num_samples, progress=progress
        )
        probe_feeds = _feeds(windows, input_names, _MASK_PROBE_SAMPLES)
        stock_quantize = converter._quantize  # pylint: disable=protected-access

        def quantize_rewritten(float_model, *args, **kwargs):
            # The float graph is rewritten after conversion and before
            # calibration: the quantizer then sees no int32 index arithmetic
            # and no -1e9 mask constants.
            unwrapped = graph_surgery.drop_negative_index_wrap(float_model)
            bounded = graph_surgery.bound_mask_fill(unwrapped.model, probe_feeds)
            changes.extend(unwrapped.changes + bounded.changes)
            return stock_quantize(bounded.model, *args, **kwargs)

        # TFLiteConverter has no public hook between conversion and
        # quantization; replacing the bound method on this one instance keeps
        # all of its calibration and quantization logic.
        converter._quantize = quantize_rewritten  # pylint: disable=protected-access
    modes.configure_converter(converter, mode, representative_dataset=representative_dataset)
    corrections: list[str] = []
    measuring = measured_ranges and mode.needs_calibration
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
    fallback = modes.FLOAT_FALLBACK_OPS.get(mode)
    if fallback:
        floated = graph_surgery.run_ops_in_float(model_bytes, fallback)
        model_bytes = floated.model
        changes.extend(floated.changes)
    if mode.needs_calibration and (float_residual_stream or keep_float):
        floated = selective.keep_in_float(model_bytes, keep_float, residual_stream=float_residual_stream)
        model_bytes = floated.model
        changes.extend(floated.changes)
    if mode is modes.Mode.INT8 and symmetric_matmul:
        symmetric = symmetric_operands.symmetric_matmul_operands(model_bytes)
        model_bytes = symmetric.model
        changes.extend(symmetric.changes)
    return model_bytes, changes


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
            {name: (rng.integers(0, vocabulary_size, (1, seq_len)) if name == wrapping.TOKEN_IDS else np.ones((1, seq_len))).astype(np.int32) for name in input_names}
            for _ in range(_CHECK_WINDOWS)
        ]
        source = "random token ids"
    runner = litert.Interpreter(model_content=model_bytes).get_signature_runner()
    max_error, agree, total = 0.0, 0, 0
    for feed in feeds:
        expected = np.asarray(wrapped([feed[name] for name in input_names])[wrapping.LOGITS])
        actual = runner(**feed)[wrapping.LOGITS]
        max_error = max(max_error, float(np.max(np.abs(expected - actual))))
        agree += int(np.sum(expected.argmax(-1) == actual.argmax(-1)))
        total += expected.shape[0] * expected.shape[1]
    return {
        "against": "keras model",
        "inputs": source,
        "windows": len(feeds),
        "max_abs_logit_error": round(max_error, 6),
        "top1_agreement": round(agree / total, 6),
    }


# Below this top-1 agreement with Keras the CLI warns that the mode loses accuracy.
LOW_AGREEMENT = 0.9


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
        "`make bench` measures its perplexity; fp16 keeps it; README.md says where each mode stands."
    )
