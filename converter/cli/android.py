"""Command line: export a converted model, its tokenizer and a manifest for an Android app.

    make android MODE=int8 [MODEL=tiny-gpt2] [GENERATE=1 [CONTEXT=1024]]
    python -m converter.cli.android --mode=int8 [--model=tiny-gpt2] [--generate [--context_length=1024]]
        [--out=android/app/src/main/assets] [--name=<model>_<mode>] [--overwrite]

The model is the one `make convert` writes, `build/<model>/<model>_<mode>.tflite`
(with --generate, the generation model `<model>_<mode>_generate.tflite`) with
its report; when it is missing, this runs `python -m converter` first with the
same model, mode, seq_len (or context) and calibration. The tokenizer is
loaded from the model's source.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from converter.cli import flags as cli_flags
from converter.cli import missing
from converter.common import progress
from converter.core import modes
from converter.deploy.android_export import DEFAULT_ASSETS_DIR


def _define_flags() -> None:
    cli_flags.verbosity_flags()
    cli_flags.mode_flag(with_auto=False, required=True, help_text="Conversion mode of the model to export.")
    cli_flags.model_flags()
    cli_flags.define("out", flags.DEFINE_string, DEFAULT_ASSETS_DIR, "Asset folder to write into.")
    cli_flags.define(
        "name", flags.DEFINE_string, None, "File name stem of the exported files. Default: <model>_<mode>."
    )
    cli_flags.define("overwrite", flags.DEFINE_boolean, False, "Replace an existing export of the same name.")
    cli_flags.calibration_flags()
    cli_flags.define(
        "generate",
        flags.DEFINE_boolean,
        False,
        "Export the generation model (prefill/decode signatures over a KV cache) instead of the fixed window.",
    )
    cli_flags.define(
        "context_length",
        flags.DEFINE_integer,
        None,
        "--generate, when the model must be converted: its context length (default 1024).",
        lower_bound=2,
    )


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # pylint: disable=import-outside-toplevel
    from converter.core import results
    from converter.deploy import android_export
    from converter.models import model_sources

    value = flags.FLAGS

    mode = modes.parse_mode(value.mode)
    model_name = model_sources.default_name(value.model)
    stem = f"{mode.value}_generate" if value.generate else mode.value
    name = value.name or f"{model_name}_{stem}"
    model_path = results.default_output_path(model_name, stem, build_dir=value.build_dir)
    try:
        with progress.silence_native_output(enabled=not flags.FLAGS.verbose):
            if value.generate:
                from converter.core import generation  # pylint: disable=import-outside-toplevel

                generation.check_mode(mode)
                if value.seq_len is not None:
                    raise ValueError(
                        "--seq_len is the fixed window's length; a generation model takes --context_length."
                    )
            elif value.context_length is not None:
                raise ValueError("--context_length sets up a generation model; pass --generate too.")
            android_export.check_export_target(value.out, name, overwrite=value.overwrite)
            if value.model not in model_sources.BUILTIN_MODELS:
                model_sources.check_model_path(value.model)
            missing.convert_if_missing(
                model_path,
                value.model,
                mode.value,
                build_dir=value.build_dir,
                generate=value.generate,
                context_length=value.context_length,
                seq_len=value.seq_len,
                calibration=None if value.generate else value.calibration,
                verbose=value.verbose,
                label="android",
            )
            result = results.ConversionResult.load(model_path)
            if value.seq_len is not None and value.seq_len != result.seq_len:
                raise ValueError(
                    f"{model_path} was converted with seq_len {result.seq_len}, not {value.seq_len}. Pass "
                    f"--seq_len={result.seq_len}, or convert again with make convert MODE={mode.value} "
                    f"SEQ_LEN={value.seq_len} OVERWRITE=1."
                )
            tokenizer = model_sources.load_tokenizer(value.model, build_dir=value.build_dir)
            if tokenizer is None:
                raise ValueError(
                    f"Model {value.model!r} has no tokenizer, and an app needs one. Pass a keras-hub "
                    "preset folder with tokenizer.json (tokenizer.save_to_preset(folder)), or call "
                    "converter.export_android(result, out_dir, tokenizer=...) from Python."
                )
            export = android_export.export_android(
                result, value.out, tokenizer=tokenizer, name=name, overwrite=value.overwrite
            )
    except (
        ValueError,
        TypeError,
        RuntimeError,
        FileExistsError,
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{export.folder}:")
    for file_name, entry in export.files.items():
        print(f"  {file_name}  {entry['size_bytes']} bytes  sha256 {entry['sha256'][:16]}…")
    print(f"  {export.manifest_path.name}  (the manifest: names, shapes, special ids, the hashes above)")
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
