"""The flatbuffer rewrites: each one is needed, and each keeps the float model's outputs."""

from __future__ import annotations

import numpy as np
import pytest

from converter.core import wrapping
from converter.passes import graph_surgery
from converter.tflite_file import inspection

from helpers import SEQ_LEN, random_windows, run_tflite, tiny_gpt2_causal_lm


@pytest.fixture(scope="module")
def stock_float_model():
    """The float model exactly as the stock converter writes it (no rewrites)."""
    import tensorflow as tf

    wrapped = wrapping.wrap_model(tiny_gpt2_causal_lm(), seq_len=SEQ_LEN)
    return tf.lite.TFLiteConverter.from_keras_model(wrapped).convert()


@pytest.fixture(scope="module")
def feeds():
    windows = random_windows(num_windows=4)
    return [{"token_ids": windows.token_ids[i : i + 1]} for i in range(4)]


def test_stock_16x8_quantizer_fails_on_token_ids_without_the_rewrite():
    import tensorflow as tf

    wrapped = wrapping.wrap_model(tiny_gpt2_causal_lm(), seq_len=SEQ_LEN)
    stock = tf.lite.TFLiteConverter.from_keras_model(wrapped)
    stock.optimizations = [tf.lite.Optimize.DEFAULT]
    windows = random_windows(num_windows=4)
    stock.representative_dataset = lambda: ({"token_ids": windows.token_ids[i : i + 1]} for i in range(4))
    stock.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    with pytest.raises(Exception, match="Max and min for dynamic tensors should be recorded"):
        stock.convert()


def test_negative_index_wrap_is_removed_and_outputs_are_unchanged(stock_float_model, feeds):
    before = inspection.inspect_model(stock_float_model).op_histogram
    assert before["LESS"]["count"] == 1 and before["SELECT"]["count"] == 1
    rewritten = graph_surgery.drop_negative_index_wrap(stock_float_model)
    after = inspection.inspect_model(rewritten.model).op_histogram
    assert "LESS" not in after and "SELECT" not in after
    assert after["ADD"]["count"] == before["ADD"]["count"] - 1
    for feed in feeds:
        np.testing.assert_array_equal(run_tflite(rewritten.model, feed), run_tflite(stock_float_model, feed))


def test_mask_fill_is_bounded_and_softmax_outputs_are_unchanged(stock_float_model, feeds):
    rewritten = graph_surgery.bound_mask_fill(stock_float_model, feeds)
    assert len(rewritten.changes) == 2
    fills = [float(c.rsplit("-> ", 1)[1]) for c in rewritten.changes]
    assert all(-1000 < fill < -graph_surgery.MASK_MARGIN + 1 for fill in fills), fills
    for feed in feeds:
        np.testing.assert_allclose(run_tflite(rewritten.model, feed), run_tflite(stock_float_model, feed), atol=1e-6)


def test_model_without_masks_or_wraps_is_returned_unchanged(stock_float_model, feeds):
    once = graph_surgery.drop_negative_index_wrap(stock_float_model).model
    again = graph_surgery.drop_negative_index_wrap(once)
    assert again.changes == () and again.model == once
    assert graph_surgery.run_ops_in_float(once, ["SQUARED_DIFFERENCE"]).changes == ()  # float model: nothing to bridge
