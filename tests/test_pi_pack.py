"""The Raspberry Pi bench pack: built, unpacked and run in a fresh venv with numpy and ai-edge-litert only.

The fresh venv is what a Pi owner creates by following the pack's README (pip
fetches the pinned wheels from the cache or PyPI); the run must write valid
results, and a changed pack must be refused before anything runs.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest

from benchmarks import device_report, generation, generation_report, harness, report
from benchmarks import results as results_lib
from converter.deploy import pi_pack

REPO = pathlib.Path(__file__).resolve().parents[1]
PINS = REPO / "converter" / "deploy" / "pi_requirements.txt"
TEXT_PINS = REPO / "converter" / "deploy" / "pi_text_requirements.txt"
# What a Pi with 64-bit Raspberry Pi OS Bookworm (glibc 2.36) installs: the manylinux tags up to 2_28 that
# the pinned wheels carry.
AARCH64 = ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64"]


def _pins(path: pathlib.Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-").replace(".", "-")] = version.strip()
    return pins


@pytest.fixture(scope="module")
def pack_build(converted_tiny_lm, tmp_path_factory) -> pathlib.Path:
    """The shared tiny models, plus the same model's dynamic generation model with a tokenizer beside it."""
    import converter
    from converter.core.generation import GenerationSettings
    from converter.deploy import device_tokenizer

    from helpers import VOCABULARY_SIZE, tiny_gpt2_causal_lm, tiny_tokenizer

    build_dir = tmp_path_factory.mktemp("pack-build")
    shutil.copytree(converted_tiny_lm["fp32"].parent, build_dir / "tiny")
    path = build_dir / "tiny" / "tiny_dynamic_generate.tflite"
    model = tiny_gpt2_causal_lm()  # seeded: the weights of the shared window models
    converter.convert_keras(
        model, "dynamic", generation=GenerationSettings(context_length=64), output_path=path, progress=False
    )
    tokenizer = tiny_tokenizer(vocabulary_size=VOCABULARY_SIZE)
    device_tokenizer.export_device_tokenizer(tokenizer, name=path.stem).save(path.parent)
    return build_dir


@pytest.fixture(scope="module")
def pack(pack_build, tmp_path_factory) -> pi_pack.PackResult:
    out = tmp_path_factory.mktemp("pack") / "pi-pack-tiny.tar.gz"
    return pi_pack.build_pack(
        "tiny",
        modes_to_pack=["fp32", "dynamic"],
        generation_modes=["dynamic"],
        prompt="The for statement",
        build_dir=pack_build,
        out=out,
        progress=False,
    )


def _unpack(pack: pi_pack.PackResult, folder: pathlib.Path) -> pathlib.Path:
    with tarfile.open(pack.path) as tar:
        tar.extractall(folder, filter="data")
    return folder / pack.name


