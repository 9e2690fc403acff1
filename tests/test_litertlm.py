"""LiteRT-LM bundles: written with litert-lm-builder, loaded and run by litert-lm-api's engine, checked by hash."""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import converter
from benchmarks import generation, generation_report, litertlm, litertlm_bench, text
from converter.core.generation import GenerationSettings
from converter.deploy import device_tokenizer, litertlm_bundle

from helpers import peaked, tiny_gpt2_causal_lm, tiny_llama_causal_lm

SETTINGS = GenerationSettings(context_length=96, prefill_lengths=(8, 32), smaller_contexts=(48,))
PROMPT = "The for statement is used to"
STEPS = 16
SMOLLM2_PROMPT = "The capital of France is"


def _tokenizer(kind):
    """Tokenizers whose every token is whole text (ASCII BPE; SentencePiece without byte pieces).

    LiteRT-LM's Python API streams text, not ids, and a token that is part of
    a character's bytes detokenizes to U+FFFD whatever byte it is: with whole-
    text tokens only, the streamed pieces name the tokens the engine chose.
    """
    import keras_hub
    import tokenizers
    from tokenizers import models, pre_tokenizers, trainers

    from android_helpers import SPECIAL, documents, sentencepiece_tokenizer

    if kind == "sentencepiece":
        return sentencepiece_tokenizer(byte_fallback=False)
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # No initial alphabet: the base tokens are the bytes of this ASCII text, each a whole character.
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=[SPECIAL], show_progress=False)
    backend.train_from_iterator([d.encode("ascii", "ignore").decode("ascii") for d in documents()], trainer)
    state = json.loads(backend.to_str())["model"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in state["merges"]]
    return keras_hub.tokenizers.GPT2Tokenizer(vocabulary=dict(state["vocab"]), merges=merges)


_BUILT = {}
# Seeds whose greedy replies vary (checked with a Keras forward per step): the comparison then covers many tokens.
_SEEDS = {("llama", "byte_level_bpe"): 0, ("llama", "sentencepiece"): 2, ("gpt2", "byte_level_bpe"): 0}


def _bundle(family, kind, factory):
    """A tiny generation model of `family` with a `kind` tokenizer, its tokenizer files and its bundle (built once)."""
    if (family, kind) not in _BUILT:
        tokenizer = _tokenizer(kind)
        size = tokenizer.vocabulary_size()
        if family == "gpt2":
            model = tiny_gpt2_causal_lm(hidden_dim=64, max_sequence_length=128, vocabulary_size=size)
        else:
            model = tiny_llama_causal_lm(vocabulary_size=size)
        peaked(model, seed=_SEEDS[family, kind])
        folder = factory.mktemp(f"litertlm_{family}_{kind}")
        path = folder / "tiny_fp32_generate.tflite"
        converter.convert_keras(model, "fp32", generation=SETTINGS, output_path=path, progress=False)
        device_tokenizer.export_device_tokenizer(tokenizer, name=path.stem).save(folder)
        record = litertlm_bundle.export_litertlm(path, chat_template="{{ messages[0]['content'] }}")
        _BUILT[family, kind] = (family, kind, path, record)
    return _BUILT[family, kind]


