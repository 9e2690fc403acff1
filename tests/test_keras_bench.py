"""The Keras baseline runs the same wrapper the converter traces, through the device harness."""

import numpy as np

from benchmarks import harness
from converter.core import wrapping
from converter.tools import keras_bench

from helpers import SEQ_LEN, VOCABULARY_SIZE, tiny_gpt2_causal_lm


def test_keras_runner_gives_the_models_logits_and_a_full_result():
    model = tiny_gpt2_causal_lm()
    runner = keras_bench.KerasRunner(model, seq_len=SEQ_LEN, threads=1)
    ids = np.random.default_rng(0).integers(0, VOCABULARY_SIZE, (1, SEQ_LEN)).astype(np.int32)
    runner.prepare({"token_ids": ids})
    runner.invoke()
    expected = wrapping.wrap_model(model, seq_len=SEQ_LEN)({"token_ids": ids})["logits"]
    np.testing.assert_allclose(runner.logits(), np.asarray(expected), atol=1e-5)
    assert runner.runtime.name == "tensorflow" and runner.vocabulary_size == VOCABULARY_SIZE
    assert runner.weight_bytes > 4 * VOCABULARY_SIZE * 128  # at least the embedding in float32

    result = harness.measure(
        lambda: runner,
        model={
            "name": "tiny",
            "variant": "keras",
            "path": "memory",
            "format": "keras",
            "sha256": None,
            "size_bytes": 0,
        },
        runs=2,
        warmup_runs=0,
        min_seconds=0.0,
        progress=None,
    )
    assert result.model.variant == "keras" and result.latency.runs >= 2 and result.accuracy is None
