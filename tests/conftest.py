"""Shared test setup: the Keras backend must be TensorFlow for the TFLite converter."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import pathlib  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def converted_tiny_lm(tmp_path_factory) -> dict[str, pathlib.Path]:
    """A tiny random GPT-2 in fp32 and dynamic `.tflite`, and evaluation windows that fit it.

    Shared by the benchmark tests, which need real converted files but not
    their own conversion. Keys: `fp32`, `dynamic`, `evaluation` (`.npz`, 6
    windows of `helpers.SEQ_LEN` tokens, the last one padded).
    """
    import numpy as np

    import converter
    import representative_data

    from helpers import SEQ_LEN, VOCABULARY_SIZE, tiny_gpt2_causal_lm

    folder = tmp_path_factory.mktemp("converted") / "tiny"
    folder.mkdir()
    model = tiny_gpt2_causal_lm()
    paths = {}
    for mode in ("fp32", "dynamic"):
        paths[mode] = folder / f"tiny_{mode}.tflite"
        converter.convert_keras(model, mode, seq_len=SEQ_LEN, output_path=paths[mode])
    stream = np.random.default_rng(1).integers(0, VOCABULARY_SIZE, 5 * SEQ_LEN + 7).astype(np.int32)
    windows = representative_data.make_windows(stream, seq_len=SEQ_LEN, metadata={"source": "random ids"})
    paths["evaluation"] = folder / f"tiny_seq{SEQ_LEN}_evaluation.npz"
    representative_data.save_windows(windows, paths["evaluation"])
    return paths
