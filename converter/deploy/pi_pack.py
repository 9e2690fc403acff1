"""Builds a Raspberry Pi bench pack: models, evaluation windows, the harness, pins, checksums, a README.

    make pi-pack MODEL=tiny-gpt2 MODES=fp32,int8 [GENERATE=1 GEN_MODES=dynamic,fp16]
    python -m converter.cli.pi_pack --model=tiny-gpt2 [--modes=fp32,fp16,dynamic,int8,int16x8]
        [--generation_modes=dynamic] [--prompt="..."]
        [--build_dir=build] [--out=build/pi-pack-<model>.tar.gz] [--evaluation=<windows.npz>] [--overwrite]

The models must have been converted (`make pi-pack` converts what is missing
first). With generation modes, the pack also carries each mode's generation
model (`<model>_<mode>_generate.tflite`, prefill/decode signatures) and the
tokenizer files beside it; the runner then measures prefill and decode tokens
per second and time to first token, and continues one text prompt. The
tarball unpacks into `pi-pack-<model>/`, which runs on a Pi with numpy and
ai-edge-litert alone (its README says how, command by command).
Written atomically, with `<tarball>.sha256` beside it; an existing pack is
kept unless --overwrite is given.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import os
import pathlib
import string
import sys
import tarfile

from converter.common import files as file_io
from converter.compat import check, runtime_support
from converter.core import modes
from converter.core import recipe as recipe_lib
from converter.core.generation import SUPPORTED_MODES as _GENERATION_MODES

REPO = pathlib.Path(__file__).resolve().parents[2]
REQUIREMENTS = pathlib.Path(__file__).with_name("pi_requirements.txt")
# Text in and out for the generation prompt; installed with --no-deps (tokenizers' huggingface-hub
# dependency serves downloads, which a pack never makes).
TEXT_REQUIREMENTS = pathlib.Path(__file__).with_name("pi_text_requirements.txt")
DEFAULT_PROMPT = "The capital of France is"
README_TEMPLATE = pathlib.Path(__file__).with_name("pi_pack_readme.md")
RUNNER = REPO / "benchmarks" / "pi_runner.py"
# Host-side modules of benchmarks/ that the device never runs (CLIs with absl, plots).
_HOST_ONLY = {"__main__.py", "report.py", "device_report.py", "pi_report.py", "plots.py", "fidelity.py", "pi_runner.py"}
_WINDOWS_MODULE = REPO / "representative_data" / "windows.py"
# The converter's TensorFlow-free bottom layers, which the harness and the windows reader use.
_DEVICE_PACKAGES = ("converter/common", "converter/tflite_file")
_CONVERTER_PACKAGE_INIT = '''"""The converter's TensorFlow-free layers (common/, tflite_file/) as a bench pack has them.

The full package converts models on the host; a device only reads and runs them.
"""
'''
_WINDOWS_PACKAGE_INIT = '''"""The windows reader of representative_data, as a bench pack carries it (numpy only).

