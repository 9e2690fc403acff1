"""convert_keras in every mode on a tiny GPT-2, and every bad input it must refuse."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import converter
from converter.tflite_file import inspection

from helpers import SEQ_LEN, VOCABULARY_SIZE, random_windows, run_tflite, tiny_gpt2_causal_lm

ALL_MODES = [mode.value for mode in converter.Mode]

# Size against fp32 on a model whose weights dominate (460k parameters):
# float16 halves every weight; the int8 modes quarter them; int4 eighths them (measured 0.165 with the
# per-channel scales, biases and norms).
MAX_SIZE_RATIO = {"fp32": 1.0, "fp16": 0.55, "dynamic": 0.35, "int8": 0.35, "int16x8": 0.35, "int4": 0.2}

# Largest |logit - keras logit| per mode on calibration windows. The random
# model's logits span about +-0.5, so these are relative errors too:
# fp32 differs by float reassociation only; fp16 rounds weights to 11 bits
# (relative 5e-4); dynamic int8 rounds weights and activations per op to 8 bits
# (about 1/256 of each range, compounding over 2 layers); int16x8 keeps
# activations at 16 bits and weights at 8, so it sits near dynamic; full int8
# quantizes every activation to 8 bits and has its own accuracy issue, so its
# bound only catches a broken graph (a wrong mask or embedding gives errors
# the size of the logits themselves). int4 per channel rounds each weight to a seventh of its row's
# largest (relative rms error about 0.15 per matmul on random weights; measured 0.09-0.12 here), so
# its bound too only catches a broken graph.
MAX_LOGIT_ERROR = {"fp32": 1e-4, "fp16": 2e-3, "dynamic": 2e-2, "int16x8": 2e-2, "int8": 0.1, "int4": 0.2}


@pytest.fixture(scope="module")
def causal_lm():
    return tiny_gpt2_causal_lm()


@pytest.fixture(scope="module")
def windows():
    return random_windows()


@pytest.fixture(scope="module")
def results(causal_lm, windows):
    """Every mode converted once for the whole module (conversion is the slow part)."""
    return {
        mode: converter.convert_keras(causal_lm, mode, calibration=windows, seq_len=SEQ_LEN, progress=False)
        for mode in ALL_MODES
    }


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_mode_converts_and_runs_in_litert(results, windows, mode):
    result = results[mode]
    logits = run_tflite(result.model, {"token_ids": windows.token_ids[:1]})
    assert logits.shape == (1, SEQ_LEN, VOCABULARY_SIZE)
    assert np.isfinite(logits).all()
    assert result.mode == mode and result.seq_len == SEQ_LEN
    assert list(result.inputs) == ["token_ids"] and list(result.outputs) == ["logits"]
    assert result.inputs["token_ids"]["dtype"] == "int32"
    assert result.inputs["token_ids"]["shape"] == [1, SEQ_LEN]


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_mode_is_smaller_than_fp32_by_its_ratio(results, mode):
    ratio = results[mode].size_bytes / results["fp32"].size_bytes
    assert ratio <= MAX_SIZE_RATIO[mode], f"{mode}: {ratio:.3f} of fp32"


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_mode_agrees_with_keras_within_its_tolerance(results, causal_lm, windows, mode):
    feed = windows.token_ids[3:4]
    expected = np.asarray(causal_lm({"token_ids": feed, "padding_mask": np.ones_like(feed)}))
    actual = run_tflite(results[mode].model, {"token_ids": feed})
    error = float(np.max(np.abs(actual - expected)))
    print(f"{mode}: max |logit error| {error:.5f}, report check {results[mode].check}")
    assert error <= MAX_LOGIT_ERROR[mode]
    assert results[mode].check["max_abs_logit_error"] <= MAX_LOGIT_ERROR[mode]


def _inspect(result):
    return inspection.inspect_model(result.model)


def test_fp32_and_fp16_compute_in_float(results):
    for mode in ("fp32", "fp16"):
        graph = _inspect(results[mode])
        for op in graph.ops_of_type("FULLY_CONNECTED", "BATCH_MATMUL"):
            assert graph.input_dtypes(op)[0] == "float32"
    fp16_constants = _inspect(results["fp16"]).summary()["constant_dtypes"]
    assert fp16_constants.get("float16", 0) > 0


def test_dynamic_stores_int8_weights_and_float_activations(results):
    graph = _inspect(results["dynamic"])
    assert inspection.weight_dtypes(graph, ["FULLY_CONNECTED"]) == {"int8"}
    for op in graph.ops_of_type("FULLY_CONNECTED"):
        assert graph.input_dtypes(op)[0] == "float32"


def test_int8_runs_every_matmul_on_int8_activations(results):
    graph = _inspect(results["int8"])
    matmuls = graph.ops_of_type("FULLY_CONNECTED", "BATCH_MATMUL")
    assert matmuls
    for op in matmuls:
        assert graph.input_dtypes(op)[:2] == ["int8", "int8"], op
        assert graph.output_dtypes(op) == ["int8"]
    assert graph.inputs["token_ids"].dtype == "int32"


def test_int16x8_runs_matmuls_on_int16_activations_and_int8_weights(results):
    graph = _inspect(results["int16x8"])
    gather_tables = {op.inputs[0] for op in graph.ops_of_type("GATHER")}
    for op in graph.ops_of_type("FULLY_CONNECTED"):
        # GPT-2 ties the logits layer to the embedding table; the 16x8
        # quantizer gives that one shared constant the GATHER's int16.
        weight = "int16" if op.inputs[1] in gather_tables else "int8"
        assert graph.input_dtypes(op)[:2] == ["int16", weight], op
    for op in graph.ops_of_type("BATCH_MATMUL"):
        assert graph.input_dtypes(op)[:2] == ["int16", "int16"], op
    # The one op without an int16 kernel runs in float, and the report says so.
    assert results["int16x8"].float_ops.get("SQUARED_DIFFERENCE", 0) > 0
    assert any("SQUARED_DIFFERENCE runs in float" in c for c in results["int16x8"].graph_changes)


def test_calibrated_modes_bound_the_attention_mask_fill(results):
    for mode in ("int8", "int16x8"):
        changes = results[mode].graph_changes
        assert any("removed negative-index wrap" in c for c in changes)
        assert sum("attention mask fill" in c for c in changes) == 2  # one per layer


def test_report_records_provenance_and_resources(results, tmp_path):
    saved = results["int8"].save(tmp_path / "m_int8.tflite")
    report = json.loads((tmp_path / "m_int8.json").read_text())
    assert (tmp_path / "m_int8.tflite").read_bytes() == results["int8"].model
    assert report["mode"] == "int8" and report["size_bytes"] == len(saved.model)
    assert report["calibration"]["num_samples"] == 16
    assert report["calibration"]["source"] == "random ids"
    assert report["versions"]["tensorflow"] == "2.21.0"
    assert report["op_histogram"]["FULLY_CONNECTED"]["count"] > 0
    assert report["peak_rss_bytes"] >= report["rss_before_bytes"] > 0
    assert report["conversion_seconds"] > 0
    assert "model" not in report


def test_save_refuses_to_overwrite_unless_asked(results, tmp_path):
    path = tmp_path / "m.tflite"
    results["fp32"].save(path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        results["fp16"].save(path)
    assert path.read_bytes() == results["fp32"].model
    results["fp16"].save(path, overwrite=True)
    assert path.read_bytes() == results["fp16"].model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.tflite"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    # Readable like any new file (the temporary file it was renamed from was 0600).
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {oct(0o666 & ~umask)}


def test_backbone_and_plain_keras_model_convert_to_the_same_logits(causal_lm, windows):
    import keras

    feed = {"token_ids": windows.token_ids[:1]}
    reference = run_tflite(converter.convert_keras(causal_lm, "fp32", seq_len=SEQ_LEN, progress=False).model, feed)
    from_backbone = converter.convert_keras(causal_lm.backbone, "fp32", seq_len=SEQ_LEN, progress=False)
    np.testing.assert_allclose(run_tflite(from_backbone.model, feed), reference, atol=1e-5)

    ids = keras.Input((None,), dtype="int32")
    hidden = keras.layers.Embedding(50, 8)(ids)
    plain = keras.Model(ids, keras.layers.Dense(50)(hidden))
    result = converter.convert_keras(plain, "dynamic", seq_len=8, progress=False)
    assert run_tflite(result.model, {"token_ids": np.zeros((1, 8), np.int32)}).shape == (1, 8, 50)


def test_padding_mask_input_is_added_when_asked(causal_lm, windows):
    result = converter.convert_keras(causal_lm, "fp32", seq_len=SEQ_LEN, padding_mask=True, progress=False)
    assert sorted(result.inputs) == ["padding_mask", "token_ids"]
    ids = windows.token_ids[:1]
    mask = np.ones_like(ids)
    expected = np.asarray(causal_lm({"token_ids": ids, "padding_mask": mask}))
    np.testing.assert_allclose(run_tflite(result.model, {"token_ids": ids, "padding_mask": mask}), expected, atol=1e-4)


def test_keras_file_and_preset_folder_convert(causal_lm, tmp_path):
    keras_path = tmp_path / "lm.keras"
    causal_lm.save(keras_path)
    from_file = converter.convert_keras(str(keras_path), "fp32", seq_len=16, progress=False)
    assert from_file.model_name == "lm"
    preset = tmp_path / "my-preset"
    causal_lm.backbone.save_to_preset(str(preset))
    from_preset = converter.convert_keras(str(preset), "fp32", seq_len=16, progress=False)
    assert from_preset.model_name == "my-preset"
    feed = {"token_ids": np.arange(16, dtype=np.int32)[None]}
    np.testing.assert_allclose(run_tflite(from_file.model, feed), run_tflite(from_preset.model, feed), atol=1e-5)


# ---- bad input: a clear error, raised before work starts, nothing written ----


def test_unknown_mode_lists_the_valid_ones(causal_lm, tmp_path):
    with pytest.raises(ValueError, match="Unknown mode 'int3'. Valid modes: fp32, fp16, dynamic, int8, int16x8, int4"):
        converter.convert_keras(causal_lm, "int3", output_path=tmp_path / "x.tflite")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["int8", "int16x8"])
def test_calibrated_mode_without_calibration_says_how_to_pass_it(causal_lm, mode):
    with pytest.raises(ValueError, match=r"needs calibration data.*calibration='builtin'.*--calibration"):
        converter.convert_keras(causal_lm, mode, seq_len=SEQ_LEN)


def test_float_input_model_is_refused():
    import keras

    features = keras.Input((8,), dtype="float32")
    model = keras.Model(features, keras.layers.Dense(4)(features))
    with pytest.raises(ValueError, match="dtype float32.*expects integer token ids"):
        converter.convert_keras(model, "fp32", seq_len=8)


def test_classifier_output_is_refused():
    import keras

    ids = keras.Input((None,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 8)(ids))
    model = keras.Model(ids, keras.layers.Dense(3)(pooled))
    with pytest.raises(ValueError, match=r"expects logits shaped \[1, seq_len=8, vocabulary\]"):
        converter.convert_keras(model, "fp32", seq_len=8)


def test_seq_len_above_the_model_maximum_is_refused(causal_lm):
    with pytest.raises(ValueError, match="seq_len 65 is above the model's maximum sequence length 64"):
        converter.convert_keras(causal_lm, "fp32", seq_len=65)


def test_missing_and_empty_corpus_files_are_refused(causal_lm, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        converter.convert_keras(causal_lm, "int8", calibration=str(tmp_path / "nope.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        converter.convert_keras(causal_lm, "int8", calibration=str(empty))


def test_non_utf8_corpus_names_the_file_and_byte_offset(causal_lm, tmp_path):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt.*byte offset 3"):
        converter.convert_keras(causal_lm, "int8", calibration=str(corpus))


def test_calibration_ids_at_or_above_the_vocabulary_are_refused(causal_lm, tmp_path):
    too_large = random_windows(vocabulary_size=VOCABULARY_SIZE + 10, num_windows=64)
    with pytest.raises(ValueError, match=f"vocabulary size {VOCABULARY_SIZE}"):
        converter.convert_keras(
            causal_lm, "int8", calibration=too_large, seq_len=SEQ_LEN, output_path=tmp_path / "m.tflite"
        )
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_before_conversion(causal_lm, tmp_path):
    existing = tmp_path / "m.tflite"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        converter.convert_keras(causal_lm, "fp32", output_path=existing)
    assert existing.read_bytes() == b"keep me"


def test_keras_file_that_is_not_a_model_is_refused(tmp_path):
    not_zip = tmp_path / "text.keras"
    not_zip.write_text("hello")
    with pytest.raises(ValueError, match="not a Keras model file"):
        converter.convert_keras(str(not_zip), "fp32")
    other_zip = tmp_path / "other.keras"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(ValueError, match="not a Keras model"):
        converter.convert_keras(str(other_zip), "fp32")


def test_preset_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        converter.convert_keras(str(tmp_path), "fp32")
