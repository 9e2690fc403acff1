"""Tests for converter.tiny_gpt2: the built-in model, its tokenizer and its preset cache.

A micro version (1 layer, hidden 16, 420 pieces, 3 documents, 1 epoch) stands in
for the real build, which takes minutes and runs only under the `large` marker.
"""

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from converter.models import tiny_gpt2
from representative_data.corpus import builtin_corpus

MICRO = dict(
    vocabulary_size=420,
    num_layers=1,
    num_heads=2,
    hidden_dim=16,
    intermediate_dim=32,
    max_sequence_length=32,
    sequence_length=32,
    batch_size=8,
    epochs=1,
    max_documents=3,
    min_improvement=None,
    verbose=0,
)
MICRO_SETTINGS = tiny_gpt2.TinyGpt2Settings(**{key: value for key, value in MICRO.items() if key != "verbose"})
MODULE_PATH = pathlib.Path(tiny_gpt2.__file__)


@pytest.fixture(scope="module")
def micro_build_dir(tmp_path_factory):
    """A build folder holding a micro tiny-gpt2 preset made by build_tiny_gpt2."""
    build_dir = tmp_path_factory.mktemp("build")
    tiny_gpt2.build_tiny_gpt2(build_dir=build_dir, **MICRO)
    return build_dir


@pytest.fixture(scope="module")
def micro_trained():
    """The same micro model trained again in memory, with the same seed."""
    return tiny_gpt2.train_tiny_gpt2(MICRO_SETTINGS, verbose=0)


def _logits(causal_lm, windows):
    token_ids = windows[:, :-1]
    return np.asarray(
        causal_lm.predict_on_batch({"token_ids": token_ids, "padding_mask": np.ones(token_ids.shape, dtype=bool)})
    )


def _paragraphs(documents, count):
    paragraphs = [p for document in documents for p in document.split("\n\n") if p.strip()]
    return paragraphs[:count]


def test_module_import_does_not_import_tensorflow():
    # Loaded by path so that the check sees this module alone, not the package.
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('tiny_gpt2', {str(MODULE_PATH)!r})\n"
        "module = sys.modules['tiny_gpt2'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_tokenizer_is_lossless_on_whole_corpus_and_unseen_text():
    import keras_hub

    documents = builtin_corpus()
    proto = tiny_gpt2.train_tokenizer_proto(documents, vocabulary_size=4096)
    tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=proto)
    unseen = "Tabs\tand  double  spaces,\r\nnaïve café, ☃ 日本語, emoji 🐍.\n\n\n   indented"

    texts = documents + [unseen]
    decoded = tokenizer.detokenize(tokenizer.tokenize(texts))

    assert [str(text) for text in decoded] == texts
    assert tokenizer.vocabulary_size() == 4096
    assert tokenizer.token_to_id("<pad>") == tiny_gpt2.PAD_TOKEN_ID
    assert tokenizer.token_to_id("</s>") == tiny_gpt2.EOS_TOKEN_ID
    assert tiny_gpt2.UNK_TOKEN_ID not in np.concatenate(tokenizer.tokenize(texts))


def test_tokenizer_training_is_deterministic():
    documents = builtin_corpus()[:5]

    first = tiny_gpt2.train_tokenizer_proto(documents, vocabulary_size=500)
    second = tiny_gpt2.train_tokenizer_proto(documents, vocabulary_size=500)

    assert first == second


def test_tokenizer_vocabulary_too_small_raises_with_reason():
    with pytest.raises(ValueError, match="261 fixed pieces plus every character"):
        tiny_gpt2.train_tokenizer_proto(builtin_corpus()[:3], vocabulary_size=100)


