"""Tests for representative_data.calibration: the samples the TFLite converter reads."""

import numpy as np
import pytest

from representative_data.calibration import SUPPORTED_INPUT_NAMES, representative_dataset
from representative_data.windows import make_windows


def _windows(num_windows=5, seq_len=8):
    # Last window half full, so padding_mask is not all ones.
    stream = np.arange(num_windows * seq_len - seq_len // 2, dtype=np.int32) % 16
    return make_windows(stream, seq_len=seq_len)


def test_samples_are_dicts_of_int32_batch_one_windows_in_order():
    windows = _windows()

    samples = list(representative_dataset(windows, progress=False)())

    assert len(samples) == windows.num_windows
    for index, sample in enumerate(samples):
        assert list(sample) == ["token_ids"]
        assert sample["token_ids"].dtype == np.int32
        assert sample["token_ids"].shape == (1, windows.seq_len)
        np.testing.assert_array_equal(sample["token_ids"][0], windows.token_ids[index])


def test_samples_include_padding_mask_when_model_has_that_input():
    windows = _windows()

    samples = list(representative_dataset(windows, input_names=("token_ids", "padding_mask"), progress=False)())

    assert set(samples[-1]) == {"token_ids", "padding_mask"}
    assert samples[-1]["padding_mask"].dtype == np.int32
    np.testing.assert_array_equal(samples[-1]["padding_mask"][0], windows.padding_mask[-1])
    assert samples[-1]["padding_mask"].sum() < windows.seq_len


def test_bare_string_input_name_is_one_input():
    dataset = representative_dataset(_windows(), input_names="padding_mask", progress=False)

    assert dataset.input_names == ("padding_mask",)


def test_num_samples_limits_samples_to_first_windows():
    windows = _windows()

    samples = list(representative_dataset(windows, num_samples=2, progress=False)())

    assert len(samples) == 2
    np.testing.assert_array_equal(samples[1]["token_ids"][0], windows.token_ids[1])


def test_each_call_yields_a_fresh_full_pass():
    dataset = representative_dataset(_windows(), num_samples=3, progress=False)

    assert len(list(dataset())) == 3
    assert len(list(dataset())) == 3


def test_samples_are_copies_so_the_consumer_cannot_change_windows():
    windows = _windows()
    sample = next(representative_dataset(windows, progress=False)())

    sample["token_ids"][0, 0] = 999

    assert windows.token_ids[0, 0] != 999


def test_more_samples_than_windows_uses_all_and_notes_it(capsys):
    dataset = representative_dataset(_windows(num_windows=4), num_samples=10, progress=False)

    assert len(list(dataset())) == 4
    assert dataset.num_samples == 4
    assert dataset.requested_samples == 10
    assert "10 samples requested but only 4 windows exist; using all 4" in capsys.readouterr().err


@pytest.mark.parametrize("num_samples", [0, -1])
def test_num_samples_below_one_raises(num_samples):
    with pytest.raises(ValueError, match=f"num_samples must be at least 1; got {num_samples}"):
        representative_dataset(_windows(), num_samples=num_samples)


def test_unknown_input_name_lists_supported_names():
    expected = r"\['attention_mask'\]; supported: \['token_ids', 'padding_mask'\]"

    with pytest.raises(ValueError, match=expected):
        representative_dataset(_windows(), input_names=("token_ids", "attention_mask"))


def test_empty_input_names_raises():
    with pytest.raises(ValueError, match="input_names is empty"):
        representative_dataset(_windows(), input_names=())


def test_progress_prints_count_lines_to_stderr(capsys):
    list(representative_dataset(_windows(num_windows=3), progress=True)())

    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["calibration 1/3", "calibration 2/3", "calibration 3/3"]
    assert captured.out == ""


def test_progress_false_prints_nothing(capsys):
    list(representative_dataset(_windows(), progress=False)())

    assert capsys.readouterr().err == ""


def test_tflite_converter_calibrates_with_the_samples(capsys):
    """The contract test: the converter accepts our dicts and quantizes to int8."""
    tf = pytest.importorskip("tensorflow")
    interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")
    seq_len = 8

    class TinyModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.embedding = tf.Variable(tf.random.stateless_normal([16, 4], seed=[1, 2]))
            self.output_weights = tf.Variable(tf.random.stateless_normal([4, 16], seed=[3, 4]))

        @tf.function(
            input_signature=[tf.TensorSpec([1, seq_len], tf.int32, name=name) for name in SUPPORTED_INPUT_NAMES]
        )
        def __call__(self, token_ids, padding_mask):
            mask = tf.cast(padding_mask, tf.float32)[..., None]
            hidden = tf.gather(self.embedding, token_ids) * mask
            return {"logits": tf.matmul(hidden, self.output_weights)}

    model = TinyModel()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.__call__.get_concrete_function()], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = representative_dataset(
        _windows(seq_len=seq_len), input_names=SUPPORTED_INPUT_NAMES, num_samples=3
    )

    flatbuffer = converter.convert()

    assert "calibration 3/3" in capsys.readouterr().err
    interpreter = interpreter_module.Interpreter(model_content=flatbuffer)
    tensor_types = {detail["dtype"] for detail in interpreter.get_tensor_details()}
    assert np.int8 in tensor_types
