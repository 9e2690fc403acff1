"""A keras-hub decoder run one chunk at a time against an explicit, per-layer KV cache.

keras-hub's own `call_with_cache` keeps one stacked `[batch, layers, 2, len,
heads, dim]` cache that is sliced and re-stacked every step, and repeats K and
V over the whole cache for grouped-query attention; converted as it is, a
decode step costs as much as a whole window (FIELD_NOTES). Here each layer
reads and writes its own `[1, kv_heads, context, head_dim]` K and V caches,
the layout LiteRT-LM looks up, and the math is the keras-hub layers' own: the
norms, projections, rotary embedding and MLP are called as they are, so the
logits equal the full-window model's (to 1e-5 on tiny models, fp32).

* Cache writes: one DYNAMIC_UPDATE_SLICE per cache at `input_pos[0]`. The rows
  a padded prefill chunk would overwrite with padding keep what the cache held
  (LiteRT-LM pads a chunk with token 0 at position 0), and a chunk that would
  run past the end of the context lands where DYNAMIC_UPDATE_SLICE clamps it,
  row by row where it belongs.
* Attention: key j is visible to query t iff j <= input_pos[t]; the mask is
  built once per call. Grouped-query attention reshapes the queries to
  `[1, kv_heads, group * T, head_dim]` instead of repeating K and V.
* Prefill returns the logits of the chunk's last real token only, and runs the
  last layer's attention and MLP on that row alone.

Supported families: keras-hub `GPT2CausalLM` (learned positions, LayerNorm,
GELU, multi-head attention) and `LlamaCausalLM` (RoPE, RMSNorm, SwiGLU,
grouped-query attention). The layers' private sublayers are used where
keras-hub exposes no public ones; keras-hub is pinned (setup.cfg).
"""

from __future__ import annotations

import dataclasses
from typing import Any

# keras' own constant for masked attention scores (keras.layers.Softmax).
_MASKED = -1e9
GPT2 = "gpt2"
LLAMA = "llama"


@dataclasses.dataclass(frozen=True)
class DecoderShape:
    """What the cache and the signatures of a decoder look like.

    Attributes:
      family: `gpt2` or `llama`.
      num_layers, num_query_heads, num_key_value_heads, head_dim: the attention shape.
      vocabulary_size: logits per position.
      max_context: the longest context the model supports (GPT-2's position
        table); None for RoPE models, which state none.
    """

    family: str
    num_layers: int
    num_query_heads: int
    num_key_value_heads: int
    head_dim: int
    vocabulary_size: int
    max_context: int | None

    def cache_names(self) -> list[str]:
        """`kv_cache_k_0`, `kv_cache_v_0`, `kv_cache_k_1`, ... in layer order."""
        return [f"kv_cache_{kind}_{layer}" for layer in range(self.num_layers) for kind in ("k", "v")]

    def cache_shape(self, context: int) -> list[int]:
        return [1, self.num_key_value_heads, int(context), self.head_dim]

    def cache_bytes(self, context: int) -> int:
        """Bytes of every K and V cache at `context` positions (float32)."""
        return 2 * self.num_layers * self.num_key_value_heads * int(context) * self.head_dim * 4


def _backbone(model: Any):
    import keras_hub  # pylint: disable=import-outside-toplevel

    if isinstance(model, keras_hub.models.CausalLM):
        return model.backbone
    if isinstance(model, keras_hub.models.Backbone):
        return model
    return None


def decoder_shape(model: Any) -> DecoderShape:
    """The cache layout of a keras-hub GPT-2 or Llama LM, checked before anything is traced.

    Raises:
      ValueError: the model is not a keras-hub GPT-2 or Llama causal LM; the
        message says what is supported and how to convert the model without a cache.
    """
    import keras_hub  # pylint: disable=import-outside-toplevel

    backbone = _backbone(model)
    if isinstance(backbone, keras_hub.models.LlamaBackbone):
        heads, kv_heads = backbone.num_query_heads, backbone.num_key_value_heads
        return DecoderShape(
            LLAMA, backbone.num_layers, heads, kv_heads, backbone.hidden_dim // heads, backbone.vocabulary_size, None
        )
    if isinstance(backbone, keras_hub.models.GPT2Backbone):
        heads = backbone.num_heads
        return DecoderShape(
            GPT2,
            backbone.num_layers,
            heads,
            heads,
            backbone.hidden_dim // heads,
            backbone.vocabulary_size,
            backbone.max_sequence_length,
        )
    described = type(model).__name__ if backbone is None else type(backbone).__name__
    raise ValueError(
        f"Generation signatures need the decoder layers of a keras-hub GPT2CausalLM or LlamaCausalLM (a "
        f"{described} has no KV-cache path this converter knows). Convert it without generation: the "
        "fixed-window model (token_ids -> logits) works for any LM."
    )


