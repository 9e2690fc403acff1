"""Android export: files, manifest, embedded metadata, the consumer script, bad input, CLI and make."""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import android_consumer
import android_helpers as helpers
from helpers import random_windows, tiny_gpt2_preset, tiny_tokenizer

REPO = pathlib.Path(__file__).resolve().parents[1]
SEQ_LEN = 32
PROMPT = "def f(x):  # naïve 日本 🙂\n"


@pytest.fixture(scope="module")
def tokenizer():
    return helpers.sentencepiece_tokenizer()


@pytest.fixture(scope="module")
def result(tokenizer):
    """An int8 causal LM whose greedy output varies from token to token.

    A random GPT-2 ties its output to its input embedding, so greedy decoding
    repeats the last token forever; an untied output layer gives varied
    tokens, which makes "token for token" a real check.
    """
    import keras

    import converter

    keras.utils.set_random_seed(0)
    size = tokenizer.vocabulary_size()
    ids = keras.Input((None,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(size, 32)(ids)
    x = x + keras.layers.MultiHeadAttention(2, 16)(x, x, use_causal_mask=True)
    model = keras.Model(ids, keras.layers.Dense(size)(keras.layers.LayerNormalization()(x)))
    windows = random_windows(seq_len=SEQ_LEN, vocabulary_size=size)
    return converter.convert_keras(model, "int8", calibration=windows, seq_len=SEQ_LEN, progress=False, name="tiny")


@pytest.fixture(scope="module")
def export(result, tokenizer, tmp_path_factory):
    import converter

    return converter.export_android(result, tmp_path_factory.mktemp("app") / "assets", tokenizer=tokenizer)


def _run(command, **kwargs):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False, **kwargs)


def test_export_writes_model_tokenizer_and_a_manifest_that_matches_the_schema(export, result):
    from converter.deploy import manifest_schema

    folder = pathlib.Path(export.folder)
    assert sorted(p.name for p in folder.iterdir()) == ["tiny_int8.json", "tiny_int8.tflite", "tiny_int8.vocab.txt"]
    manifest = json.loads((folder / "tiny_int8.json").read_text(encoding="utf-8"))
    manifest_schema.validate_manifest(manifest)
    assert manifest == export.manifest
    for file_name, entry in manifest["files"].items():
        data = (folder / file_name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    assert set(manifest["files"]) == {"tiny_int8.tflite", "tiny_int8.vocab.txt"}
    model = manifest["model"]
    assert (model["mode"], model["seq_len"], model["vocabulary_size"]) == ("int8", SEQ_LEN, 700)
    assert model["inputs"] == [{"name": "token_ids", "dtype": "int32", "shape": [1, SEQ_LEN], "quantization": None}]
    assert model["outputs"][0]["name"] == "logits" and model["outputs"][0]["shape"] == [1, SEQ_LEN, 700]
    assert model["min_runtime_version"] == result.min_runtime_version and model["signature_key"]
    assert manifest["special_token_ids"] == {"bos": 2, "eos": 3, "pad": 0, "unk": 1}
    assert manifest["tokenizer"]["type"] == "sentencepiece_unigram"


def test_model_file_describes_itself_and_computes_like_the_converted_model(export, result):
    from ai_edge_litert import interpreter as litert

    from converter.deploy import android_export

    embedded = android_export.read_embedded_manifest(export.model_path)
    expected = copy.deepcopy(dict(export.manifest))
    del expected["files"]["tiny_int8.tflite"]  # a file cannot hold its own hash
    assert embedded == expected
    feed = {"token_ids": np.arange(SEQ_LEN, dtype=np.int32)[None, :] * 7 % 700}
    before = litert.Interpreter(model_content=result.model).get_signature_runner()(**feed)["logits"]
    after = litert.Interpreter(model_path=str(export.model_path)).get_signature_runner()(**feed)["logits"]
    np.testing.assert_array_equal(before, after)


def _project_greedy(result, tokenizer, prompt: str, steps: int) -> tuple[list[int], list[int]]:
    """Greedy decoding with the project's own pieces: keras-hub tokens, the converted model in memory."""
    from ai_edge_litert import interpreter as litert

    import representative_data

    prompt_ids = representative_data.TokenizerAdapter(tokenizer).encode(prompt).tolist()
    runner = litert.Interpreter(model_content=result.model).get_signature_runner()
    tokens, generated = list(prompt_ids), []
    for _ in range(steps):
        window = tokens[-result.seq_len :]
        token_ids = np.zeros((1, result.seq_len), dtype=np.int32)
        token_ids[0, : len(window)] = window
        next_id = int(np.argmax(runner(token_ids=token_ids)["logits"][0, len(window) - 1]))
        tokens.append(next_id)
        generated.append(next_id)
        if next_id == 3:  # the tokenizer's end of text
            break
    return prompt_ids, generated


def test_consumer_script_matches_the_project_pipeline_token_for_token(export, result, tokenizer):
    steps = 40  # past seq_len, so the window slides
    completed = _run(
        [
            sys.executable,
            str(REPO / "tests" / "android_consumer.py"),
            export.folder,
            f"--prompt={PROMPT}",
            f"--steps={steps}",
        ]
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    consumer = json.loads(completed.stdout.strip().splitlines()[-1])
    prompt_ids, generated = _project_greedy(result, tokenizer, PROMPT, steps)
    assert consumer["prompt_ids"] == prompt_ids
    assert len(prompt_ids) < SEQ_LEN < len(prompt_ids) + len(generated)
    assert len(set(generated)) > 10
    assert consumer["generated_ids"] == generated
    assert consumer["text"] == helpers.keras_hub_text(tokenizer, generated)


@pytest.fixture(scope="module")
def generation_export(tokenizer, tmp_path_factory):
    """A tiny Llama's fp32 generation model (contexts 48 and 96) exported with its tokenizer."""
    import converter
    from converter.core.generation import GenerationSettings

    from helpers import tiny_llama_causal_lm

    model = tiny_llama_causal_lm(vocabulary_size=tokenizer.vocabulary_size())
    rng = np.random.default_rng(0)
    for variable in model.backbone.weights:  # weights with clear next-token margins: greedy text varies
        if len(variable.shape) == 2:
            scale = 0.5 if "embedding" in variable.path else 0.08
            variable.assign(rng.normal(0, scale, variable.shape).astype(np.float32))
    settings = GenerationSettings(context_length=96, prefill_lengths=(8, 32), smaller_contexts=(48,))
    result = converter.convert_keras(model, "fp32", generation=settings, progress=False, name="tinygen")
    return converter.export_android(result, tmp_path_factory.mktemp("app") / "assets", tokenizer=tokenizer)


@pytest.mark.parametrize("prompt, steps", [(PROMPT, 12), (PROMPT * 2, 24)])
def test_generation_export_runs_cached_in_the_consumer_like_the_projects_loop(generation_export, prompt, steps):
    from benchmarks import generation

    model = generation_export.manifest["model"]
    assert generation_export.name == "tinygen_fp32" and model["signature_key"] == "decode"
    described = model["generation"]
    assert [c["context"] for c in described["contexts"]] == [48, 96]
    assert described["contexts"][0]["prefill"] == {"8": "ctx48_prefill_8", "32": "ctx48_prefill_32"}
    assert {"tokens", "input_pos", "kv_cache_k_0", "kv_cache_v_1"} <= {e["name"] for e in model["inputs"]}
    completed = _run(
        [
            sys.executable,
            str(REPO / "tests" / "android_consumer.py"),
            generation_export.folder,
            f"--prompt={prompt}",
            f"--steps={steps}",
        ]
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    consumer = json.loads(completed.stdout.strip().splitlines()[-1])
    # The short prompt fits one padded chunk on the 48-position cache; the long one takes several on the 96.
    assert (len(consumer["prompt_ids"]) + steps <= 48) == (prompt == PROMPT)
    assert len(consumer["prompt_ids"]) > 32 or prompt == PROMPT
    expected = generation.Generator(generation_export.model_path, threads=2).generate(
        consumer["prompt_ids"], max_new_tokens=steps, stop_token_ids=described["stop_token_ids"]
    )
    assert consumer["generated_ids"] == list(expected.tokens) and len(set(expected.tokens)) > 3


def test_the_cli_refuses_a_generation_export_in_a_mode_generation_lacks(tmp_path):
    completed = _run(
        [sys.executable, "-m", "converter.cli.android", "--mode=int8", "--generate", f"--out={tmp_path / 'assets'}"]
    )
    assert completed.returncode == 2
    assert "Generation signatures convert in fp32, fp16, dynamic" in completed.stderr
    assert not (tmp_path / "assets").exists()
    completed = _run(
        [sys.executable, "-m", "converter.cli.android", "--mode=fp32", "--context_length=64", f"--out={tmp_path}"]
    )
    assert completed.returncode == 2 and "pass --generate too" in completed.stderr


def test_consumer_script_imports_only_the_standard_library_numpy_and_litert():
    tree = ast.parse((REPO / "tests" / "android_consumer.py").read_text(encoding="utf-8"))
    modules = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    modules |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    third_party = modules - set(sys.stdlib_module_names)
    assert third_party == {"numpy", "ai_edge_litert"}, third_party


def test_consumer_refuses_a_file_that_does_not_match_its_hash(export, tmp_path):
    copied = tmp_path / "assets"
    shutil.copytree(export.folder, copied)
    vocabulary = copied / "tiny_int8.vocab.txt"
    vocabulary.write_text(vocabulary.read_text(encoding="utf-8").replace("\tnormal", "\tunused", 1), encoding="utf-8")
    with pytest.raises(ValueError, match="tiny_int8.vocab.txt does not match the hash"):
        android_consumer.load_export(copied)


@pytest.mark.parametrize("case", ["sentencepiece", "sentencepiece_dummy_prefix", "byte_pair_cross_word_merges"])
def test_python_readers_give_keras_hub_ids_and_text(case, tmp_path):
    from converter.deploy import exported_tokenizer

    tokenizer = {
        "sentencepiece": helpers.sentencepiece_tokenizer,
        "sentencepiece_dummy_prefix": lambda: helpers.sentencepiece_tokenizer(
            dummy_prefix=True, user_symbols=("<sep>", "ing▁")
        ),
        "byte_pair_cross_word_merges": lambda: helpers.byte_pair_tokenizer(regex=False, add_prefix_space=True),
    }[case]()
    manifest = json.loads(helpers.write_tokenizer(tokenizer, tmp_path).read_text(encoding="utf-8"))
    readers = [
        exported_tokenizer.ExportedTokenizer(manifest["tokenizer"], lambda name: (tmp_path / name).read_bytes()),
        android_consumer.load_tokenizer(tmp_path, manifest["tokenizer"]),
    ]
    for text in helpers.sample_texts() + [f"a{helpers.SPECIAL}<sep>b"]:
        ids = helpers.keras_hub_ids(tokenizer, text)
        for reader in readers:
            assert reader.encode(text) == ids, (type(reader).__name__, text[:60])
            assert reader.decode(ids) == helpers.keras_hub_text(tokenizer, ids)


def test_byte_pair_export_writes_merges_and_overwrite_replaces_the_whole_export(result, tokenizer, tmp_path):
    import converter

    bpe = helpers.byte_pair_tokenizer()
    folder = tmp_path / "assets"
    converter.export_android(result, folder, tokenizer=tokenizer, name="lm")
    with pytest.raises(FileExistsError, match="already holds an export named 'lm'.*overwrite=True"):
        converter.export_android(result, folder, tokenizer=bpe, name="lm")
    exported = converter.export_android(result, folder, tokenizer=bpe, name="lm", overwrite=True)
    assert exported.manifest["tokenizer"]["type"] == "byte_level_bpe"
    assert exported.manifest["special_token_ids"]["eos"] == bpe.end_token_id
    assert sorted(p.name for p in folder.iterdir()) == ["lm.json", "lm.merges.txt", "lm.tflite", "lm.vocab.txt"]
    reader = android_consumer.load_tokenizer(folder, android_consumer.load_export(folder)["tokenizer"])
    assert reader.encode(helpers.MULTILINGUAL) == helpers.keras_hub_ids(bpe, helpers.MULTILINGUAL)
    converter.export_android(result, folder, tokenizer=tokenizer, name="lm", overwrite=True)
    assert not (folder / "lm.merges.txt").exists()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["a/b", "../x", "..", "a\\b", "x..y", ".hidden", ""])
def test_names_with_path_separators_or_dotdot_are_refused_before_anything_is_written(name, result, tokenizer, tmp_path):
    import converter

    with pytest.raises(ValueError, match="Export name"):
        converter.export_android(result, tmp_path / "assets", tokenizer=tokenizer, name=name)
    assert not (tmp_path / "assets").exists()


def test_an_output_path_that_is_a_file_is_refused(result, tokenizer, tmp_path):
    import converter

    (tmp_path / "assets").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file.*Pass a folder"):
        converter.export_android(result, tmp_path / "assets", tokenizer=tokenizer)
    with pytest.raises(NotADirectoryError, match="is a file"):
        converter.export_android(result, tmp_path / "assets" / "deeper", tokenizer=tokenizer)


def test_a_model_without_tokenizer_is_refused_with_what_to_pass(result, tmp_path):
    import converter

    with pytest.raises(ValueError, match=r"No tokenizer.*tokenizer=loaded.tokenizer.*from_preset"):
        converter.export_android(result, tmp_path / "assets")
    assert not (tmp_path / "assets").exists()


def test_unsupported_tokenizers_are_refused_with_the_reason(result, tokenizer, tmp_path):
    import keras_hub

    import converter

    with pytest.raises(ValueError, match="type BPE; the Android tokenizer implements unigram"):
        converter.export_android(result, tmp_path / "a", tokenizer=tiny_tokenizer())
    word_piece = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=["[UNK]", "a"])
    with pytest.raises(TypeError, match="Cannot export a WordPieceTokenizer"):
        converter.export_android(result, tmp_path / "a", tokenizer=word_piece)
    with pytest.raises(ValueError, match=r"Special token id eos=700 is not an id in \[0, 700\)"):
        converter.export_android(result, tmp_path / "a", tokenizer=tokenizer, special_token_ids={"eos": 700})
    assert not (tmp_path / "a").exists()


def test_an_existing_export_is_kept_without_overwrite(export, result, tokenizer):
    import converter

    before = {p.name: p.read_bytes() for p in pathlib.Path(export.folder).iterdir()}
    with pytest.raises(FileExistsError, match="OVERWRITE=1"):
        converter.export_android(result, export.folder, tokenizer=tokenizer)
    assert {p.name: p.read_bytes() for p in pathlib.Path(export.folder).iterdir()} == before


def test_schema_rejects_bad_manifests_and_the_validator_checks_every_keyword(export):
    from converter.deploy import manifest_schema

    def broken(change):
        manifest = copy.deepcopy(dict(export.manifest))
        change(manifest)
        return manifest

    cases = {
        "missing required key 'seq_len'": lambda m: m["model"].pop("seq_len"),
        "expected integer": lambda m: m["special_token_ids"].update(eos="3"),
        "does not match": lambda m: m["files"]["tiny_int8.tflite"].update(sha256="abc"),
        "key '../evil.txt'": lambda m: m["files"].update({"../evil.txt": m["files"]["tiny_int8.tflite"]}),
        "not exactly one": lambda m: m["tokenizer"].update(type="wordpiece"),
        "unexpected key 'extra'": lambda m: m.update(extra=1),
    }
    for message, change in cases.items():
        with pytest.raises(manifest_schema.ManifestError, match=message):
            manifest_schema.validate_manifest(broken(change))
    schema = manifest_schema.load_schema()
    schema["properties"]["name"] = {"type": "string", "maxLength": 3}
    with pytest.raises(ValueError, match="maxLength"):
        manifest_schema.validate_manifest(export.manifest, schema)


@pytest.fixture(scope="module")
def preset(tokenizer, tmp_path_factory):
    """A keras-hub preset folder: a tiny GPT-2 backbone and a unigram tokenizer."""
    return tiny_gpt2_preset(tmp_path_factory.mktemp("presets") / "tiny-lm", tokenizer=tokenizer)


@pytest.mark.large
def test_make_android_converts_when_needed_and_fills_the_assets_folder(preset, tmp_path):
    build, assets = tmp_path / "build", tmp_path / "app" / "src" / "main" / "assets"
    command = ["make", "android", f"MODEL={preset}", "MODE=fp32", "SEQ_LEN=16", f"BUILD_DIR={build}", f"OUT={assets}"]
    completed = _run(command)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (build / "tiny-lm" / "tiny-lm_fp32.tflite").is_file()  # converted first, as make convert does
    assert sorted(p.name for p in assets.iterdir()) == [
        "tiny-lm_fp32.json",
        "tiny-lm_fp32.tflite",
        "tiny-lm_fp32.vocab.txt",
    ]
    assert "tiny-lm_fp32.vocab.txt" in completed.stdout
    consumer = _run([sys.executable, "tests/android_consumer.py", str(assets), "--steps=3"])
    assert consumer.returncode == 0, consumer.stderr[-2000:]

    again = _run(command)
    assert again.returncode == 2 and "error: " in again.stderr and "OVERWRITE=1" in again.stderr
    cli = [sys.executable, "-m", "converter.cli.android", "--mode=fp32", f"--model={preset}", f"--build_dir={build}"]
    bad_name = _run(cli + [f"--out={assets}", "--name=../escape"])
    assert bad_name.returncode == 2 and "must be a plain file name" in bad_name.stderr
    (tmp_path / "file").write_text("x")
    on_file = _run(cli + [f"--out={tmp_path / 'file'}"])
    assert on_file.returncode == 2 and "is a file" in on_file.stderr
    other_length = _run(cli + [f"--out={tmp_path / 'other'}", "--seq_len=8"])
    assert other_length.returncode == 2 and "--seq_len=16" in other_length.stderr


def test_make_help_lists_android_and_the_default_assets_folder():
    assert "make android MODE=" in _run(["make", "help"]).stdout
    dry = _run(["make", "-n", "android", "MODE=int8"])
    assert "-m converter.cli.android" in dry.stdout and "--out=android/app/src/main/assets" in dry.stdout