The full package also tokenizes text; a device only reads the windows cut on the host.
"""
'''
# The least a benchmark takes: 0.5 s of warm-up and 1 s of timed runs (benchmarks/timing.py).
_SECONDS_PER_RUN = 1.5
_DEFAULT_THREADS = 4
_DEFAULT_REPEATS = 3


@dataclasses.dataclass(frozen=True)
class PackResult:
    """A written pack.

    Attributes:
      path: the tarball.
      sha256: the tarball's sha256 (also in `<path>.sha256`).
      size_bytes: the tarball's size.
      name: the folder it unpacks into (`pi-pack-<model>`).
      files: every file in the pack, relative to that folder.
      modes: the modes packed.
      generation_modes: the modes whose generation models are packed.
    """

    path: pathlib.Path
    sha256: str
    size_bytes: int
    name: str
    files: tuple[str, ...]
    modes: tuple[str, ...]
    generation_modes: tuple[str, ...] = ()


def pack_name(model_name: str) -> str:
    return f"pi-pack-{model_name}"


def default_output_path(model_name: str, *, build_dir: str | os.PathLike = "build") -> pathlib.Path:
    """`build/pi-pack-<model>.tar.gz`."""
    return pathlib.Path(build_dir) / f"{pack_name(model_name)}.tar.gz"


def _model_files(model_name: str, wanted: list[str], build_dir: pathlib.Path) -> list[dict]:
    found = []
    for mode in wanted:
        path = build_dir / model_name / f"{model_name}_{mode}.tflite"
        report = path.with_suffix(".json")
        if not path.is_file() or not report.is_file():
            raise FileNotFoundError(
                f"No {mode} model of {model_name} at {str(path)!r} (with its .json report). Convert it "
                f"first: make convert MODEL={model_name} MODE={mode} (make pi-pack converts what is missing)."
            )
        found.append(
            {
                "mode": mode,
                "path": path,
                "report": report,
                "facts": json.loads(report.read_text(encoding="utf-8")),
            }
        )
    seq_lens = {entry["facts"]["seq_len"] for entry in found}
    if len(seq_lens) != 1:
        listing = ", ".join(f"{e['mode']} {e['facts']['seq_len']}" for e in found)
        raise ValueError(
            f"The models of {model_name} were converted with different sequence lengths ({listing}); "
            "convert them again with one (make convert-all SEQ_LEN=... OVERWRITE=1)."
        )
    return found


def _generation_files(model_name: str, wanted: list[str], build_dir: pathlib.Path) -> list[dict]:
    """Each wanted mode's generation model with the tokenizer files its spec names, checked."""
    # pylint: disable=import-outside-toplevel
    from benchmarks import generation
    from benchmarks import text as text_lib

    supported = {m.value for m in _GENERATION_MODES}
    refused = [m for m in wanted if recipe_lib.Recipe.parse(m).mode.value not in supported]
    if refused:
        raise ValueError(
            f"Generation models convert in {', '.join(sorted(supported))}, not {', '.join(refused)}; "
            "pass --generation_modes (GEN_MODES=) among those."
        )
    found = []
    for mode in wanted:
        path = build_dir / model_name / f"{model_name}_{mode}_generate.tflite"
        if not path.is_file():
            raise FileNotFoundError(
                f"No {mode} generation model of {model_name} at {str(path)!r}. Convert it first: make "
                f"convert MODEL={model_name} MODE={mode} GENERATE=1 (make pi-pack GENERATE=1 converts what "
                "is missing)."
            )
        signatures = generation.read_signatures(str(path))
        spec_path = generation.tokenizer_beside(path)
        if not spec_path.is_file():
            raise FileNotFoundError(
                f"{str(path)!r} has no tokenizer beside it ({spec_path.name}), so the pack could not turn its "
                "replies into text. Convert it again with make convert GENERATE=1 OVERWRITE=1."
            )
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        names = [spec_path.name] + sorted({spec[k] for k in ("file", "tokenizer_json") if spec.get(k)})
        missing = [n for n in names if not (path.parent / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"The tokenizer of {path.name} names {', '.join(missing)}, which is not beside it; convert the model "
                "again with make convert GENERATE=1 OVERWRITE=1."
            )
        text_lib.load_text_tokenizer(spec_path)  # refuses files that do not match their spec
        found.append(
            {
                "mode": mode,
                "path": path,
                "tokenizer": [path.parent / n for n in names],
                "context_length": signatures.context_length,
                "vocabulary_size": signatures.vocabulary_size,
            }
        )
    return found


def _evaluation_windows(
    model_name: str,
    seq_len: int,
    vocabulary_size: int,
    *,
    build_dir: pathlib.Path,
    evaluation: str | os.PathLike | None,
) -> pathlib.Path:
    from representative_data import windows as windows_lib  # pylint: disable=import-outside-toplevel

    path = (
        pathlib.Path(evaluation)
        if evaluation
        else (build_dir / model_name / f"{model_name}_seq{seq_len}_evaluation.npz")
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"A pack needs evaluation windows, and there are none at {str(path)!r}. The CLI cuts them when it "
            f"converts a model that has a tokenizer (make convert MODEL={model_name}); for a model without "
            "one, pass windows cut with its own tokenizer (--evaluation=<windows.npz>)."
        )
    loaded = windows_lib.load_windows(path)
    windows_lib.validate_windows(loaded, vocabulary_size=vocabulary_size, seq_len=seq_len)
    return path


def _readme(
    *,
    model_name: str,
    tarball: pathlib.Path,
    created: str,
    seq_len: int,
    packed: list[dict],
    num_windows: int,
    size_bytes: int,
    tflite_modes: list[str],
    generation: list[dict],
    prompt: str,
) -> str:
    template = string.Template(README_TEMPLATE.read_text(encoding="utf-8"))
    try:
        shown = os.path.relpath(tarball)
    except ValueError:
        shown = str(tarball)
    runs = len(packed) * _DEFAULT_THREADS * _DEFAULT_REPEATS
    return template.substitute(
        model=model_name,
        pack=pack_name(model_name),
        tarball=shown,
        created=created,
        seq_len=seq_len,
        modes=", ".join(f"`{entry['mode']}`" for entry in packed),
        windows=num_windows,
        space_mib=max(1, round(3 * size_bytes / 2**20)) + 200,
        litert_version=_pinned("ai-edge-litert"),
        runs=runs,
        minutes=max(1, round(runs * _SECONDS_PER_RUN / 60)),
        tflite_modes=", ".join(f"`{m}`" for m in tflite_modes) if tflite_modes else "none",
        text_install=(
            "~/pi-pack-venv/bin/pip install --only-binary=:all: --no-deps -r requirements-text.txt\n"
            if generation
            else ""
        ),
        generation_section=_generation_readme(generation, prompt),
    )


def _generation_readme(generation: list[dict], prompt: str) -> str:
    if not generation:
        return ""
    listing = ", ".join(f"`{e['mode']}` (context {e['context_length']})" for e in generation)
    return (
        "\n### Generation\n\n"
        f"The pack also holds generation models ({listing}) with prefill/decode signatures over a KV cache, "
        "and their tokenizer files. After the window models, the runner measures each at every thread count "
        "and repeat in llama-bench's terms: prefill tokens per second for 128- and 512-token prompts (as "
        "far as the context holds them), decode tokens per second over 128 generated tokens, time to first "
        "token, decode cost by cache fill and peak memory, with one full-window forward of the same mode "
        "as the no-cache baseline. Then it continues the prompt "
        f"{json.dumps(prompt, ensure_ascii=False)} with each model at the largest thread count and prints "
        "the text (`requirements-text.txt`: the `tokenizers` and `sentencepiece` wheels, installed with "
        '`--no-deps` because their download helpers are never used). `--prompt="..."` continues '
        "another text; `--nogeneration` skips this part.\n"
    )


def _pinned(package: str) -> str:
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        name, _, version = line.partition("==")
        if name.strip() == package:
            return version.strip()
    raise ValueError(f"{REQUIREMENTS} pins no {package}.")


def _add(tar: tarfile.TarFile, name: str, data: bytes, *, mtime: int, executable: bool = False) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = 0o755 if executable else 0o644
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _directory(tar: tarfile.TarFile, name: str, *, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = mtime
    tar.addfile(info)


def build_pack(
    model_name: str,
    *,
    modes_to_pack: list[str] | None = None,
    build_dir: str | os.PathLike = "build",
    out: str | os.PathLike | None = None,
    evaluation: str | os.PathLike | None = None,
    generation_modes: list[str] | None = None,
    prompt: str = DEFAULT_PROMPT,
    overwrite: bool = False,
    progress: bool = True,
) -> PackResult:
    """Writes a bench pack tarball for a converted model.

    Args:
      model_name: the model's name, as in `build/<model>/<model>_<mode>.tflite`.
      modes_to_pack: modes to include (default: every mode).
      build_dir: where the converted models are.
      out: the tarball (default `build/pi-pack-<model>.tar.gz`).
      evaluation: evaluation windows (default: the ones the CLI cut,
        `build/<model>/<model>_seq<N>_evaluation.npz`).
      generation_modes: modes whose generation models
        (`<model>_<mode>_generate.tflite` and the tokenizer beside it) go in too.
      prompt: the text the runner continues with each generation model.
      overwrite: replace an existing tarball.
      progress: say what is happening on stderr.

    Returns:
      A `PackResult`.

    Raises:
      FileExistsError: the tarball exists and `overwrite` is False.
      FileNotFoundError: a model, its report, a generation model's tokenizer
        or the evaluation windows are missing.
      ValueError: an unknown mode, a mode without generation models, models
        of different sequence lengths, windows that do not fit the models, or
        an empty prompt.
      generation.NotAGenerationModelError: a `_generate` file without decode.
    """
    wanted = recipe_lib.check_variants(modes_to_pack or modes.MODE_NAMES)
    if not wanted:
        raise ValueError(f"Name at least one mode to pack ({', '.join(modes.MODE_NAMES)}).")
    build_dir = pathlib.Path(build_dir)
    tarball = pathlib.Path(out) if out else default_output_path(model_name, build_dir=build_dir)
    checksum = tarball.with_name(tarball.name + ".sha256")
    if not tarball.name.endswith(".tar.gz"):
        raise ValueError(f"The pack's path must end in .tar.gz; got {str(tarball)!r}.")
    if tarball.is_dir():
        raise IsADirectoryError(f"{str(tarball)!r} is a folder; pass a .tar.gz path.")
    if tarball.exists() and not overwrite:
        raise FileExistsError(
            f"{str(tarball)!r} exists. Pass --overwrite (OVERWRITE=1 with make) to replace it, or --out=..."
        )
    wanted_generation = recipe_lib.check_variants(generation_modes or [])
    if wanted_generation and not prompt.strip():
        raise ValueError("The prompt is empty: give the text the runner continues (--prompt=...).")
    found = _model_files(model_name, wanted, build_dir)
    generating = _generation_files(model_name, wanted_generation, build_dir)
    seq_len = found[0]["facts"]["seq_len"]
    vocabulary_size = found[0]["facts"]["vocabulary_size"]
    windows_path = _evaluation_windows(model_name, seq_len, vocabulary_size, build_dir=build_dir, evaluation=evaluation)
    name = pack_name(model_name)
    now = datetime.datetime.now(datetime.UTC)
    created = now.isoformat(timespec="seconds")
    mtime = int(now.timestamp())

    contents: dict[str, bytes] = {}
    packed = []
    table_runtimes = None
    for entry in found:
        data = entry["path"].read_bytes()
        relative = f"models/{entry['path'].name}"
        contents[relative] = data
        contents[f"models/{entry['report'].name}"] = entry["report"].read_bytes()
        report = check.check_model(data)
        table_runtimes = [v.label for v in report.verdicts]
        packed.append(
            {
                "mode": entry["mode"],
                "path": relative,
                "sha256": file_io.sha256_bytes(data),
                "size_bytes": len(data),
                "compatibility": {v.label: v.verdict.value for v in report.verdicts},
            }
        )
        if progress:
            print(
                f"[pi-pack] {relative}: {len(data) / 2**20:.2f} MiB; "
                + ", ".join(f"{label} {verdict}" for label, verdict in packed[-1]["compatibility"].items()),
                file=sys.stderr,
                flush=True,
            )
    generation_entries = []
    for entry in generating:
        data = entry["path"].read_bytes()
        relative = f"models/{entry['path'].name}"
        contents[relative] = data
        for tokenizer_file in entry["tokenizer"]:
            contents[f"models/{tokenizer_file.name}"] = tokenizer_file.read_bytes()
        window = next((e["path"] for e in packed if e["mode"] == entry["mode"]), None)
        generation_entries.append(
            {
                "mode": entry["mode"],
                "path": relative,
                "sha256": file_io.sha256_bytes(data),
                "size_bytes": len(data),
                "context_length": entry["context_length"],
                "tokenizer": f"models/{entry['tokenizer'][0].name}",
                "tokenizer_files": [f"models/{f.name}" for f in entry["tokenizer"]],
                # The fixed-window model of the same mode: the runner's no-cache baseline.
                "window_model": window,
            }
        )
        if progress:
            print(
                f"[pi-pack] {relative}: {len(data) / 2**20:.2f} MiB, context {entry['context_length']}, "
                f"tokenizer {entry['tokenizer'][0].name}",
                file=sys.stderr,
                flush=True,
            )
    windows_name = f"data/{windows_path.name}"
    contents[windows_name] = windows_path.read_bytes()
    for module in sorted((REPO / "benchmarks").glob("*.py")):
        if module.name not in _HOST_ONLY:
            contents[f"benchmarks/{module.name}"] = module.read_bytes()
    contents["converter/__init__.py"] = _CONVERTER_PACKAGE_INIT.encode()
    for package in _DEVICE_PACKAGES:
        for module in sorted((REPO / package).glob("*.py")):
            contents[f"{package}/{module.name}"] = module.read_bytes()
    contents["representative_data/__init__.py"] = _WINDOWS_PACKAGE_INIT.encode()
    contents["representative_data/windows.py"] = _WINDOWS_MODULE.read_bytes()
    contents["run_pi.py"] = RUNNER.read_bytes()
    contents["requirements.txt"] = REQUIREMENTS.read_bytes()
    if generation_entries:
        contents["requirements-text.txt"] = TEXT_REQUIREMENTS.read_bytes()
    reference = next((e["path"] for e in packed if e["mode"] == modes.Mode.FP32.value), None)
    from representative_data import windows as windows_lib  # pylint: disable=import-outside-toplevel

    num_windows = windows_lib.load_windows(windows_path).num_windows
    description = {
        "schema": "keras-lm-litert/pi-pack/1",
        "name": name,
        "model": model_name,
        "created": created,
        "seq_len": seq_len,
        "vocabulary_size": vocabulary_size,
        "models": packed,
        "generation": generation_entries,
        "prompt": prompt if generation_entries else None,
        "reference": reference,
        "evaluation": windows_name,
        "evaluation_sha256": file_io.sha256_bytes(contents[windows_name]),
        "requirements": "requirements.txt",
        "compatibility_table": {"runtimes": table_runtimes, "created": runtime_support.load_table().created},
        "built_with": {k: v for k, v in found[0]["facts"].get("versions", {}).items()},
    }
    contents["pack.json"] = (json.dumps(description, indent=2) + "\n").encode()
    tflite_modes = [
        e["mode"]
        for e in packed
        if any(
            label.startswith("tflite-runtime 2.14") and verdict == check.Verdict.LOADS.value
            for label, verdict in e["compatibility"].items()
        )
    ]
    size = sum(len(data) for data in contents.values())
    contents["README.md"] = _readme(
        model_name=model_name,
        tarball=tarball,
        created=created[:10],
        seq_len=seq_len,
        packed=packed,
        num_windows=num_windows,
        size_bytes=size,
        tflite_modes=tflite_modes,
        generation=generation_entries,
        prompt=prompt,
    ).encode()
    contents["MANIFEST.sha256"] = "".join(
        f"{file_io.sha256_bytes(data)}  {relative}\n" for relative, data in sorted(contents.items())
    ).encode()

    with file_io.atomic_output(tarball) as temporary:
        with open(temporary, "wb") as stream, tarfile.open(fileobj=stream, mode="w:gz") as tar:
            _directory(tar, name, mtime=mtime)
            for folder in sorted({str(pathlib.PurePosixPath(r).parent) for r in contents} - {"."}):
                _directory(tar, f"{name}/{folder}", mtime=mtime)
            for relative, data in sorted(contents.items()):
                _add(tar, f"{name}/{relative}", data, mtime=mtime, executable=relative == "run_pi.py")
        check_sum = file_io.sha256_of(temporary)
        file_io.write_atomically(checksum, f"{check_sum}  {tarball.name}\n")
    if progress:
        print(
            f"[pi-pack] wrote {tarball} ({tarball.stat().st_size / 2**20:.1f} MiB) and {checksum.name}; "
            f"unpacks into {name}/ (see its README.md)",
            file=sys.stderr,
            flush=True,
        )
    return PackResult(
        path=tarball,
        sha256=check_sum,
        size_bytes=tarball.stat().st_size,
        name=name,
        files=tuple(sorted(contents)),
        modes=tuple(e["mode"] for e in packed),
        generation_modes=tuple(e["mode"] for e in generation_entries),
    )
