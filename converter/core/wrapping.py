"""Traces a Keras LM as a fixed-shape function: token_ids [1, seq_len] -> logits.

A fixed batch of 1 and a fixed `seq_len` keep shape arithmetic out of the
graph (about 90 ops on a 6-layer GPT-2, see FIELD_NOTES) and make the causal
mask a constant. The wrapped model is a functional `keras.Model` whose inputs
are named `token_ids` (and `padding_mask` when asked) and whose output is named
`logits`; `TFLiteConverter.from_keras_model` freezes its weights.
"""

from __future__ import annotations

import dataclasses
from typing import Any

TOKEN_IDS = "token_ids"
PADDING_MASK = "padding_mask"
LOGITS = "logits"


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What conversion needs to know about a model before tracing it."""

    kind: str  # "causal_lm", "backbone" or "keras_model"
    vocabulary_size: int | None
    max_sequence_length: int | None


def _backbone_of(model):
    import keras_hub  # pylint: disable=import-outside-toplevel

    if isinstance(model, keras_hub.models.CausalLM):
        return model.backbone
    if isinstance(model, keras_hub.models.Backbone):
        return model
    return None


def model_facts(model: Any) -> ModelFacts:
    """Vocabulary size and maximum sequence length, where the model states them."""
    import keras_hub  # pylint: disable=import-outside-toplevel

    backbone = _backbone_of(model)
    if backbone is None:
        return ModelFacts(kind="keras_model", vocabulary_size=None, max_sequence_length=None)
    kind = "causal_lm" if isinstance(model, keras_hub.models.CausalLM) else "backbone"
    return ModelFacts(
        kind=kind,
        vocabulary_size=getattr(backbone, "vocabulary_size", None),
        # RoPE models (Llama) state no maximum; learned position tables do.
        max_sequence_length=getattr(backbone, "max_sequence_length", None),
    )


def _check_keras_model_inputs(model) -> list[str]:
    """Returns the names of a plain keras.Model's inputs, checking they are token ids."""
    inputs = model.inputs
    if not inputs or len(inputs) > 2:
        raise ValueError(
            f"Model {model.name!r} has {len(inputs or [])} inputs; convert_keras expects "
            "int32 token ids [batch, seq_len] and optionally a padding mask."
        )
    names = []
    for tensor in inputs:
        dtype = str(tensor.dtype)
        if "int" not in dtype:
            raise ValueError(
                f"Model input {tensor.name!r} has dtype {dtype}; convert_keras expects integer "
                "token ids [batch, seq_len] (an LM that embeds its own tokens). Make the "
                "model's first layer an Embedding over int32 ids."
            )
        if len(tensor.shape) != 2:
            raise ValueError(
                f"Model input {tensor.name!r} has shape {tuple(tensor.shape)}; convert_keras "
                "expects token ids shaped [batch, seq_len]."
            )
        names.append(tensor.name)
    return names


def wrap_model(model: Any, *, seq_len: int, padding_mask: bool = False):
    """Builds the fixed-shape functional model that the converter traces.

    Args:
      model: a keras-hub CausalLM or Backbone, or a keras.Model mapping int32
        token ids (and optionally a padding mask) to logits.
      seq_len: the fixed sequence length.
      padding_mask: add a `padding_mask` input. Without it the mask is all
        ones, which is exact for right-padded windows under a causal mask and
        keeps integer mask arithmetic out of the graph.

    Returns:
      A `keras.Model` with inputs `token_ids` (+ `padding_mask`), int32
      [1, seq_len], and output `{"logits": [1, seq_len, vocab]}`.

    Raises:
      ValueError: the model does not take integer token ids or does not return
        [1, seq_len, vocab] logits.
    """
    import keras  # pylint: disable=import-outside-toplevel

    backbone = _backbone_of(model)
    facts = model_facts(model)
    plain_inputs = _check_keras_model_inputs(model) if backbone is None else None
    if backbone is not None and facts.kind == "backbone" and not hasattr(backbone, "token_embedding"):
        raise ValueError(
            f"Backbone {type(backbone).__name__} has no token_embedding to project hidden "
            "states to logits; pass its CausalLM task instead."
        )

    class _Logits(keras.layers.Layer):
        """Calls the LM inside one layer, which is what freezes its weights."""

        def __init__(self, inner, **kwargs):
            super().__init__(**kwargs)
            self.inner = inner

        def call(self, token_ids, padding=None):
            mask = padding if padding is not None else keras.ops.ones((1, seq_len), dtype="int32")
            if facts.kind == "causal_lm":
                return self.inner({TOKEN_IDS: token_ids, PADDING_MASK: mask})
            if facts.kind == "backbone":
                hidden = self.inner({TOKEN_IDS: token_ids, PADDING_MASK: mask})
                return self.inner.token_embedding(hidden, reverse=True)
            if len(plain_inputs) == 1:
                return self.inner(token_ids)
            return self.inner([token_ids, mask])

    token_ids = keras.Input(shape=(seq_len,), batch_size=1, dtype="int32", name=TOKEN_IDS)
    inputs = [token_ids]
    mask = None
    if padding_mask:
        mask = keras.Input(shape=(seq_len,), batch_size=1, dtype="int32", name=PADDING_MASK)
        inputs.append(mask)
    logits = _Logits(model, name=LOGITS)(token_ids, padding=mask)
    shape = tuple(logits.shape)
    if len(shape) != 3 or shape[0] != 1 or shape[1] != seq_len or not shape[2]:
        raise ValueError(
            f"Model output has shape {shape}; convert_keras expects logits shaped "
            f"[1, seq_len={seq_len}, vocabulary]. A classifier or an encoder's hidden "
            "states cannot be converted as an LM."
        )
    if facts.vocabulary_size is not None and shape[2] != facts.vocabulary_size:
        raise ValueError(
            f"Model output has {shape[2]} logits per position but the vocabulary has {facts.vocabulary_size} tokens."
        )
    return keras.Model(inputs, {LOGITS: logits}, name="lm_for_litert")