def test_build_writes_complete_preset_with_training_report(micro_build_dir):
    preset = tiny_gpt2.tiny_gpt2_preset_dir(micro_build_dir)

    report = tiny_gpt2.read_training_report(preset)

    assert preset == micro_build_dir / "tiny-gpt2" / "preset"
    assert tiny_gpt2.is_complete_preset(preset)
    assert report["settings"] == dataclasses.asdict(MICRO_SETTINGS)
    assert report["tokenizer"]["vocabulary_size"] == MICRO["vocabulary_size"]
    assert report["train_windows"] > 0 and report["eval_windows"] > 0
    assert report["eval_perplexity"] > 1 and report["unigram_perplexity"] > 1
    assert report["versions"]["keras_hub"]
    # Only the preset is left: the temporary build folder was renamed away.
    assert sorted(path.name for path in preset.parent.iterdir()) == ["preset"]


# keras-hub 0.32's SentencePieceTokenizer leaves its proto file for the garbage
# collector to close (`open(path, "rb").read()` in `set_proto`).
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_preset_loads_with_generic_keras_hub_loaders(micro_build_dir):
    import keras_hub

    preset = str(tiny_gpt2.tiny_gpt2_preset_dir(micro_build_dir))

    backbone = keras_hub.models.Backbone.from_preset(preset)
    tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(preset)

    assert isinstance(backbone, keras_hub.models.GPT2Backbone)
    assert isinstance(tokenizer, keras_hub.tokenizers.SentencePieceTokenizer)
    assert tokenizer.vocabulary_size() == backbone.vocabulary_size


def test_saved_preset_gives_same_logits_and_tokens_as_in_memory_model(micro_trained, tmp_path):
    preset = micro_trained.save(tmp_path / "preset")

    causal_lm, tokenizer = tiny_gpt2.load_tiny_gpt2(preset)

    windows = micro_trained.eval_windows[:2]
    np.testing.assert_array_equal(_logits(causal_lm, windows), _logits(micro_trained.causal_lm, windows))
    text = builtin_corpus()[0]
    assert tokenizer.tokenize(text).tolist() == micro_trained.tokenizer.tokenize(text).tolist()


