"""Tiny models and data that several test modules build for themselves."""

from __future__ import annotations

import numpy as np

SEQ_LEN = 32
VOCABULARY_SIZE = 512


def tiny_gpt2_causal_lm(
    *, vocabulary_size: int = VOCABULARY_SIZE, hidden_dim: int = 128, seed: int = 0, max_sequence_length: int = 64
):
    """A 2-layer GPT-2 whose weights dominate the file (about 460k parameters).

    The feed-forward width is 4x hidden, GPT-2's own ratio, so the layers and
    not the (tied) embedding hold most of the weights, as in real LMs.
    """
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocabulary_size,
        num_layers=2,
        num_heads=2,
        hidden_dim=hidden_dim,
        intermediate_dim=4 * hidden_dim,
        max_sequence_length=max_sequence_length,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def random_windows(
    *, num_windows: int = 16, seq_len: int = SEQ_LEN, vocabulary_size: int = VOCABULARY_SIZE, seed: int = 0
):
    """Token windows of random ids (a random-weight model has no preferred text)."""
    import representative_data

    rng = np.random.default_rng(seed)
    stream = rng.integers(0, vocabulary_size, num_windows * seq_len).astype(np.int32)
    return representative_data.make_windows(stream, seq_len=seq_len, metadata={"source": "random ids"})


def tiny_tokenizer(*, vocabulary_size: int = 300):
    """A SentencePiece tokenizer trained on a slice of the built-in corpus."""
    import keras_hub
    import tensorflow as tf

    import representative_data

    text = "\n\n".join(representative_data.builtin_corpus()[:6])
    proto = keras_hub.tokenizers.compute_sentence_piece_proto(
        tf.data.Dataset.from_tensor_slices([line for line in text.splitlines() if line.strip()]),
        vocabulary_size=vocabulary_size,
        model_type="bpe",
    )
    return keras_hub.tokenizers.SentencePieceTokenizer(proto=proto)


def run_tflite(model_bytes: bytes, feed: dict) -> np.ndarray:
    """Logits of a converted model on one input dict."""
    from ai_edge_litert import interpreter as litert

    runner = litert.Interpreter(model_content=model_bytes).get_signature_runner()
    return runner(**feed)["logits"]


def tiny_llama_causal_lm(*, num_layers: int = 2, seed: int = 0, vocabulary_size: int = VOCABULARY_SIZE):
    """A keras-hub Llama (RMSNorm, RoPE, SiLU-gated MLP, grouped-query attention), hidden 64."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=vocabulary_size,
        num_layers=num_layers,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=64,
        intermediate_dim=128,
    )
    return keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)


def peaked(model, seed=0):
    """Weights that give clear next-token margins, so greedy text is not a run of ties."""
    rng = np.random.default_rng(seed)
    for variable in model.backbone.weights:
        shape, path = tuple(variable.shape), variable.path
        if "embedding" in path:
            value = rng.normal(0, 0.5, shape)
        elif "gamma" in path or "scale" in path:
            value = 1.0 + rng.normal(0, 0.1, shape)
        elif "beta" in path or "bias" in path:
            value = rng.normal(0, 0.02, shape)
        else:
            value = rng.normal(0, 0.08, shape)
        variable.assign(value.astype(np.float32))
    return model


def tiny_gpt2_preset(folder, *, tokenizer=None, max_sequence_length: int = 32):
    """A keras-hub preset folder: a one-layer GPT-2 backbone (seed 0) and `tokenizer` (default `tiny_tokenizer()`)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=1,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=max_sequence_length,
    )
    backbone.save_to_preset(str(folder))
    tokenizer.save_to_preset(str(folder))
    return folder
