"""Command line: export a converted model, its tokenizer and a manifest for an Android app.

    python -m converter.android --mode=int8 [--model=tiny-gpt2]
        [--out=android/app/src/main/assets] [--name=<model>_<mode>] [--overwrite]

The model is the one `make convert` writes, `build/<model>/<model>_<mode>.tflite`
with its report; when it is missing, this runs `python -m converter` first
with the same model, mode, seq_len and calibration. The tokenizer is loaded
from the model's source.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import warnings

from absl import app, flags

from converter import modes

_MODE = None
_MODEL = None
_OUT = None
_NAME = None
_OVERWRITE = None
_BUILD_DIR = None
_SEQ_LEN = None
_CALIBRATION = None


def _define_flags() -> None:
    """Defines the flags only when run as a program, so importing this module defines none."""
    global _MODE, _MODEL, _OUT, _NAME, _OVERWRITE, _BUILD_DIR, _SEQ_LEN, _CALIBRATION  # pylint: disable=global-statement
    _MODE = flags.DEFINE_enum("mode", None, list(modes.MODE_NAMES), "Conversion mode of the model to export.")
    flags.mark_flag_as_required("mode")
    _MODEL = flags.DEFINE_string(
        "model", "tiny-gpt2", "Built-in model name, a .keras file or a local keras-hub preset folder."
    )
    _OUT = flags.DEFINE_string("out", "android/app/src/main/assets", "Asset folder to write into.")
    _NAME = flags.DEFINE_string("name", None, "File name stem of the exported files. Default: <model>_<mode>.")
    _OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace an existing export of the same name.")
    _BUILD_DIR = flags.DEFINE_string("build_dir", "build", "Folder of converted models.")
    _SEQ_LEN = flags.DEFINE_integer(
        "seq_len", None, "Sequence length; must match the converted model's if it exists.", lower_bound=2
    )
    _CALIBRATION = flags.DEFINE_string(
        "calibration", "builtin", "Calibration source, used only when the model must be converted first."
    )


def load_conversion_result(model_path: str | os.PathLike):
    """Reads a converted model and its `.json` report back into a `ConversionResult`.

    Raises:
      FileNotFoundError: the model or its report is missing.
      ValueError: the report lacks fields (written by another version).
    """
    from converter import conversion  # pylint: disable=import-outside-toplevel

    model_path, report_path = conversion.artifact_paths(model_path)
    if not report_path.is_file():
        raise FileNotFoundError(f"{str(report_path)!r} (the report of {str(model_path)!r}) is missing.")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    fields = {f.name for f in dataclasses.fields(conversion.ConversionResult)} - {"model"}
    optional = {f.name for f in dataclasses.fields(conversion.ConversionResult) if f.default is not dataclasses.MISSING}
    missing = sorted(fields - optional - set(report))
    if missing:
        raise ValueError(
            f"{str(report_path)!r} lacks {', '.join(missing)}: it was written by another version. "
            "Convert again (make convert ... OVERWRITE=1)."
        )
    values = {key: report[key] for key in fields if key in report}
    values["graph_changes"] = tuple(values["graph_changes"])
    return conversion.ConversionResult(model=model_path.read_bytes(), **values)


def load_tokenizer(model: str, *, build_dir: str):
    """The keras-hub tokenizer of a model given as on the command line, or None."""
    # pylint: disable=import-outside-toplevel
    from converter import model_sources

    if model in model_sources.BUILTIN_MODELS:
        folder = model_sources.build_builtin(model, build_dir=build_dir)
    else:
        folder = model_sources.check_model_path(model)
    if folder.is_dir() and (folder / "tokenizer.json").is_file():
        import keras_hub

        with warnings.catch_warnings():
            # keras-hub 0.32 leaves the SentencePiece vocabulary file open.
            warnings.simplefilter("ignore", ResourceWarning)
            return keras_hub.tokenizers.Tokenizer.from_preset(str(folder))
    return model_sources.load_model(model, build_dir=build_dir).tokenizer


def _convert(model_path: pathlib.Path) -> int:
    command = [
        sys.executable, "-m", "converter", f"--model={_MODEL.value}", f"--mode={_MODE.value}",
        f"--build_dir={_BUILD_DIR.value}", f"--calibration={_CALIBRATION.value}", f"--out={model_path}",
    ]
    if _SEQ_LEN.value is not None:
        command.append(f"--seq_len={_SEQ_LEN.value}")
    print(f"[android] {model_path} is missing; converting: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    return subprocess.run(command, check=False).returncode


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # pylint: disable=import-outside-toplevel
    from converter import android_export, conversion, model_sources

    mode = modes.parse_mode(_MODE.value)
    model_name = model_sources.default_name(_MODEL.value)
    name = _NAME.value or f"{model_name}_{mode.value}"
    model_path = conversion.default_output_path(model_name, mode, build_dir=_BUILD_DIR.value)
    try:
        android_export.check_export_target(_OUT.value, name, overwrite=_OVERWRITE.value)
        if _MODEL.value not in model_sources.BUILTIN_MODELS:
            model_sources.check_model_path(_MODEL.value)
        if not model_path.is_file():
            code = _convert(model_path)
            if code:
                return code
        result = load_conversion_result(model_path)
        if _SEQ_LEN.value is not None and _SEQ_LEN.value != result.seq_len:
            raise ValueError(
                f"{model_path} was converted with seq_len {result.seq_len}, not {_SEQ_LEN.value}. Pass "
                f"--seq_len={result.seq_len}, or convert again with make convert MODE={mode.value} "
                f"SEQ_LEN={_SEQ_LEN.value} OVERWRITE=1."
            )
        tokenizer = load_tokenizer(_MODEL.value, build_dir=_BUILD_DIR.value)
        if tokenizer is None:
            raise ValueError(
                f"Model {_MODEL.value!r} has no tokenizer, and an app needs one. Pass a keras-hub "
                "preset folder with tokenizer.json (tokenizer.save_to_preset(folder)), or call "
                "converter.export_android(result, out_dir, tokenizer=...) from Python."
            )
        export = android_export.export_android(
            result, _OUT.value, tokenizer=tokenizer, name=name, overwrite=_OVERWRITE.value
        )
    except (ValueError, TypeError, FileExistsError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{export.folder}:")
    for file_name, entry in export.files.items():
        print(f"  {file_name}  {entry['size_bytes']} bytes  sha256 {entry['sha256'][:16]}…")
    print(f"  {export.manifest_path.name}  (the manifest: names, shapes, special ids, the hashes above)")
    return 0


def run() -> None:
    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