def test_saving_into_non_empty_folder_without_overwrite_raises(micro_trained, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")

    with pytest.raises(FileExistsError, match="overwrite=True"):
        micro_trained.save(tmp_path)


def test_micro_tokenizer_round_trips_paragraphs_it_never_saw(micro_build_dir):
    _, tokenizer = tiny_gpt2.load_tiny_gpt2(tiny_gpt2.tiny_gpt2_preset_dir(micro_build_dir))
    # The micro tokenizer saw 3 documents; these come from later ones.
    paragraphs = _paragraphs(builtin_corpus()[40:], 5)

    for paragraph in paragraphs:
        assert tokenizer.detokenize(tokenizer.tokenize(paragraph)) == paragraph


def test_same_seed_gives_same_tokenizer_and_weights(micro_build_dir, micro_trained):
    causal_lm, tokenizer = tiny_gpt2.load_tiny_gpt2(tiny_gpt2.tiny_gpt2_preset_dir(micro_build_dir))

    assert tokenizer.get_vocabulary() == micro_trained.tokenizer.get_vocabulary()
    for built, trained in zip(causal_lm.backbone.weights, micro_trained.causal_lm.backbone.weights):
        np.testing.assert_array_equal(built.numpy(), trained.numpy(), err_msg=built.path)


def test_second_build_returns_cached_preset_without_training(micro_build_dir, monkeypatch):
    preset = tiny_gpt2.tiny_gpt2_preset_dir(micro_build_dir)
    weights_mtime = (preset / "model.weights.h5").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("build_tiny_gpt2 trained although a cached preset was there")

    monkeypatch.setattr(tiny_gpt2, "train_tiny_gpt2", no_training)
    result = tiny_gpt2.build_tiny_gpt2(build_dir=micro_build_dir, **MICRO)

    assert result == preset
    assert (preset / "model.weights.h5").stat().st_mtime_ns == weights_mtime


def test_cached_preset_with_other_settings_raises_and_names_fix(micro_build_dir):
    with pytest.raises(ValueError, match=r"seed: cached 0, requested 1.*force=True"):
        tiny_gpt2.build_tiny_gpt2(build_dir=micro_build_dir, **{**MICRO, "seed": 1})


def test_model_failing_baseline_check_raises_and_keeps_old_preset(micro_build_dir, tmp_path):
    # A copy, so that the shared micro preset stays untouched whatever happens.
    preset = tiny_gpt2.tiny_gpt2_preset_dir(tmp_path)
    shutil.copytree(tiny_gpt2.tiny_gpt2_preset_dir(micro_build_dir), preset)
    before = {path: path.read_bytes() for path in preset.rglob("*") if path.is_file()}

    with pytest.raises(tiny_gpt2.TinyGpt2TrainingError, match="unigram baseline.*nothing was written"):
        tiny_gpt2.build_tiny_gpt2(build_dir=tmp_path, force=True, **{**MICRO, "min_improvement": 1e9})

    assert {path: path.read_bytes() for path in preset.rglob("*") if path.is_file()} == before
    assert sorted(path.name for path in preset.parent.iterdir()) == ["preset"]


def test_load_incomplete_preset_raises_and_names_missing_files(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({}), encoding="utf-8")

    with pytest.raises(FileNotFoundError, match=r"missing: metadata\.json.*build_tiny_gpt2"):
        tiny_gpt2.load_tiny_gpt2(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_dim": 30, "num_heads": 4}, "divisible by num_heads"),
        ({"sequence_length": 300}, "must not exceed max_sequence_length"),
        ({"eval_fraction": 1.0}, "eval_fraction"),
        ({"epochs": 0}, "epochs must be a positive int"),
    ],
)
def test_invalid_settings_raise_before_any_work(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        tiny_gpt2.build_tiny_gpt2(build_dir=tmp_path, **{**MICRO, **change})
    assert not os.listdir(tmp_path)


def test_corpus_slice_too_small_for_windows_raises_with_hint(tmp_path):
    with pytest.raises(ValueError, match="shorter sequence_length"):
        tiny_gpt2.build_tiny_gpt2(
            build_dir=tmp_path,
            # One document makes about 600 tokens: 2 windows of 257.
            **{
                **MICRO,
                "max_documents": 1,
                "vocabulary_size": 360,
                "max_sequence_length": 256,
                "sequence_length": 256,
                "eval_fraction": 0.9,
            },
        )


def test_unigram_perplexity_is_add_one_smoothed_frequency():
    train = np.array([[0, 0, 1]])
    evaluation = np.array([[0, 2]])

    # Counts 2, 1, 0 over 3 ids -> probabilities 3/6, 2/6, 1/6.
    expected = np.exp(-(np.log(3 / 6) + np.log(1 / 6)) / 2)
    assert tiny_gpt2.unigram_perplexity(train, evaluation, vocabulary_size=3) == pytest.approx(expected)


@pytest.mark.large
def test_default_build_beats_unigram_baseline_twice_over(tmp_path):
    preset = tiny_gpt2.build_tiny_gpt2(build_dir=tmp_path, verbose=0)

    report = tiny_gpt2.read_training_report(preset)
    assert report["eval_perplexity"] * 2 <= report["unigram_perplexity"]
    causal_lm, tokenizer = tiny_gpt2.load_tiny_gpt2(preset)
    assert tokenizer.vocabulary_size() == causal_lm.backbone.vocabulary_size == 4096


def test_held_out_windows_are_the_converters_evaluation_windows(micro_trained, tmp_path):
    import representative_data

    # The converter cuts text with build_windows; one jsonl line per document
    # gives it the same documents the micro build trained on.
    corpus = tmp_path / "micro.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in builtin_corpus()[: MICRO["max_documents"]]))
    calibration, evaluation = representative_data.build_windows(
        str(corpus), micro_trained.tokenizer, seq_len=MICRO["sequence_length"], seed=MICRO_SETTINGS.seed
    )
    full = evaluation.padding_mask.all(axis=1)
    np.testing.assert_array_equal(evaluation.token_ids[full], micro_trained.eval_windows)
    # No held-out window is among the calibration (= training) windows.
    training = {row.tobytes() for row in calibration.token_ids}
    assert not any(row.tobytes() in training for row in micro_trained.eval_windows)