class CachedDecoder:
    """The forward pass of one chunk against the caches, in TensorFlow ops.

    Args:
      model: a keras-hub GPT2/Llama CausalLM or Backbone.
      context: cache length (positions).
      single_tied_copy: for a Llama with tied embeddings, keep the converter
        from folding the final norm's scale into the output projection (which
        stores the vocabulary x hidden table a second time).
    """

    def __init__(self, model: Any, *, context: int, single_tied_copy: bool = True):
        self.shape = decoder_shape(model)
        self.backbone = _backbone(model)
        self.context = int(context)
        self.group = self.shape.num_query_heads // self.shape.num_key_value_heads
        self.single_tied_copy = single_tied_copy

    # -- pieces shared by every layer ------------------------------------------------------
    def _mask_bias(self, input_pos):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        keys = tf.range(self.context, dtype=tf.int32)[None, :]
        bias = tf.where(keys <= input_pos[:, None], 0.0, _MASKED)  # [T, context]
        # Rows are ordered (group g, position t) -> g * T + t, as the queries are reshaped.
        return tf.tile(bias, [self.group, 1]) if self.group > 1 else bias

    def _write_plan(self, input_pos) -> dict[str, Any]:
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        length = input_pos.shape[0]
        first = input_pos[0]
        if length == 1:
            return {"start": tf.pad(first[None], [[2, 1]]), "length": 1, "masked": False}
        start = tf.minimum(first, self.context - length)  # where DYNAMIC_UPDATE_SLICE clamps anyway
        target = start + tf.range(length, dtype=tf.int32)  # the cache row each update row lands on
        source = target - first  # the chunk row that belongs there
        clipped = tf.clip_by_value(source, 0, length - 1)
        real = tf.logical_and(source >= 0, tf.gather(input_pos, clipped) == target)
        return {
            "start": tf.pad(start[None], [[2, 1]]),
            "length": length,
            "masked": True,
            "rows": clipped,
            "real": real[None, None, :, None],
        }

    def _write(self, cache, update, plan):
        """cache [1, kv_heads, context, head_dim] <- update [1, kv_heads, T, head_dim]."""
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        from tensorflow.compiler.tf2xla.python import xla  # pylint: disable=import-outside-toplevel

        update = tf.cast(update, cache.dtype)
        if plan["masked"]:
            size = [1, self.shape.num_key_value_heads, plan["length"], self.shape.head_dim]
            held = tf.slice(cache, plan["start"], size)
            update = tf.where(plan["real"], tf.gather(update, plan["rows"], axis=2), held)
        # tf2xla's op is what becomes LiteRT's DYNAMIC_UPDATE_SLICE (keras ops.slice_update is the same op).
        return xla.dynamic_update_slice(cache, update, plan["start"])

    def _attend(self, query, keys, values, bias, scale, *, scale_query: bool):
        """query [1, T, q_heads, d]; keys, values [1, kv_heads, context, d] -> [1, T, q_heads, d]."""
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        length = query.shape[1]
        kv_heads, group, dim = self.shape.num_key_value_heads, self.group, self.shape.head_dim
        if scale_query:  # keras MultiHeadAttention scales the query (GPT-2)
            query = query * scale
        query = tf.reshape(query, [1, length, kv_heads, group, dim])
        query = tf.reshape(tf.transpose(query, [0, 2, 3, 1, 4]), [1, kv_heads, group * length, dim])
        scores = tf.matmul(query, tf.cast(keys, query.dtype), transpose_b=True)
        if not scale_query:  # keras-hub's LlamaAttention scales the scores
            scores = scores * scale
        probabilities = tf.nn.softmax(scores + bias, axis=-1)
        context = tf.matmul(probabilities, tf.cast(values, query.dtype))
        context = tf.transpose(tf.reshape(context, [1, kv_heads, group, length, dim]), [0, 3, 1, 2, 4])
        return tf.reshape(context, [1, length, kv_heads * group, dim])

    # -- the two families -------------------------------------------------------------------
    def _llama_layer(self, layer, x, keys, values, bias, plan, rope, last):
        # pylint: disable=protected-access
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        attention = layer._self_attention_layer
        hidden = layer._self_attention_layernorm(x)
        query, key, value = attention._query_dense(hidden), attention._key_dense(hidden), attention._value_dense(hidden)
        rotary = attention.rotary_embedding_layer
        query = rotary._apply_rotary_pos_emb(query, *rope)
        key = rotary._apply_rotary_pos_emb(key, *rope)
        keys = self._write(keys, tf.transpose(key, [0, 2, 1, 3]), plan)
        values = self._write(values, tf.transpose(value, [0, 2, 1, 3]), plan)
        if last is not None:  # after the last layer only the last real row matters
            query, x = tf.gather(query, last, axis=1), tf.gather(x, last, axis=1)
            bias = tf.gather(bias, last + tf.range(self.group) * plan["length"], axis=0)
        x = x + attention._output_dense(
            self._attend(query, keys, values, bias, attention._inv_norm_factor, scale_query=False)
        )
        hidden = layer._feedforward_layernorm(x)
        gate = layer.activation(layer._feedforward_gate_dense(hidden))
        x = x + layer._feedforward_output_dense(layer._feedforward_intermediate_dense(hidden) * gate)
        return x, keys, values

    def _gpt2_layer(self, layer, x, keys, values, bias, plan, rope, last):
        # pylint: disable=protected-access
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        del rope
        attention = layer._self_attention_layer  # a keras MultiHeadAttention
        hidden = layer._self_attention_layer_norm(x)
        query, key, value = attention.query_dense(hidden), attention.key_dense(hidden), attention.value_dense(hidden)
        keys = self._write(keys, tf.transpose(key, [0, 2, 1, 3]), plan)
        values = self._write(values, tf.transpose(value, [0, 2, 1, 3]), plan)
        if last is not None:
            query, x = tf.gather(query, last, axis=1), tf.gather(x, last, axis=1)
            bias = tf.gather(bias, last, axis=0)
        x = x + attention.output_dense(
            self._attend(query, keys, values, bias, attention._inverse_sqrt_key_dim, scale_query=True)
        )
        hidden = layer._feedforward_layer_norm(x)
        x = x + layer._feedforward_output_dense(layer._feedforward_intermediate_dense(hidden))
        return x, keys, values

    def forward(self, tokens, input_pos, caches):
        """tokens [1, T], input_pos [T], 2 * layers caches -> (logits [1, 1, vocab], updated caches)."""
        # pylint: disable=protected-access
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        backbone = self.backbone
        length = tokens.shape[1]
        x = backbone.token_embedding(tokens)
        rope = None
        if self.shape.family == GPT2:
            x = backbone.embeddings_add((x, backbone.position_embedding(x, positions=input_pos)))
        else:
            rotary = backbone.transformer_layers[0]._self_attention_layer.rotary_embedding_layer
            rope = rotary._compute_cos_sin_embedding(tf.zeros([1, length, 1, self.shape.head_dim]), positions=input_pos)
        bias = self._mask_bias(input_pos)
        plan = self._write_plan(input_pos)
        # The chunk's last real token: padding has input_pos 0 and real positions increase.
        last = tf.cast(tf.argmax(input_pos), tf.int32)[None] if length > 1 else None
        run_layer = self._llama_layer if self.shape.family == LLAMA else self._gpt2_layer
        updated = []
        for index, layer in enumerate(backbone.transformer_layers):
            at_end = last if index == self.shape.num_layers - 1 else None
            x, keys, values = run_layer(layer, x, caches[2 * index], caches[2 * index + 1], bias, plan, rope, at_end)
            updated += [keys, values]
        tied = getattr(backbone.token_embedding, "tie_weights", False)
        if self.shape.family == LLAMA and tied and self.single_tied_copy:
            # The converter folds a constant norm scale into the output projection (table * scale), a
            # second vocabulary x hidden constant beside the GATHER's table. A factor that is 1.0 at run
            # time (`1 + 0 * x` would be folded too) keeps one table.
            norm = backbone.layer_norm
            one = tf.cast(input_pos[0] > -1, x.dtype)
            variance = tf.reduce_mean(tf.square(x), axis=-1, keepdims=True)
            x = x * tf.math.rsqrt(variance + norm.epsilon) * (norm.scale * one)
        else:
            x = backbone.layer_norm(x)
        return backbone.token_embedding(x, reverse=True), updated
