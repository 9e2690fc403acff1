"""Command line: convert a Keras LM to LiteRT.

    python -m converter --mode=int8 [--model=tiny-gpt2] [--seq_len=128]
        [--calibration=builtin] [--out=build/<model>/<model>_<mode>.tflite]
        [--target_runtime=tflite-runtime==2.14]

Text calibration sources are cut into token windows once per model and
seq_len; both splits are kept beside the models
(`build/<model>/<model>_seq<N>_{calibration,evaluation}.npz`), so the
benchmarks measure accuracy on windows that calibration never saw.
"""

from __future__ import annotations

import os
import pathlib
import sys

from absl import app, flags

from converter import modes

AUTO = "auto"
_MODE = flags.DEFINE_enum(
    "mode", None, list(modes.MODE_NAMES) + [AUTO],
    "Conversion mode; auto: the smallest, then fastest, model within --max_ppl_increase (converter/auto.py).",
)
flags.mark_flag_as_required("mode")

_MODEL = flags.DEFINE_string(
    "model", "tiny-gpt2", "Built-in model name, a .keras file or a local keras-hub preset folder."
)
_OUT = flags.DEFINE_string(
    "out", None, "Output .tflite path. Default: <build_dir>/<model>/<model>_<mode>.tflite."
)
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace existing outputs.")
_BUILD_DIR = flags.DEFINE_string("build_dir", "build", "Folder for models, windows and reports.")

_SEQ_LEN = flags.DEFINE_integer(
    "seq_len", None, "Fixed sequence length (default 128, capped at the model's maximum).", lower_bound=2
)
_PADDING_MASK = flags.DEFINE_boolean(
    "padding_mask", False, "Add a padding_mask input (default: token_ids only, mask all ones)."
)