@pytest.fixture(scope="module")
def device_python(pack, tmp_path_factory) -> pathlib.Path:
    """A fresh venv holding only what the pack's requirements pin, made as the README says."""
    folder = tmp_path_factory.mktemp("device")
    unpacked = _unpack(pack, folder / "requirements")
    venv = folder / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--only-binary=:all:",
            "-r",
            str(unpacked / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    text = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--only-binary=:all:",
            "--no-deps",
            "-r",
            str(unpacked / "requirements-text.txt"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert text.returncode == 0, text.stderr[-2000:]
    return python


def test_pack_holds_models_windows_runner_pins_manifest_and_readme(pack):
    assert pack.path.name == "pi-pack-tiny.tar.gz" and pack.modes == ("fp32", "dynamic")
    assert pack.generation_modes == ("dynamic",)
    assert pack.path.with_name("pi-pack-tiny.tar.gz.sha256").read_text() == f"{pack.sha256}  pi-pack-tiny.tar.gz\n"
    expected = {
        "README.md",
        "MANIFEST.sha256",
        "pack.json",
        "requirements.txt",
        "run_pi.py",
        "models/tiny_fp32.tflite",
        "models/tiny_dynamic.tflite",
        "models/tiny_fp32.json",
        "data/tiny_seq32_evaluation.npz",
        "benchmarks/harness.py",
        "benchmarks/device.py",
        "representative_data/windows.py",
        "representative_data/__init__.py",
        "models/tiny_dynamic_generate.tflite",
        "models/tiny_dynamic_generate.tokenizer_spec.json",
        "models/tiny_dynamic_generate.tokenizer.model",
        "requirements-text.txt",
        "benchmarks/generation.py",
        "benchmarks/generation_bench.py",
        "benchmarks/text.py",
    }
    assert expected <= set(pack.files)
    assert not {"benchmarks/report.py", "benchmarks/__main__.py", "benchmarks/pi_runner.py"} & set(pack.files)
    with tarfile.open(pack.path) as tar:
        names = tar.getnames()
        manifest = tar.extractfile("pi-pack-tiny/MANIFEST.sha256").read().decode()
        description = json.loads(tar.extractfile("pi-pack-tiny/pack.json").read())
        readme = tar.extractfile("pi-pack-tiny/README.md").read().decode()
        runner = tar.getmember("pi-pack-tiny/run_pi.py")
    assert all(name == "pi-pack-tiny" or name.startswith("pi-pack-tiny/") for name in names)
    assert runner.mode & 0o111
    assert len(manifest.splitlines()) == len(pack.files) - 1  # every file but the manifest itself
    dynamic = next(m for m in description["models"] if m["mode"] == "dynamic")
    assert dynamic["compatibility"]["tflite-runtime 2.14.0"] == "refuses"
    assert dynamic["compatibility"]["ai-edge-litert 2.3.0"] == "loads"
    assert description["reference"] == "models/tiny_fp32.tflite"
    (generation,) = description["generation"]
    assert generation["path"] == "models/tiny_dynamic_generate.tflite" and generation["context_length"] == 64
    assert generation["window_model"] == "models/tiny_dynamic.tflite"
    assert generation["tokenizer"] == "models/tiny_dynamic_generate.tokenizer_spec.json"
    assert description["prompt"] == "The for statement"
    assert all(f"  {name}" in manifest for name in generation["tokenizer_files"])
    for command in (
        "sha256sum -c pi-pack-tiny.tar.gz.sha256",
        "tar -xzf pi-pack-tiny.tar.gz",
        "python3 -m venv ~/pi-pack-venv",
        "pip install --only-binary=:all: -r requirements.txt",
        "~/pi-pack-venv/bin/python run_pi.py",
        "pip install --only-binary=:all: --no-deps -r requirements-text.txt",
        "### Generation",
        '"The for statement"',
        "make pi-report RESULTS=pi-results",
        'scp -r "$PI:pi-pack-tiny/results" ./pi-results',
    ):
        assert command in readme, command
    assert "$" + "model" not in readme and "tflite-runtime 2.14 loads `fp32`" in readme


def test_pins_equal_the_hosts_and_cover_the_litert_dependencies():
    lock = _pins(REPO / "requirements.lock")
    pins = _pins(PINS) | _pins(TEXT_PINS)
    assert pins["ai-edge-litert"] == "2.3.0" and set(_pins(TEXT_PINS)) == {"tokenizers", "sentencepiece"}
    assert all(lock[name] == version for name, version in pins.items())


def _aarch64_wheels(requirements: pathlib.Path, folder: pathlib.Path, *options: str) -> dict[str, str]:
    """What pip would install on a Pi from `requirements`: name -> wheel file (metadata only, nothing fetched)."""
    report = folder / f"{requirements.stem}.json"
    platforms = [argument for platform in AARCH64 for argument in ("--platform", platform)]
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--ignore-installed",
            "--report",
            str(report),
            "--target",
            str(folder / "target"),
            *platforms,
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            "--abi",
            "abi3",
            "--abi",
            "none",
            "--only-binary=:all:",
            *options,
            "-r",
            str(requirements),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return {
        item["metadata"]["name"].lower().replace("_", "-").replace(".", "-"): item["download_info"]["url"].rsplit(
            "/", 1
        )[-1]
        for item in json.loads(report.read_text())["install"]
    }


def test_pins_have_wheels_for_aarch64_cpython_311_and_nothing_else_is_pulled_in(tmp_path):
    wheels = _aarch64_wheels(PINS, tmp_path)
    assert set(wheels) == set(_pins(PINS))
    for name in ("ai-edge-litert", "numpy", "ml-dtypes"):
        assert "cp311" in wheels[name] and "aarch64" in wheels[name], wheels[name]
    # The tokenizers install with --no-deps, as the pack's README says: exactly the two pinned wheels.
    text = _aarch64_wheels(TEXT_PINS, tmp_path, "--no-deps")
    assert set(text) == {"tokenizers", "sentencepiece"}
    assert all("aarch64" in wheel for wheel in text.values()), text


@pytest.mark.large
def test_pack_runs_in_a_fresh_venv_without_tensorflow_and_writes_valid_results(pack, device_python, tmp_path):
    freeze = subprocess.run([str(device_python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True)
    installed = {line.split("==")[0].lower().replace("_", "-").replace(".", "-") for line in freeze.stdout.split()}
    # numpy, ai-edge-litert and its own dependencies, the two tokenizer libraries: no TensorFlow
    assert installed == set(_pins(PINS)) | set(_pins(TEXT_PINS))
    unpacked = _unpack(pack, tmp_path)
    completed = subprocess.run(
        [
            str(device_python),
            "run_pi.py",
            "--threads=1,2",
            "--repeats=2",
            "--runs=3",
            "--min_seconds=0.05",
            "--max_windows=2",
        ],
        cwd=unpacked,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ["PATH"]},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "every file matches MANIFEST.sha256" in completed.stderr
    found = results_lib.load_results(unpacked / "results")
    assert len(found) == 2 * 2 * 2
    description = json.loads((unpacked / "pack.json").read_text())
    sha = {m["mode"]: m["sha256"] for m in description["models"]}
    for result in found:
        assert result["model"]["sha256"] == sha[result["model"]["variant"]]
        assert result["runtime"] == {"name": "ai-edge-litert", "version": "2.3.0"}
        assert result["latency"]["runs"] >= 3 and result["latency"]["median_ms"] > 0
        device = result["device"]
        assert {"board", "before", "after", "sweep", "pack", "vcgencmd"} <= set(device)
        assert {"soc_temperature_c", "cpu", "throttled"} <= set(device["before"])
        assert device["sweep"]["repeats"] == 2 and device["sweep"]["threads"] == [1, 2]
        assert device["pack"]["name"] == "pi-pack-tiny"
    scored = [r for r in found if r["accuracy"]]
    assert sorted(r["model"]["variant"] for r in scored) == ["dynamic", "fp32"]
    assert all(r["device"]["sweep"]["repeat"] == 1 and r["settings"]["threads"] == 1 for r in scored)
    dynamic = next(r for r in scored if r["model"]["variant"] == "dynamic")
    # The pack scores what the host's harness scores on the same files, windows and machine (an argmax
    # count on this random model would be rounding luck), and dynamic int8 stays close to fp32.
    models = {m["mode"]: unpacked / m["path"] for m in description["models"]}
    expected = harness.benchmark_file(
        models["dynamic"],
        reference=models["fp32"],
        threads=1,
        max_windows=2,
        evaluation=unpacked / description["evaluation"],
        runs=1,
        warmup_runs=0,
        min_seconds=0,
        progress=None,
    ).accuracy
    assert dynamic["accuracy"]["windows"] == 2
    assert dynamic["accuracy"]["perplexity"] == pytest.approx(expected.perplexity, rel=1e-6)
    assert dynamic["accuracy"]["top1_agreement"] == pytest.approx(expected.top1_agreement)
    assert 0 < dynamic["accuracy"]["mean_kl"] < 1e-3
    summary = json.loads(next((unpacked / "results").glob("run_*.json")).read_text())
    assert summary["refused"] == [] and len(summary["results"]) == 8

    # Generation: every thread count and repeat measured on the board, in llama-bench's terms.
    measured = generation_report.load_generation_results(unpacked / "results")
    assert len(measured) == 2 * 2 and len(summary["generation_results"]) == 4
    for item in measured:
        assert item["model"]["name"] == "tiny" and item["model"]["variant"] == "dynamic"
        assert item["prefill_tokens_per_second"]["32"]["median"] > 0
        assert item["decode_tokens_per_second"]["median"] > 0 and item["decode_context"] == 64
        assert item["window_forward_ms"] > 0 and item["peak_rss_bytes"] > item["file_bytes"]
        assert item["device"]["sweep"]["repeats"] == 2 and "before" in item["device"]
    assert sorted((i["threads"], i["device"]["sweep"]["repeat"]) for i in measured) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    # One text reply per generation model, the tokens the host's own loop gives on the same file and threads.
    (reply,) = summary["replies"]
    expected = generation.generate_text(
        unpacked / "models" / "tiny_dynamic_generate.tflite", "The for statement", max_new_tokens=32, threads=2
    )
    assert reply["mode"] == "dynamic" and reply["prompt"] == "The for statement"
    assert reply["tokens"] == list(expected.generation.tokens) and reply["text"] == expected.text
    assert f"dynamic: The for statement{expected.text}" in completed.stdout
    # The report shows the board's sweep with its spread, beside the host's figures of the same model.
    text = report.render_report(
        results_lib.load_results(unpacked / "results"),
        out=tmp_path / "report.md",
        plots=False,
        generation=device_report.merged_generation_results(unpacked / "results", None),
    )
    assert "### Generation: tiny on" in text and "(bench pack)" in text and "Device sweep" in text
    assert "| dynamic | 2 | 2 |" in text


def test_changed_or_missing_files_are_refused_before_anything_runs(pack, tmp_path):
    unpacked = _unpack(pack, tmp_path / "changed")
    model = unpacked / "models" / "tiny_dynamic.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    (unpacked / "benchmarks" / "timing.py").unlink()
    completed = subprocess.run([sys.executable, "run_pi.py"], cwd=unpacked, capture_output=True, text=True, check=False)
    assert completed.returncode == 2
    assert (
        "error: The pack was changed or damaged after it was built (changed: models/tiny_dynamic.tflite; "
        "missing: benchmarks/timing.py)" in completed.stderr
    )
    assert "sha256sum -c" in completed.stderr
    assert not (unpacked / "results").exists()

    bare = _unpack(pack, tmp_path / "bare")
    (bare / "MANIFEST.sha256").unlink()
    completed = subprocess.run([sys.executable, "run_pi.py"], cwd=bare, capture_output=True, text=True, check=False)
    assert completed.returncode == 2 and "has no MANIFEST.sha256" in completed.stderr


def test_results_folder_that_cannot_be_written_is_refused(pack, tmp_path):
    unpacked = _unpack(pack, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    completed = subprocess.run(
        [sys.executable, "run_pi.py", f"--results_dir={blocker}"],
        cwd=unpacked,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2 and "is a file; pass a folder" in completed.stderr


def test_pack_without_evaluation_windows_is_refused(converted_tiny_lm, tmp_path):
    build_dir = tmp_path / "build"
    shutil.copytree(converted_tiny_lm["fp32"].parent, build_dir / "tiny")
    for windows in (build_dir / "tiny").glob("*.npz"):
        windows.unlink()
    with pytest.raises(FileNotFoundError, match="A pack needs evaluation windows, and there are none at") as error:
        pi_pack.build_pack("tiny", modes_to_pack=["fp32"], build_dir=build_dir, progress=False)
    assert "--evaluation=<windows.npz>" in str(error.value)
    assert not list(build_dir.glob("*.tar.gz"))


def test_missing_mode_existing_pack_and_cli_errors(converted_tiny_lm, pack, tmp_path):
    build_dir = converted_tiny_lm["fp32"].parent.parent
    with pytest.raises(FileNotFoundError, match="No int8 model of tiny.*make convert MODEL=tiny MODE=int8"):
        pi_pack.build_pack("tiny", modes_to_pack=["int8"], build_dir=build_dir, out=tmp_path / "p.tar.gz")
    before = pack.path.read_bytes()
    with pytest.raises(FileExistsError, match="exists. Pass --overwrite"):
        pi_pack.build_pack("tiny", modes_to_pack=["fp32"], build_dir=build_dir, out=pack.path)
    assert pack.path.read_bytes() == before
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "converter.cli.pi_pack",
            "--model=tiny",
            "--modes=fp32",
            f"--build_dir={build_dir}",
            f"--out={pack.path}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2 and "error:" in completed.stderr and "exists" in completed.stderr


@pytest.mark.large
def test_make_pi_pack_converts_what_is_missing_and_packs_it(tmp_path):
    from helpers import tiny_gpt2_preset

    preset = tiny_gpt2_preset(tmp_path / "pi-preset")
    build = tmp_path / "build"
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    generation = ["GENERATE=1", "GEN_MODES=dynamic", "CONTEXT=32"]
    completed = subprocess.run(
        ["make", "pi-pack", f"MODEL={preset}", "MODES=fp32", "SEQ_LEN=16", f"BUILD_DIR={build}", *generation],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    with tarfile.open(build / "pi-pack-pi-preset.tar.gz") as tar:
        names = set(tar.getnames())
        description = json.loads(tar.extractfile("pi-pack-pi-preset/pack.json").read())
    assert {
        "pi-pack-pi-preset/models/pi-preset_fp32.tflite",
        "pi-pack-pi-preset/data/pi-preset_seq16_evaluation.npz",
        "pi-pack-pi-preset/models/pi-preset_dynamic_generate.tflite",
        "pi-pack-pi-preset/models/pi-preset_dynamic_generate.tokenizer_spec.json",
    } <= names
    # The generation model was converted first, with the context asked for; no window model of its mode exists.
    (packed,) = description["generation"]
    assert packed["context_length"] == 32 and packed["window_model"] is None
    again = subprocess.run(
        ["make", "pi-pack", f"MODEL={preset}", "MODES=fp32", "SEQ_LEN=16", f"BUILD_DIR={build}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode != 0 and "OVERWRITE=1" in again.stderr
