"""A numpy forward pass of a Llama model, straight from its GGUF tensors.

The check on `gguf_llama`: it shares no code with keras-hub and works in the
file's own layout, so a wrong mapping (transposed kernels, the query/key row
order, grouped-query attention) shows up as a logit difference. It computes
in float64, follows llama.cpp's Llama graph and is meant for a handful of
tokens:

    h = embedding[ids]
    per layer:  h += Wo · attention(RoPE(Wq · n), RoPE(Wk · n), Wv · n),  n = RMSNorm(h)
                h += Wdown · (silu(Wgate · n) * Wup · n),                 n = RMSNorm(h)
    logits = Woutput · RMSNorm(h)

RoPE rotates adjacent pairs `(2i, 2i + 1)` of each head by `position *
base^(-2i / head_dim)`: the order llama.cpp stores query and key rows in.
Each key/value head serves `num_query_heads / num_key_value_heads`
consecutive query heads; attention is causal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from converter.models.gguf_llama import OUTPUT, OUTPUT_NORM, TOKEN_EMBEDDING, LlamaConfig


def rms_norm(x: np.ndarray, scale: np.ndarray, epsilon: float) -> np.ndarray:
    """`x / sqrt(mean(x^2) + epsilon) * scale` over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + epsilon) * scale


def rope_adjacent_pairs(x: np.ndarray, base: float) -> np.ndarray:
    """Rotary position embedding on adjacent pairs, as llama.cpp applies it.

    Args:
      x: `[seq, heads, head_dim]`; position `p` is row `p`.
      base: The RoPE base (`rope.freq_base`).

    Returns:
      The rotated array, same shape.
    """
    seq, _, head_dim = x.shape
    inverse_frequency = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angle = np.arange(seq, dtype=np.float64)[:, None] * inverse_frequency[None, :]
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    rotated = np.empty_like(x)
    rotated[..., 0::2] = even * cos - odd * sin
    rotated[..., 1::2] = even * sin + odd * cos
    return rotated


def _attention(normed, tensors, prefix, config: LlamaConfig) -> np.ndarray:
    seq = normed.shape[0]
    heads, kv_heads, head_dim = config.num_query_heads, config.num_key_value_heads, config.head_dim

    def project(part, count):
        weight = np.asarray(tensors[f"{prefix}.{part}.weight"], dtype=np.float64)
        return (normed @ weight.T).reshape(seq, count, head_dim)

    query = rope_adjacent_pairs(project("attn_q", heads), config.rope_max_wavelength)
    key = rope_adjacent_pairs(project("attn_k", kv_heads), config.rope_max_wavelength)
    value = project("attn_v", kv_heads)
    group = heads // kv_heads
    # Query head h reads key/value head h // group.
    key, value = np.repeat(key, group, axis=1), np.repeat(value, group, axis=1)
    scores = np.einsum("qhd,khd->hqk", query, key) / np.sqrt(head_dim)
    future = np.triu(np.ones((seq, seq), dtype=bool), k=1)
    scores = np.where(future[None], -np.inf, scores)
    scores -= scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    mixed = np.einsum("hqk,khd->qhd", weights, value).reshape(seq, heads * head_dim)
    return mixed @ np.asarray(tensors[f"{prefix}.attn_output.weight"], dtype=np.float64).T


def _feed_forward(normed, tensors, prefix) -> np.ndarray:
    def weight(part):
        return np.asarray(tensors[f"{prefix}.{part}.weight"], dtype=np.float64)

    gate = normed @ weight("ffn_gate").T
    up = normed @ weight("ffn_up").T
    return (gate / (1.0 + np.exp(-gate)) * up) @ weight("ffn_down").T


def llama_logits(tensors: Mapping[str, np.ndarray], config: LlamaConfig, token_ids: Sequence[int]) -> np.ndarray:
    """Next-token logits at every position of one sequence.

    Args:
      tensors: GGUF tensor name -> float array in GGUF layout (as
        `gguf_llama.LlamaGguf.tensors`); without `output.weight` the output
        projection is the token embedding.
      config: The model's sizes.
      token_ids: The sequence, ids in `[0, vocabulary_size)`.

    Returns:
      float64 `[len(token_ids), vocabulary_size]`.

    Raises:
      ValueError: An id is outside the vocabulary, or the sequence is empty.
    """
    ids = np.asarray(token_ids, dtype=np.int64)
    if ids.ndim != 1 or not ids.size:
        raise ValueError(f"token_ids must be a non-empty 1-D sequence; got shape {ids.shape}.")
    if ids.min() < 0 or ids.max() >= config.vocabulary_size:
        raise ValueError(f"token ids must lie in [0, {config.vocabulary_size}); got {ids.min()}..{ids.max()}.")
    epsilon = config.layer_norm_epsilon
    hidden = np.asarray(tensors[TOKEN_EMBEDDING][ids], dtype=np.float64)
    for layer in range(config.num_layers):
        prefix = f"blk.{layer}"
        normed = rms_norm(hidden, tensors[f"{prefix}.attn_norm.weight"], epsilon)
        hidden = hidden + _attention(normed, tensors, prefix, config)
        normed = rms_norm(hidden, tensors[f"{prefix}.ffn_norm.weight"], epsilon)
        hidden = hidden + _feed_forward(normed, tensors, prefix)
    hidden = rms_norm(hidden, tensors[OUTPUT_NORM], epsilon)
    output = tensors.get(OUTPUT, tensors[TOKEN_EMBEDDING])
    return hidden @ np.asarray(output, dtype=np.float64).T
