"""Calibration data in every form a user has gives the same int8 model; anything else is refused listing the forms."""

import numpy as np
import pytest

import converter

from helpers import SEQ_LEN, random_windows, tiny_gpt2_causal_lm

NUM_SAMPLES = 6


@pytest.fixture(scope="module")
def model():
    return tiny_gpt2_causal_lm()


@pytest.fixture(scope="module")
def windows():
    return random_windows(num_windows=NUM_SAMPLES)


def _convert(model, calibration):
    return converter.convert_keras(
        model, "int8", calibration=calibration, seq_len=SEQ_LEN, num_calibration_samples=NUM_SAMPLES, progress=False
    )


@pytest.fixture(scope="module")
def reference(model, windows):
    return _convert(model, windows)


def _generator_of_lists(ids):
    def dataset():
        for row in ids:
            yield [row[np.newaxis]]

    return dataset


def _generator_of_dicts(ids):
    def dataset():
        for row in ids:
            yield {"token_ids": row[np.newaxis]}

    return dataset


@pytest.mark.parametrize(
    "form",
    [
        "array",
        "int64 array",
        "dict",
        "list of dicts",
        "generator of lists",
        "generator of dicts",
        "npz with token_ids only",
    ],
)
def test_every_form_calibrates_exactly_like_token_windows(model, windows, reference, form, tmp_path):
    ids = windows.token_ids
    if form == "array":
        calibration = ids
    elif form == "int64 array":
        calibration = ids.astype(np.int64)
    elif form == "dict":
        calibration = {"token_ids": ids, "padding_mask": windows.padding_mask}
    elif form == "list of dicts":
        calibration = [{"token_ids": row[np.newaxis]} for row in ids]
    elif form == "generator of lists":
        calibration = _generator_of_lists(ids)
    elif form == "generator of dicts":
        calibration = _generator_of_dicts(ids)
    else:
        calibration = tmp_path / "mine.npz"
        np.savez(calibration, token_ids=ids)
    result = _convert(model, calibration)
    # Calibration is deterministic: the same windows give the same bytes.
    assert result.model == reference.model
    assert result.calibration["num_samples"] == NUM_SAMPLES


def test_a_generator_is_read_up_to_the_sample_count(model, windows, reference):
    def endless():
        while True:
            yield from ([row[np.newaxis]] for row in windows.token_ids)

    assert _convert(model, endless).model == reference.model


@pytest.mark.parametrize(
    "calibration, error, message",
    [
        ({1, 2}, TypeError, r"type set is not understood. Pass one of:\n  - 'builtin'"),
        (3.5, TypeError, "a callable yielding samples, as TFLiteConverter.representative_dataset takes"),
        (np.zeros((2, SEQ_LEN), np.float32), TypeError, "integer token ids; got dtype float32"),
        ({"ids": np.zeros((2, SEQ_LEN), np.int32)}, ValueError, r"give token_ids .*\['ids'\] is not one of"),
        ([], ValueError, "calibration list is empty"),
        ([np.zeros(SEQ_LEN, np.int32)], TypeError, "type list is not understood"),
        ("corpus.csv", ValueError, "neither text .* nor token windows"),
    ],
)
def test_anything_else_is_refused_before_the_model_is_touched(model, calibration, error, message):
    with pytest.raises(error, match=message):
        _convert(model, calibration)


def test_windows_of_another_length_or_vocabulary_are_refused(model):
    with pytest.raises(ValueError, match=f"seq_len 16 but {SEQ_LEN} is expected"):
        _convert(model, np.zeros((2, 16), np.int32))
    with pytest.raises(ValueError, match="out of range for vocabulary size 512"):
        _convert(model, np.full((2, SEQ_LEN), 600))
    with pytest.raises(ValueError, match="different lengths"):
        _convert(model, [{"token_ids": np.zeros(SEQ_LEN)}, {"token_ids": np.zeros(SEQ_LEN - 1)}])