# Both tokenizer kinds LiteRT-LM reads, and both model families (learned positions; RoPE with grouped-query attention).
@pytest.fixture(
    scope="module", params=[("llama", "byte_level_bpe"), ("llama", "sentencepiece"), ("gpt2", "byte_level_bpe")]
)
def bundle(request, tmp_path_factory):
    return _bundle(*request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def llama_bundle(tmp_path_factory):
    return _bundle("llama", "byte_level_bpe", tmp_path_factory)


def test_the_bundle_holds_the_model_tokenizer_and_metadata_and_its_record_matches(bundle):
    _, kind, path, record = bundle
    assert record.path == str(path.with_name("tiny_fp32.litertlm"))
    assert litertlm.verify_bundle(record.path) == record.to_dict()
    assert record.tokenizer["type"] == ("hf_tokenizer_json" if kind == "byte_level_bpe" else "sentencepiece_model")
    assert record.max_num_tokens == 96 and record.model["prefill_lengths"] == [8, 32]
    assert {"decode", "prefill_8", "prefill_32", "ctx48_decode"} <= set(record.model["signatures"])
    assert record.model_type == "generic_model" and record.stop_token_ids
    # The builder pads sections to 16 KiB blocks: the bundle holds the model, not a copy of half of it.
    assert path.stat().st_size < record.size_bytes < path.stat().st_size + 2**20


def test_litert_lm_greedy_tokens_equal_the_projects_loop(bundle):
    family, _, path, record = bundle
    reply = litertlm.generate(record.path, PROMPT, max_new_tokens=STEPS, threads=2)
    ours = generation.generate_text(path, PROMPT, max_new_tokens=STEPS, threads=2, stop_token_ids=record.stop_token_ids)
    tokens = [t for t in ours.generation.tokens if t not in record.stop_token_ids]
    assert list(reply.prompt_ids) == text.load_text_tokenizer(generation.tokenizer_beside(path)).encode(PROMPT)
    # The tiny GPT-2 settles into repeating a token after a step or two (so does a Keras forward per step).
    assert len(set(tokens)) > (3 if family == "llama" else 1)
    # Every streamed piece is the text of the project's next token (or next few, for a character split over
    # byte tokens), and every token has its piece.
    spans = litertlm.token_spans(record.path, reply.pieces, tokens)
    assert spans == [(i, i + 1) for i in range(len(tokens))]
    with pytest.raises(ValueError, match="the engine chose other tokens"):
        litertlm.token_spans(record.path, reply.pieces, [*tokens[:-1], (tokens[-1] + 1) % 100 + 100])
    assert reply.text == ours.text
    assert set(reply.stop_token_ids) == set(record.stop_token_ids)


def test_a_tampered_truncated_or_unrecorded_bundle_is_refused_before_loading(llama_bundle, tmp_path):
    _, _, _, record = llama_bundle
    copy = tmp_path / "copy.litertlm"
    shutil.copyfile(record.path, copy)
    with pytest.raises(litertlm.BundleIntegrityError, match="has no record beside it"):
        litertlm.open_engine(copy)
    shutil.copyfile(litertlm.record_path(record.path), litertlm.record_path(copy))
    assert litertlm.verify_bundle(copy)["sha256"] == record.sha256
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(litertlm.BundleIntegrityError, match="does not match the sha256"):
        litertlm.generate(copy, PROMPT, max_new_tokens=2)
    copy.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(litertlm.BundleIntegrityError, match="truncated or partial copy"):
        litertlm.benchmark(copy, prefill_tokens=8, decode_tokens=4, runs=1)
    with pytest.raises(litertlm.BundleIntegrityError, match="No bundle at"):
        litertlm.verify_bundle(tmp_path / "missing.litertlm")


def test_what_cannot_be_bundled_is_refused_before_anything_is_written(llama_bundle, converted_tiny_lm, tmp_path):
    _, _, path, record = llama_bundle
    with pytest.raises(FileExistsError):
        litertlm_bundle.export_litertlm(path)
    out = tmp_path / "fixed.litertlm"
    with pytest.raises(ValueError, match=r"fixed-window model.*make convert GENERATE=1.*generation=True"):
        litertlm_bundle.export_litertlm(converted_tiny_lm["fp32"], out=out)
    spec_path = generation.tokenizer_beside(path)
    spec = json.loads(spec_path.read_text())
    wordpiece = tmp_path / "wordpiece.tokenizer_spec.json"
    wordpiece.write_text(json.dumps({**spec, "type": "wordpiece"}))
    with pytest.raises(ValueError, match="Tokenizer type 'wordpiece' .* cannot go into a LiteRT-LM bundle"):
        litertlm_bundle.export_litertlm(path, out=tmp_path / "a.litertlm", tokenizer=wordpiece)
    with pytest.raises(ValueError, match="model_type='llama'; LiteRT-LM litert-lm-builder knows generic_model"):
        litertlm_bundle.export_litertlm(path, out=tmp_path / "b.litertlm", model_type="llama")
    with pytest.raises(ValueError, match="ends in .litertlm"):
        litertlm_bundle.export_litertlm(path, out=tmp_path / "c.bin")
    with pytest.raises(FileNotFoundError, match="No tokenizer spec at"):
        litertlm_bundle.export_litertlm(path, out=tmp_path / "d.litertlm", tokenizer=tmp_path / "none.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wordpiece.tokenizer_spec.json"]
    assert litertlm.verify_bundle(record.path)["sha256"] == record.sha256  # untouched


def test_the_fidelity_benchmark_measures_both_on_the_same_signatures_and_the_report_shows_it(llama_bundle, tmp_path):
    _, _, path, record = llama_bundle
    measured = litertlm_bench.compare(record.path, threads=1, prefill_tokens=16, decode_tokens=8, runs=2)
    assert measured.model["context"] == 96 and measured.model["sha256"] == record.model["sha256"]
    engine, ours = measured.litert_lm, measured.harness
    assert engine["prefill_tokens"] == 16 and len(engine["decode_tokens_per_second"]["values"]) == 2
    assert min(engine["decode_tokens_per_second"]["values"] + ours["decode_tokens_per_second"]["values"]) > 0
    assert measured.decode_ratio == pytest.approx(
        ours["decode_tokens_per_second"]["median"] / engine["decode_tokens_per_second"]["median"]
    )
    assert measured.decode_within == (abs(measured.decode_ratio - 1) <= litertlm_bench.AGREEMENT)
    saved = measured.save(tmp_path)
    assert json.loads(saved.read_text()) == measured.to_dict()
    with pytest.raises(FileExistsError):
        measured.save(tmp_path)
    items = generation_report.load_generation_results(tmp_path)
    section = generation_report.generation_sections(items, out=tmp_path / "report.md", plot=False)[0]
    assert "LiteRT-LM's own benchmark" in section and "| tiny_fp32 | 1 | 96 |" in section
    with pytest.raises(ValueError, match="do not fit the bundle's 96 tokens"):
        litertlm.benchmark(record.path, prefill_tokens=90, decode_tokens=10)
    # LiteRT-LM keeps packed weights beside the bundle; writing the bundle again removes the stale ones.
    copy = tmp_path / "again" / "tiny.litertlm"
    litertlm_bundle.export_litertlm(path, out=copy)
    litertlm.benchmark(copy, prefill_tokens=8, decode_tokens=4, runs=1)
    assert len(list(copy.parent.glob("tiny.litertlm_*.xnnpack_cache"))) == 1
    litertlm_bundle.export_litertlm(path, out=copy, overwrite=True)
    assert not list(copy.parent.glob("*.xnnpack_cache")) and litertlm.verify_bundle(copy)


def test_the_cli_bundles_a_generation_model_and_refuses_a_fixed_window_one(llama_bundle, converted_tiny_lm, tmp_path):
    _, _, path, _ = llama_bundle
    command = [sys.executable, "-m", "converter.cli.litertlm"]
    out = tmp_path / "tiny.litertlm"
    completed = subprocess.run(
        [*command, f"--tflite={converted_tiny_lm['fp32']}", f"--out={out}"], capture_output=True, text=True
    )
    assert completed.returncode == 2 and "make convert GENERATE=1" in completed.stderr
    assert not out.exists()
    completed = subprocess.run(
        [*command, f"--tflite={path}", f"--out={out}", f"--prompt={PROMPT}", "--max_new_tokens=4", "--threads=1"],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.startswith(PROMPT) and "LiteRT-LM 0.18.1: " in completed.stdout
    assert litertlm.verify_bundle(out)["model"]["path"] == str(path)


@pytest.mark.large
@pytest.mark.parametrize("mode", ["fp16", "dynamic"])
def test_the_real_smollm2_bundle_continues_with_paris_in_litert_lm_like_the_projects_loop(mode, tmp_path):
    """SmolLM2-135M (built-in, from its GGUF) as a bundle: LiteRT-LM's greedy reply is the project loop's tokens."""
    from converter.models import model_sources

    build = pathlib.Path(__file__).resolve().parents[1] / "build"
    loaded = model_sources.load_model("smollm2-135m", build_dir=build)
    path = tmp_path / f"smollm2_{mode}_generate.tflite"
    settings = GenerationSettings(context_length=128, prefill_lengths=(32,), smaller_contexts=())
    converter.convert_keras(loaded.model, mode, generation=settings, output_path=path, progress=False)
    device_tokenizer.export_device_tokenizer(loaded.tokenizer, name=path.stem).save(tmp_path)
    template = model_sources.chat_template("smollm2-135m", build_dir=build)
    assert "<|im_start|>" in template
    record = litertlm_bundle.export_litertlm(path, chat_template=template)
    assert record.stop_token_ids == (2, 0) and record.start_token_id is None  # <|im_end|>, <|endoftext|>; no BOS

    reply = litertlm.generate(record.path, SMOLLM2_PROMPT, max_new_tokens=24, threads=2)
    assert reply.text.startswith(" Paris"), reply.text
    assert list(reply.prompt_ids) == [504, 3575, 282, 4649, 314]
    # The project's loop, step by step with its logits: compared while the best token leads the second by at
    # least 0.05, so that rounding differences between the two LiteRT builds (LiteRT-LM carries its own)
    # cannot flip a choice on another CPU.
    generator = generation.Generator(path, threads=2)
    logits = generator.prefill(list(reply.prompt_ids), context=128)
    tokens, position = [], len(reply.prompt_ids)
    while len(tokens) < 24:
        top = np.sort(logits)[-2:]
        if top[1] - top[0] < 0.05:
            break
        tokens.append(int(np.argmax(logits)))
        if tokens[-1] in record.stop_token_ids:
            tokens.pop()
            break
        logits = generator.decode(tokens[-1], position, context=128)
        position += 1
    assert len(tokens) >= 8
    assert litertlm.token_spans(record.path, reply.pieces[: len(tokens)], tokens)[-1][1] == len(tokens)
