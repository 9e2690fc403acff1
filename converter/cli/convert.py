"""`python -m converter` (and `make convert`): convert a Keras LM to LiteRT.

    python -m converter --mode=int8 [--model=smollm2-135m] [--seq_len=128]
        [--calibration=builtin] [--out=build/<model>/<model>_<mode>.tflite]
        [--recipe=recipe.json] [--keep_float=attention] [--target_runtime=tflite-runtime==2.14]
    python -m converter --mode=auto --max_ppl_increase=2% [--candidates=dynamic,int8,int8+attention]

Text calibration sources are cut into token windows once per model and
seq_len; both splits are kept beside the models
(`build/<model>/<model>_seq<N>_{calibration,evaluation}.npz`), so the
benchmarks measure accuracy on windows that calibration never saw.
TensorFlow's own output is hidden unless --verbose.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from converter.cli import flags as cli_flags

_USER_ERRORS = (ValueError, TypeError, FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError)


def _define_flags() -> None:
    cli_flags.verbosity_flags()
    cli_flags.mode_flag(
        with_auto=True,
        required=False,
        help_text="Conversion mode; auto: the smallest, then fastest, model within --max_ppl_increase "
        "(converter/tools/auto.py). Required unless --recipe is given.",
    )
    cli_flags.model_flags()
    cli_flags.output_flags(out_help="Output .tflite path. Default: <build_dir>/<model>/<model>_<mode>.tflite.")
    cli_flags.calibration_flags()
    cli_flags.recipe_flags()
    cli_flags.generation_flags()
    auto_flags()
    flags.register_multi_flags_validator(
        ["mode", "recipe"],
        lambda values: values["mode"] is not None or values["recipe"] is not None,
        "Pass --mode=<fp32|fp16|dynamic|int8|int16x8|auto> or --recipe=<recipe or report .json>.",
    )


def auto_flags() -> cli_flags.Group:
    """The flags of `--mode=auto`, checked when flags are parsed."""
    from converter.tools import auto  # pylint: disable=import-outside-toplevel

    group = cli_flags.Group(
        {
            "max_ppl_increase": cli_flags.define(
                "max_ppl_increase",
                flags.DEFINE_string,
                "2%",
                "auto: the accuracy budget, perplexity above fp32 on held-out windows (2% or 0.02).",
            ),
            "candidates": cli_flags.define(
                "candidates",
                flags.DEFINE_list,
                None,
                "auto: recipes to try, e.g. dynamic,int8,int8+attention,int8-strict,int16x8 (default: all of them).",
            ),
            "threads": cli_flags.threads_flag(help_text="auto: CPU threads for the latency figure."),
            "eval_windows": cli_flags.define(
                "eval_windows",
                flags.DEFINE_integer,
                auto.DEFAULT_EVAL_WINDOWS,
                "auto: held-out windows scored per candidate.",
                lower_bound=1,
            ),
            "evaluation": cli_flags.define(
                "evaluation",
                flags.DEFINE_string,
                None,
                "auto: held-out windows (.npz). Default: the evaluation split saved beside the calibration windows.",
            ),
        }
    )

    def check_budget(value: str) -> bool:
        try:
            auto.parse_budget(value)
        except ValueError as error:
            raise flags.ValidationError(str(error)) from None
        return True

    def check_candidates(values) -> bool:
        try:
            for value in values or ():
                auto.parse_candidate(value)
        except ValueError as error:
            raise flags.ValidationError(str(error)) from None
        return True

    flags.register_validator("max_ppl_increase", check_budget, "write the budget as 2% or 0.02 (at least 0)")
    flags.register_validator(
        "candidates", check_candidates, "each candidate is a mode, optionally -strict, then +group: e.g. int8+attention"
    )
    return group


def prepare_windows(loaded, *, source: str, seq_len: int, seed: int, build_dir: str):
    """Calibration windows for a text source, cutting and saving both splits once per model and seq_len."""
    import representative_data  # pylint: disable=import-outside-toplevel
    from converter.common import progress  # pylint: disable=import-outside-toplevel
    from converter.core import results  # pylint: disable=import-outside-toplevel

    calibration_path, evaluation_path = results.windows_paths(loaded.name, seq_len, build_dir=build_dir)
    if calibration_path.exists() and evaluation_path.exists():
        windows = representative_data.load_windows(calibration_path)
        if dict(windows.metadata).get("source") == source and dict(windows.metadata).get("seed") == seed:
            progress.log("convert", f"reusing {calibration_path}")
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
        source, loaded.tokenizer, seq_len=seq_len, seed=seed, separator_id=separator_id, progress=False
    )
    representative_data.save_windows(calibration, calibration_path, overwrite=True)
    representative_data.save_windows(evaluation, evaluation_path, overwrite=True)
    progress.log(
        "convert",
        f"{calibration.num_windows} calibration and {evaluation.num_windows} evaluation "
        f"windows of {seq_len} tokens -> {calibration_path.parent}",
    )
    return calibration


def _recipe(values):
    """The recipe the flags ask for (a --recipe file, or --mode with the switches), checked before any work."""
    from converter.core import recipe as recipe_lib  # pylint: disable=import-outside-toplevel

    return recipe_lib.resolve_recipe(
        values.mode.value,
        values.recipe.value,
        **cli_flags.switches(values),
        num_calibration_samples=values.num_calibration_samples.value,
        seed=values.seed.value,
    )


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    from converter.common import progress  # pylint: disable=import-outside-toplevel

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    values = cli_flags.Group({name: flags.FLAGS[name] for name in flags.FLAGS})
    try:
        with progress.silence_native_output(enabled=not values.verbose.value):
            report, warning = _run_auto(values) if values.mode.value == cli_flags.AUTO else _run_convert(values)
    except _USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report)
    if warning:
        print(warning, file=sys.stderr)
    return 0


def _run_convert(values) -> tuple[str, str | None]:
    """Converts as the flags ask; returns the report line and a warning, if any."""
    # pylint: disable=import-outside-toplevel
    import pathlib

    from converter.common import files
    from converter.core import calibration as calibration_lib
    from converter.core import conversion, modes, results
    from converter.models import model_sources

    recipe = _recipe(values)
    generation = cli_flags.generation_settings(values)
    if generation is not None:
        from converter.core import generation as generation_lib

        generation_lib.check_mode(recipe.mode)  # before the model is loaded
    name = model_sources.default_name(values.model.value)
    # An int4 name carries its block size and method (int4-b32), so two int4 models never share a file.
    named = values.recipe.value is not None or recipe.mode is modes.Mode.INT4
    variant = recipe.name if named else recipe.mode.value
    if generation is not None:
        variant += "_generate"
    out = values.out.value or str(results.default_output_path(name, variant, build_dir=values.build_dir.value))
    calibration = values.calibration.value
    conversion.preflight(
        values.model.value,
        recipe,
        calibration=calibration,
        seq_len=values.seq_len.value,
        output_path=out,
        overwrite=values.overwrite.value,
        target_runtime=values.target_runtime.value,
    )
    loaded = model_sources.load_model(values.model.value, build_dir=values.build_dir.value)
    seq_len = conversion.resolve_seq_len(loaded.model, values.seq_len.value)
    if generation is not None and values.seq_len.value is not None:
        raise ValueError("--seq_len is the fixed window's length; a generation model takes --context_length.")
    if calibration_lib.is_text_source(calibration):
        if loaded.tokenizer is None and not recipe.uses_calibration:
            # Without a tokenizer there are no windows to check against; fp32,
            # fp16 and dynamic need none (the check then uses random ids).
            calibration = None
        else:
            calibration = prepare_windows(
                loaded,
                source=calibration,
                seq_len=seq_len,
                seed=recipe.calibration.seed,
                build_dir=values.build_dir.value,
            )
    tokenizer_files = None
    if generation is not None and loaded.tokenizer is not None:
        # Checked and built before the conversion: a tokenizer the device cannot read stops it, and nothing is
        # written; the files go beside the model once it is.
        from converter.deploy import device_tokenizer

        tokenizer_files = device_tokenizer.export_device_tokenizer(loaded.tokenizer, name=pathlib.Path(out).stem)
        files.refuse_existing(
            [pathlib.Path(out).parent / n for n in tokenizer_files.files], overwrite=values.overwrite.value
        )
    result = conversion.convert_keras(
        loaded,
        recipe=recipe,
        calibration=calibration,
        seq_len=None if generation is not None else seq_len,
        generation=generation,
        padding_mask=values.padding_mask.value,
        output_path=out,
        overwrite=values.overwrite.value,
        build_dir=values.build_dir.value,
        target_runtime=values.target_runtime.value,
    )
    if tokenizer_files is not None:
        tokenizer_files.save(pathlib.Path(result.path).parent, overwrite=values.overwrite.value)
    check = result.check
    report = (
        f"{result.path}: {result.size_bytes / 2**20:.2f} MiB, {recipe.name}, seq_len {result.seq_len}, "
        f"{result.conversion_seconds:.1f} s, peak RSS {result.peak_rss_bytes / 2**20:.0f} MiB; "
        f"vs Keras: max |logit error| {check['max_abs_logit_error']:.4g}, "
        f"top-1 agreement {100 * check['top1_agreement']:.1f} %"
    )
    return report, conversion.agreement_warning(result.mode, check["top1_agreement"])


def _run_auto(values) -> tuple[str, str | None]:
    """`--mode=auto`: `converter.auto_convert` with the flags; returns the table and a warning, if any."""
    # pylint: disable=import-outside-toplevel
    import pathlib

    from converter.core import calibration as calibration_lib
    from converter.core import conversion, recipe, results
    from converter.models import model_sources
    from converter.tools import auto

    for switch in (
        "recipe",
        "keep_float",
        "measured_ranges",
        "float_residual_stream",
        "symmetric_matmul",
        "target_runtime",
    ):
        if cli_flags.is_given(switch):
            raise ValueError(
                f"--{switch} does not go with --mode=auto, which tries recipes itself; name them "
                "with --candidates (e.g. int8+attention)."
            )
    settings = recipe.CalibrationSettings(
        num_samples=values.num_calibration_samples.value or recipe.DEFAULT_NUM_CALIBRATION_SAMPLES,
        seed=values.seed.value or 0,
    )
    name = model_sources.default_name(values.model.value)
    out = values.out.value or str(pathlib.Path(values.build_dir.value) / name / f"{name}_auto.tflite")
    calibration = values.calibration.value
    if not calibration_lib.is_text_source(calibration) and not values.evaluation.value:
        raise ValueError("--calibration is not text: pass the held-out windows too (--evaluation=<windows.npz>).")
    auto.check_outputs(out, overwrite=values.overwrite.value)
    loaded = model_sources.load_model(values.model.value, build_dir=values.build_dir.value)
    seq_len = conversion.resolve_seq_len(loaded.model, values.seq_len.value)
    evaluation = values.evaluation.value
    if calibration_lib.is_text_source(calibration):
        calibration = prepare_windows(
            loaded, source=calibration, seq_len=seq_len, seed=settings.seed, build_dir=values.build_dir.value
        )
        evaluation = evaluation or str(results.windows_paths(loaded.name, seq_len, build_dir=values.build_dir.value)[1])
    search = auto.auto_convert(
        loaded,
        max_ppl_increase=values.max_ppl_increase.value,
        calibration=calibration,
        evaluation=evaluation,
        candidates=values.candidates.value or auto.DEFAULT_CANDIDATES,
        threads=values.threads.value,
        eval_windows=values.eval_windows.value,
        seq_len=seq_len,
        calibration_settings=settings,
        output_path=out,
        overwrite=values.overwrite.value,
        build_dir=values.build_dir.value,
    )
    report = (
        search.to_markdown() + f"{search.path}: {search.chosen}, {search.model.size_bytes / 2**20:.2f} MiB; "
        f"table in {search.search_report}"
    )
    warning = None
    if not search.chosen_within_budget:
        warning = (
            f"warning: no candidate is within +{100 * search.max_ppl_increase:g} % perplexity; "
            f"{search.chosen} is the most accurate one tried."
        )
    return report, warning


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