_CALIBRATION = flags.DEFINE_string(
    "calibration",
    "builtin",
    "Calibration data: 'builtin' (Python's documentation text), a .txt or .jsonl file, "
    "or a .npz of token windows.",
)
_NUM_CALIBRATION_SAMPLES = flags.DEFINE_integer(
    "num_calibration_samples", 64, "Calibration windows to use.", lower_bound=1
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the calibration/evaluation split.")
_MEASURED_RANGES = flags.DEFINE_boolean(
    "measured_ranges", True,
    "int8/int16x8: calibrate with ranges measured without in-place buffer sharing (TensorFlow's calibrator "
    "gives residual ADDs' first input the sum's range). --nomeasured_ranges keeps TensorFlow's ranges.",
)
_FLOAT_RESIDUAL_STREAM = flags.DEFINE_boolean(
    "float_residual_stream", True,
    "int8/int16x8: run the residual stream's ADDs and the norm statistics in float; every FULLY_CONNECTED "
    "and BATCH_MATMUL stays quantized.",
)
_SYMMETRIC_MATMUL = flags.DEFINE_boolean(
    "symmetric_matmul", True,
    "int8: zero point 0 for the second operand of attention BATCH_MATMULs, so that XNNPACK runs them.",
)
_KEEP_FLOAT = flags.DEFINE_list(
    "keep_float", None,
    "int8/int16x8 selective quantization: ops to run in float. Groups attention, mlp_down, mlp, logits; TFLite "
    "op types (SOFTMAX); name:<regex> on op output names. Comma-separated. Default: SOFTMAX for int8, nothing "
    "for int16x8; --keep_float= (empty) keeps nothing in float.",
)
_MAX_PPL_INCREASE = flags.DEFINE_string(
    "max_ppl_increase", "2%", "auto: the accuracy budget, perplexity above fp32 on held-out windows (2% or 0.02)."
)
_CANDIDATES = flags.DEFINE_list(
    "candidates", None,
    "auto: recipes to try, e.g. dynamic,int8,int8+attention,int8-strict,int16x8 (default: all of them).",
)
_THREADS = flags.DEFINE_integer("threads", 2, "auto: CPU threads for the latency figure.", lower_bound=1)
_EVAL_WINDOWS = flags.DEFINE_integer("eval_windows", 16, "auto: held-out windows scored per candidate.", lower_bound=1)
_EVALUATION = flags.DEFINE_string(
    "evaluation", None,
    "auto: held-out windows (.npz). Default: the evaluation split saved beside the calibration windows.",
)


def _check_budget(value: str) -> bool:
    from converter import auto  # pylint: disable=import-outside-toplevel

    try:
        auto.parse_budget(value)
    except ValueError as error:
        raise flags.ValidationError(str(error)) from None
    return True


def _check_candidates(values) -> bool:
    from converter import auto  # pylint: disable=import-outside-toplevel

    try:
        for value in values or ():
            auto.parse_candidate(value)
    except ValueError as error:
        raise flags.ValidationError(str(error)) from None
    return True


flags.register_validator("max_ppl_increase", _check_budget, "write the budget as 2% or 0.02 (at least 0)")
flags.register_validator("candidates", _check_candidates,
                         "each candidate is a mode, optionally -strict, then +group: e.g. int8+attention")
_TARGET_RUNTIME = flags.DEFINE_string(
    "target_runtime", None,
    "A runtime the model must load in, e.g. tflite-runtime==2.14: a mode it cannot load is refused "
    "before anything is written, naming the op (python -m converter.check).",
)


def windows_paths(build_dir: str, model_name: str, seq_len: int) -> tuple[pathlib.Path, pathlib.Path]:
    """Where a model's calibration and evaluation windows are kept."""
    folder = pathlib.Path(build_dir) / model_name
    stem = f"{model_name}_seq{seq_len}"
    return folder / f"{stem}_calibration.npz", folder / f"{stem}_evaluation.npz"


def _prepare_windows(loaded, *, source: str, seq_len: int, seed: int, build_dir: str):
    """Returns calibration windows for a text source, saving both splits once."""
    import representative_data  # pylint: disable=import-outside-toplevel

    calibration_path, evaluation_path = windows_paths(build_dir, loaded.name, seq_len)
    if calibration_path.exists() and evaluation_path.exists():
        windows = representative_data.load_windows(calibration_path)
        if dict(windows.metadata).get("source") == source and dict(windows.metadata).get("seed") == seed:
            print(f"[convert] reusing {calibration_path}", file=sys.stderr)
            return windows
    if loaded.tokenizer is None:
        raise ValueError(
            f"Model {loaded.name!r} has no tokenizer to cut {source!r} into windows; pass "
            "--calibration=<windows.npz> made with the model's own tokenizer."
        )
    # The tokenizer's own end-of-text id between documents, as tiny-gpt2 was
    # trained, so that its held-out windows are the evaluation windows here.
    separator_id = representative_data.TokenizerAdapter(loaded.tokenizer).end_token_id
    calibration, evaluation = representative_data.build_windows(
        source, loaded.tokenizer, seq_len=seq_len, seed=seed, separator_id=separator_id
    )
    representative_data.save_windows(calibration, calibration_path, overwrite=True)
    representative_data.save_windows(evaluation, evaluation_path, overwrite=True)
    print(
        f"[convert] {calibration.num_windows} calibration and {evaluation.num_windows} evaluation "
        f"windows of {seq_len} tokens -> {calibration_path.parent}",
        file=sys.stderr,
    )
    return calibration


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from converter import conversion, model_sources  # pylint: disable=import-outside-toplevel

    if _MODE.value == AUTO:
        return _run_auto()
    mode = modes.parse_mode(_MODE.value)
    name = model_sources.default_name(_MODEL.value)
    out = _OUT.value or str(conversion.default_output_path(name, mode, build_dir=_BUILD_DIR.value))
    calibration = _CALIBRATION.value
    try:
        conversion.preflight(
            _MODEL.value, mode, calibration=calibration, seq_len=_SEQ_LEN.value,
            num_calibration_samples=_NUM_CALIBRATION_SAMPLES.value, output_path=out,
            overwrite=_OVERWRITE.value, target_runtime=_TARGET_RUNTIME.value, keep_float=_KEEP_FLOAT.value,
        )
        loaded = model_sources.load_model(_MODEL.value, build_dir=_BUILD_DIR.value)
        seq_len = conversion.resolve_seq_len(loaded.model, _SEQ_LEN.value)
        if not calibration.endswith(".npz") and loaded.tokenizer is None and not mode.needs_calibration:
            # Without a tokenizer there are no windows to check against; fp32,
            # fp16 and dynamic need none (the check then uses random ids).
            calibration = None
        elif not calibration.endswith(".npz"):
            calibration = _prepare_windows(
                loaded, source=calibration, seq_len=seq_len, seed=_SEED.value, build_dir=_BUILD_DIR.value
            )
        result = conversion.convert_keras(
            loaded, mode, calibration=calibration, seq_len=seq_len,
            num_calibration_samples=_NUM_CALIBRATION_SAMPLES.value, padding_mask=_PADDING_MASK.value,
            output_path=out, overwrite=_OVERWRITE.value, seed=_SEED.value, build_dir=_BUILD_DIR.value,
            target_runtime=_TARGET_RUNTIME.value, measured_ranges=_MEASURED_RANGES.value,
            float_residual_stream=_FLOAT_RESIDUAL_STREAM.value, keep_float=_KEEP_FLOAT.value,
            symmetric_matmul=_SYMMETRIC_MATMUL.value,
        )
    except (ValueError, FileExistsError, FileNotFoundError, IsADirectoryError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    check = result.check
    print(
        f"{result.path}: {result.size_bytes / 2**20:.2f} MiB, {result.mode}, seq_len {result.seq_len}, "
        f"{result.conversion_seconds:.1f} s, peak RSS {result.peak_rss_bytes / 2**20:.0f} MiB; "
        f"vs Keras: max |logit error| {check['max_abs_logit_error']:.4g}, "
        f"top-1 agreement {100 * check['top1_agreement']:.1f} %"
    )
    warning = conversion.agreement_warning(result.mode, check["top1_agreement"])
    if warning:
        print(warning, file=sys.stderr)
    return 0


def _run_auto() -> int:
    """`--mode=auto`: converter.auto.auto_convert with the flags."""
    # pylint: disable=import-outside-toplevel
    from converter import auto, conversion, model_sources

    name = model_sources.default_name(_MODEL.value)
    out = _OUT.value or str(pathlib.Path(_BUILD_DIR.value) / name / f"{name}_auto.tflite")
    calibration = _CALIBRATION.value
    try:
        if calibration.endswith(".npz") and not _EVALUATION.value:
            raise ValueError("--calibration is a .npz: pass the held-out windows too (--evaluation=<windows.npz>).")
        auto.check_outputs(out, overwrite=_OVERWRITE.value)
        loaded = model_sources.load_model(_MODEL.value, build_dir=_BUILD_DIR.value)
        seq_len = conversion.resolve_seq_len(loaded.model, _SEQ_LEN.value)
        evaluation = _EVALUATION.value
        if not calibration.endswith(".npz"):
            calibration = _prepare_windows(
                loaded, source=calibration, seq_len=seq_len, seed=_SEED.value, build_dir=_BUILD_DIR.value
            )
            evaluation = evaluation or str(windows_paths(_BUILD_DIR.value, loaded.name, seq_len)[1])
        search, chosen = auto.auto_convert(
            loaded, max_ppl_increase=_MAX_PPL_INCREASE.value, calibration=calibration, evaluation=evaluation,
            candidates=_CANDIDATES.value or auto.DEFAULT_CANDIDATES, threads=_THREADS.value,
            eval_windows=_EVAL_WINDOWS.value, seq_len=seq_len,
            num_calibration_samples=_NUM_CALIBRATION_SAMPLES.value, output_path=out, overwrite=_OVERWRITE.value,
            seed=_SEED.value, build_dir=_BUILD_DIR.value,
        )
    except (ValueError, FileExistsError, FileNotFoundError, IsADirectoryError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(search.to_markdown())
    print(f"{chosen.path}: {search.chosen}, {chosen.size_bytes / 2**20:.2f} MiB; table in {search.search_report}")
    if not search.chosen_within_budget:
        print(f"warning: no candidate is within +{100 * search.max_ppl_increase:g} % perplexity; "
              f"{search.chosen} is the most accurate one tried.", file=sys.stderr)
    return 0


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
