"""Llama-architecture GGUF files (llama.cpp's format) to keras-hub `LlamaCausalLM`.

`read_llama_gguf(path)` checks a GGUF file and dequantizes every tensor to
float32 with `gguf.quants.dequantize`; `build_causal_lm(model)` puts the
weights into a `keras_hub.models.LlamaCausalLM` with a byte-pair tokenizer and
a `LlamaCausalLMPreprocessor`, so the result can `generate()` and be saved as a
keras-hub preset. Every size (layers, heads, key/value heads, widths, RoPE
base, RMSNorm epsilon, vocabulary, special token ids) comes from the file's
metadata.

Layouts. A dequantized GGUF matrix is numpy `[out, in]` (GGUF lists shapes
innermost first, as `[in, out]`), like a PyTorch `Linear.weight`. llama.cpp's
converter reorders the rows of the query and key projections so that RoPE
rotates adjacent pairs `(2i, 2i + 1)` of each head; keras-hub rotates the two
halves `(i, i + head_dim / 2)`. `half_split_rope_rows` undoes the reordering.

Only `import gguf` and numpy happen at module level; TensorFlow and keras-hub
are imported inside the functions that build the Keras model.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from converter.common import progress as progress_lib

SUPPORTED_ARCHITECTURES = ("llama",)
# GGUF "gpt2" is byte-level BPE (vocabulary + merges); "llama" would be
# SentencePiece, which keras-hub cannot build from a token list.
SUPPORTED_TOKENIZER_MODELS = ("gpt2",)

# Per-layer tensors, `blk.<i>.<name>.weight`.
LAYER_TENSORS = (
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
)
TOKEN_EMBEDDING = "token_embd.weight"
OUTPUT_NORM = "output_norm.weight"
# Absent when the output projection is tied to the token embedding.
OUTPUT = "output.weight"

# GGUF token type of special (control) tokens such as "<|im_end|>".
_CONTROL_TOKEN_TYPE = 3

# keras-hub byte-pair tokenizer classes whose special tokens survive
# `save_to_preset` / `from_preset`, keyed by the end-of-text token they declare.
# keras-hub has no such class for Llama: `Llama3Tokenizer` takes bos/eos
# tokens as arguments but leaves them out of its config, so a reloaded preset
# looks for "<|begin_of_text|>" and fails (checked with keras-hub 0.32). The
# tokenizer class only names the special tokens; the model is Llama either way.
_TOKENIZER_CLASSES: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    # ChatML special tokens (<|im_start|>, <|im_end|>, <|endoftext|>), as in
    # SmolLM2-Instruct; no start token is added to prompts.
    "<|im_end|>": ("Qwen3_5Tokenizer", {"has_vision_tokens": False}),
    # GPT-2 style: <|endoftext|> starts and ends text.
    "<|endoftext|>": ("GPT2Tokenizer", {}),
}
# The special tokens each class requires in the vocabulary.
_REQUIRED_SPECIAL_TOKENS = {
    "Qwen3_5Tokenizer": ("<|im_end|>", "<|endoftext|>", "<|im_start|>"),
    "GPT2Tokenizer": ("<|endoftext|>",),
}
# keras-hub's default prompt length for generate(); capped at the context length.
_PREPROCESSOR_SEQUENCE_LENGTH = 1024


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """The sizes of a Llama model, as its GGUF metadata states them.

    Attributes:
      num_layers: Transformer blocks (`llama.block_count`).
      hidden_dim: Width of the residual stream (`llama.embedding_length`).
      intermediate_dim: Width of the SwiGLU feed-forward layer
        (`llama.feed_forward_length`).
      num_query_heads: Attention heads (`llama.attention.head_count`).
      num_key_value_heads: Key/value heads shared by groups of query heads
        (`llama.attention.head_count_kv`; equal to the query heads if absent).
      rope_max_wavelength: RoPE base (`llama.rope.freq_base`; 10000 if absent).
      layer_norm_epsilon: RMSNorm epsilon
        (`llama.attention.layer_norm_rms_epsilon`).
      vocabulary_size: Token ids (`llama.vocab_size`, else the token count).
      context_length: Positions the model was trained on
        (`llama.context_length`).
    """

    num_layers: int
    hidden_dim: int
    intermediate_dim: int
    num_query_heads: int
    num_key_value_heads: int
    rope_max_wavelength: float
    layer_norm_epsilon: float
    vocabulary_size: int
    context_length: int

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_dim // self.num_query_heads


@dataclasses.dataclass(frozen=True)
class GgufTokenizer:
    """A byte-level BPE tokenizer as a GGUF file stores it.

    Attributes:
      tokens: Token strings in id order (`tokenizer.ggml.tokens`).
      merges: Merge rules, `"left right"` (`tokenizer.ggml.merges`).
      control_tokens: Special tokens (token type CONTROL), never split.
      bos_token_id: Beginning-of-text id, or None.
      eos_token_id: End-of-text id.
      pad_token_id: Padding id, or None.
      add_bos_token: Whether prompts start with the bos token.
      chat_template: The Jinja chat template (`tokenizer.chat_template`), or None.
    """

    tokens: tuple[str, ...] = dataclasses.field(repr=False)
    merges: tuple[str, ...] = dataclasses.field(repr=False)
    control_tokens: tuple[str, ...]
    bos_token_id: int | None
    eos_token_id: int
    pad_token_id: int | None
    add_bos_token: bool
    chat_template: str | None = None


@dataclasses.dataclass(frozen=True)
class LlamaGguf:
    """A Llama model read from a GGUF file, weights dequantized to float32.

    Attributes:
      path: The file.
      name: The model's name (`general.name`, else the file name).
      config: Its sizes.
      tensors: Tensor name -> float32 array in GGUF layout (matrices
        `[out, in]`, query/key rows in llama.cpp's interleaved RoPE order).
      tensor_types: Tensor name -> GGUF storage type (e.g. "Q4_1").
      tokenizer: Its tokenizer.
    """

    path: pathlib.Path
    name: str
    config: LlamaConfig
    tensors: Mapping[str, np.ndarray] = dataclasses.field(repr=False)
    tensor_types: Mapping[str, str] = dataclasses.field(repr=False)
    tokenizer: GgufTokenizer

    @property
    def tied_embeddings(self) -> bool:
        """True when the output projection is the token embedding."""
        return OUTPUT not in self.tensors

    def output_weight(self) -> np.ndarray:
        """The output projection, `[vocabulary, hidden]`."""
        return self.tensors.get(OUTPUT, self.tensors[TOKEN_EMBEDDING])


def required_tensor_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a Llama GGUF file must hold, with its numpy shape.

    Args:
      config: The model's sizes.

    Returns:
      Tensor name -> numpy shape (`[out, in]` for matrices). The optional
      untied `output.weight` is not included.
    """
    hidden, ffn, vocab = config.hidden_dim, config.intermediate_dim, config.vocabulary_size
    kv_dim = config.num_key_value_heads * config.head_dim
    per_layer = {
        "attn_norm": (hidden,),
        "attn_q": (hidden, hidden),
        "attn_k": (kv_dim, hidden),
        "attn_v": (kv_dim, hidden),
        "attn_output": (hidden, hidden),
        "ffn_norm": (hidden,),
        "ffn_gate": (ffn, hidden),
        "ffn_up": (ffn, hidden),
        "ffn_down": (hidden, ffn),
    }
    shapes = {TOKEN_EMBEDDING: (vocab, hidden), OUTPUT_NORM: (hidden,)}
    for layer in range(config.num_layers):
        for part in LAYER_TENSORS:
            shapes[f"blk.{layer}.{part}.weight"] = per_layer[part]
    return shapes


def read_llama_gguf(path: str | os.PathLike, *, progress: bool = False) -> LlamaGguf:
    """Reads a Llama GGUF file and dequantizes its weights.

    Args:
      path: The `.gguf` file.
      progress: Print progress to stderr.

    Returns:
      The model's config, float32 weights and tokenizer.

    Raises:
      FileNotFoundError: No file at `path`.
      ValueError: The file is not a readable GGUF file (truncated or corrupt),
        its architecture is not Llama, a metadata key or tensor is missing,
        a tensor has an unexpected shape or name, or it uses a feature this
        mapping does not support (RoPE scaling, partial RoPE, a non-BPE
        tokenizer). The message names what is wrong.
    """
    import gguf  # pylint: disable=import-outside-toplevel

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No GGUF file at {str(path)!r}.")
    reader = _open_reader(path)
    architecture = _field(reader, path, "general.architecture")
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{str(path)!r} holds a {architecture!r} model; only these GGUF architectures "
            f"are supported: {', '.join(SUPPORTED_ARCHITECTURES)}."
        )
    config = _read_config(reader, path, architecture)
    tokenizer = _read_tokenizer(reader, path, config)
    expected = required_tensor_shapes(config)
    found = {tensor.name: tensor for tensor in reader.tensors}
    missing = [name for name in expected if name not in found]
    if missing:
        raise ValueError(
            f"{str(path)!r} lacks {len(missing)} tensor(s) a Llama model needs: "
            f"{_short_list(missing)}. The file is incomplete or not a Llama model."
        )
    # Unknown tensors (biases, rope_freqs for Llama 3.1 RoPE scaling, ...)
    # would be dropped silently and give a different model: refuse them.
    unexpected = [name for name in found if name not in expected and name != OUTPUT]
    if unexpected:
        raise ValueError(
            f"{str(path)!r} has tensor(s) this Llama mapping does not know: "
            f"{_short_list(unexpected)}. Only plain Llama weights are supported."
        )
    if OUTPUT in found:
        expected[OUTPUT] = (config.vocabulary_size, config.hidden_dim)

    tensors: dict[str, np.ndarray] = {}
    tensor_types: dict[str, str] = {}
    progress_lib.log("gguf", f"dequantizing {len(expected)} tensors of {path.name}", enabled=progress)
    for index, name in enumerate(expected, start=1):
        tensor = found[name]
        tensors[name] = _dequantize(gguf, tensor, path, expected[name])
        tensor_types[name] = tensor.tensor_type.name
        if index % 50 == 0 or index == len(expected):
            progress_lib.log("gguf", f"dequantized {index}/{len(expected)} tensors", enabled=progress)
    name = _field(reader, path, "general.name", default=None) or path.stem
    return LlamaGguf(
        path=path,
        name=str(name),
        config=config,
        tensors=tensors,
        tensor_types=tensor_types,
        tokenizer=tokenizer,
    )


def _open_reader(path: pathlib.Path):
    import gguf  # pylint: disable=import-outside-toplevel

    size = path.stat().st_size
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise ValueError(
            f"{str(path)!r} is not a GGUF file (it does not start with 'GGUF'; {size} bytes). Pass a .gguf model file."
        )
    try:
        reader = gguf.GGUFReader(path)
    # gguf raises ValueError, IndexError, KeyError, ... on malformed input;
    # whichever it is, the file cannot be read.
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError, TypeError) as error:
        raise ValueError(
            f"{str(path)!r} is not a readable GGUF file ({size} bytes): it is truncated or "
            f"corrupt ({error}). Download it again."
        ) from error
    for tensor in reader.tensors:
        if tensor.data.nbytes != tensor.n_bytes:
            raise ValueError(
                f"{str(path)!r} is truncated: tensor {tensor.name!r} should have "
                f"{tensor.n_bytes} bytes but the file holds {tensor.data.nbytes}. "
                "Download it again."
            )
    return reader


_MISSING = object()


def _field(reader, path: pathlib.Path, key: str, *, default: Any = _MISSING) -> Any:
    """A metadata value; `default` when absent, else a ValueError naming the key."""
    field = reader.fields.get(key)
    if field is None:
        if default is _MISSING:
            raise ValueError(
                f"{str(path)!r} lacks the metadata key {key!r}; the file is incomplete or "
                "was not written for llama.cpp."
            )
        return default
    return field.contents()


def _read_config(reader, path: pathlib.Path, architecture: str) -> LlamaConfig:
    def value(key, **kwargs):
        return _field(reader, path, f"{architecture}.{key}", **kwargs)

    tokens = _field(reader, path, "tokenizer.ggml.tokens")
    num_query_heads = int(value("attention.head_count"))
    config = LlamaConfig(
        num_layers=int(value("block_count")),
        hidden_dim=int(value("embedding_length")),
        intermediate_dim=int(value("feed_forward_length")),
        num_query_heads=num_query_heads,
        num_key_value_heads=int(value("attention.head_count_kv", default=num_query_heads)),
        rope_max_wavelength=float(value("rope.freq_base", default=10000.0)),
        layer_norm_epsilon=float(value("attention.layer_norm_rms_epsilon")),
        vocabulary_size=int(value("vocab_size", default=len(tokens))),
        context_length=int(value("context_length")),
    )
    if config.hidden_dim % config.num_query_heads or config.num_query_heads % config.num_key_value_heads:
        raise ValueError(
            f"{str(path)!r}: hidden size {config.hidden_dim}, {config.num_query_heads} query heads "
            f"and {config.num_key_value_heads} key/value heads do not divide evenly."
        )
    if config.head_dim % 2:
        raise ValueError(f"{str(path)!r}: head size {config.head_dim} is odd; RoPE needs an even one.")
    rope_dims = value("rope.dimension_count", default=config.head_dim)
    if int(rope_dims) != config.head_dim:
        raise ValueError(
            f"{str(path)!r} rotates {rope_dims} of {config.head_dim} dimensions per head "
            "(partial RoPE), which this mapping does not support."
        )
    scaling = value("rope.scaling.type", default="none")
    if scaling not in ("none", None):
        raise ValueError(f"{str(path)!r} uses RoPE scaling {scaling!r}, which this mapping does not support.")
    if config.vocabulary_size != len(tokens):
        raise ValueError(
            f"{str(path)!r} states a vocabulary of {config.vocabulary_size} but lists {len(tokens)} tokens."
        )
    return config


def _read_tokenizer(reader, path: pathlib.Path, config: LlamaConfig) -> GgufTokenizer:
    model = _field(reader, path, "tokenizer.ggml.model")
    if model not in SUPPORTED_TOKENIZER_MODELS:
        raise ValueError(
            f"{str(path)!r} has a {model!r} tokenizer; only byte-level BPE tokenizers "
            f"({', '.join(SUPPORTED_TOKENIZER_MODELS)}) are supported."
        )
    tokens = tuple(str(token) for token in _field(reader, path, "tokenizer.ggml.tokens"))
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"{str(path)!r} lists some tokens twice; the vocabulary is corrupt.")
    merges = tuple(str(merge) for merge in _field(reader, path, "tokenizer.ggml.merges"))
    token_types = _field(reader, path, "tokenizer.ggml.token_type", default=None)
    control = ()
    if token_types is not None:
        control = tuple(token for token, kind in zip(tokens, token_types) if kind == _CONTROL_TOKEN_TYPE)

    def token_id(key, default=_MISSING):
        found = _field(reader, path, f"tokenizer.ggml.{key}", default=default)
        if found is None:
            return None
        if not 0 <= int(found) < config.vocabulary_size:
            raise ValueError(
                f"{str(path)!r}: tokenizer.ggml.{key} is {found}, outside the vocabulary of {config.vocabulary_size}."
            )
        return int(found)

    return GgufTokenizer(
        tokens=tokens,
        merges=merges,
        control_tokens=control,
        bos_token_id=token_id("bos_token_id", None),
        eos_token_id=token_id("eos_token_id"),
        pad_token_id=token_id("padding_token_id", None),
        add_bos_token=bool(_field(reader, path, "tokenizer.ggml.add_bos_token", default=False)),
        chat_template=_field(reader, path, "tokenizer.chat_template", default=None),
    )


def read_chat_template(path: str | os.PathLike) -> str | None:
    """The Jinja chat template a GGUF file carries (`tokenizer.chat_template`), None if it has none."""
    path = pathlib.Path(path)
    template = _field(_open_reader(path), path, "tokenizer.chat_template", default=None)
    return str(template) if template else None


def _dequantize(gguf, tensor, path: pathlib.Path, shape: tuple[int, ...]) -> np.ndarray:
    actual = tuple(int(n) for n in reversed(tensor.shape))
    if actual != shape:
        raise ValueError(
            f"{str(path)!r}: tensor {tensor.name!r} has shape {list(actual)}, expected {list(shape)} from the metadata."
        )
    try:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as error:
        raise ValueError(
            f"{str(path)!r}: tensor {tensor.name!r} is stored as {tensor.tensor_type.name}, "
            f"which gguf cannot dequantize ({error})."
        ) from error
    return np.ascontiguousarray(values, dtype=np.float32).reshape(shape)


def _short_list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def half_split_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Reorders query/key rows from llama.cpp's RoPE layout to keras-hub's.

    llama.cpp rotates pairs of adjacent rows `(2i, 2i + 1)` within each head;
    keras-hub (like Hugging Face) rotates rows `i` and `i + head_dim / 2`.

    Args:
      weight: A query or key projection, `[num_heads * head_dim, in]`.
      num_heads: Query heads for the query projection, key/value heads for the
        key projection.

    Returns:
      The same rows in half-split order.
    """
    rows, columns = weight.shape
    head_dim = rows // num_heads
    return weight.reshape(num_heads, head_dim // 2, 2, columns).swapaxes(1, 2).reshape(rows, columns)


def build_tokenizer(tokenizer: GgufTokenizer):
    """The keras-hub byte-pair tokenizer for a GGUF tokenizer.

    Args:
      tokenizer: As read by `read_llama_gguf`.

    Returns:
      A `keras_hub.tokenizers.BytePairTokenizer` subclass whose end token is
      the GGUF end-of-text token; control tokens are never split.

    Raises:
      ValueError: No keras-hub tokenizer class keeps this end-of-text token
        through saving (the supported ones are listed), or a special token it
        needs is missing.
    """
    import keras_hub  # pylint: disable=import-outside-toplevel

    eos = tokenizer.tokens[tokenizer.eos_token_id]
    if eos not in _TOKENIZER_CLASSES:
        raise ValueError(
            f"The GGUF end-of-text token is {eos!r}; supported end-of-text tokens are "
            f"{', '.join(repr(token) for token in _TOKENIZER_CLASSES)} (no keras-hub tokenizer "
            "class keeps other special tokens through save_to_preset)."
        )
    class_name, options = _TOKENIZER_CLASSES[eos]
    missing = [token for token in _REQUIRED_SPECIAL_TOKENS[class_name] if token not in tokenizer.tokens]
    if missing:
        raise ValueError(
            f"The GGUF vocabulary lacks the special token(s) {', '.join(missing)} that "
            f"keras-hub's {class_name} (chosen for end-of-text {eos!r}) needs."
        )
    unsplittable = sorted(set(tokenizer.control_tokens) | set(_REQUIRED_SPECIAL_TOKENS[class_name]))
    return getattr(keras_hub.tokenizers, class_name)(
        vocabulary={token: index for index, token in enumerate(tokenizer.tokens)},
        merges=list(tokenizer.merges),
        unsplittable_tokens=unsplittable,
        **options,
    )


def build_causal_lm(model: LlamaGguf, *, progress: bool = False):
    """Puts a GGUF Llama model into a keras-hub `LlamaCausalLM`.

    Args:
      model: As read by `read_llama_gguf`.
      progress: Print progress to stderr.

    Returns:
      A float32 `keras_hub.models.LlamaCausalLM` with a
      `LlamaCausalLMPreprocessor` (so `generate()` works).

    Raises:
      ValueError: see `build_tokenizer`; or the file asks for a start token
        the tokenizer class does not add.
    """
    import keras_hub  # pylint: disable=import-outside-toplevel

    config, spec = model.config, model.tokenizer
    tokenizer = build_tokenizer(spec)
    add_start_token = spec.add_bos_token
    if add_start_token and getattr(tokenizer, "start_token_id", None) != spec.bos_token_id:
        raise ValueError(
            f"The GGUF file starts prompts with token {spec.bos_token_id}, but keras-hub's "
            f"{type(tokenizer).__name__} starts them with {tokenizer.start_token_id}."
        )
    preprocessor = keras_hub.models.LlamaCausalLMPreprocessor(
        tokenizer=tokenizer,
        sequence_length=min(_PREPROCESSOR_SEQUENCE_LENGTH, config.context_length),
        add_start_token=add_start_token,
        add_end_token=False,
    )
    progress_lib.log("gguf", f"building a {config.num_layers}-layer keras-hub LlamaBackbone", enabled=progress)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=config.vocabulary_size,
        num_layers=config.num_layers,
        num_query_heads=config.num_query_heads,
        hidden_dim=config.hidden_dim,
        intermediate_dim=config.intermediate_dim,
        num_key_value_heads=config.num_key_value_heads,
        rope_max_wavelength=config.rope_max_wavelength,
        layer_norm_epsilon=config.layer_norm_epsilon,
        # Tied embeddings do not reload from a preset in keras-hub 0.32 (see
        # FIELD_NOTES); an untied copy of the embedding gives the same logits.
        tie_word_embeddings=False,
        dtype="float32",
    )
    _assign_weights(backbone, model)
    return keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=preprocessor)


def _assign_weights(backbone, model: LlamaGguf) -> None:
    # keras-hub's own checkpoint converters reach the sublayers the same way.
    # pylint: disable=protected-access
    config, tensors = model.config, model.tensors
    heads, kv_heads, head_dim, hidden = (
        config.num_query_heads,
        config.num_key_value_heads,
        config.head_dim,
        config.hidden_dim,
    )
    embedding = backbone.get_layer("token_embedding")
    embedding.embeddings.assign(tensors[TOKEN_EMBEDDING])
    embedding.reverse_embeddings.assign(model.output_weight().T)
    for layer_index in range(config.num_layers):
        layer = backbone.get_layer(f"transformer_layer_{layer_index}")

        def weight(part, layer_index=layer_index):
            return tensors[f"blk.{layer_index}.{part}.weight"]

        attention = layer._self_attention_layer
        query = half_split_rope_rows(weight("attn_q"), heads)
        key = half_split_rope_rows(weight("attn_k"), kv_heads)
        # Keras kernels are [in, heads, head_dim] and [heads, head_dim, out].
        attention._query_dense.kernel.assign(query.T.reshape(hidden, heads, head_dim))
        attention._key_dense.kernel.assign(key.T.reshape(hidden, kv_heads, head_dim))
        attention._value_dense.kernel.assign(weight("attn_v").T.reshape(hidden, kv_heads, head_dim))
        attention._output_dense.kernel.assign(weight("attn_output").T.reshape(heads, head_dim, hidden))
        layer._self_attention_layernorm.scale.assign(weight("attn_norm"))
        layer._feedforward_layernorm.scale.assign(weight("ffn_norm"))
        layer._feedforward_gate_dense.kernel.assign(weight("ffn_gate").T)
        layer._feedforward_intermediate_dense.kernel.assign(weight("ffn_up").T)
        layer._feedforward_output_dense.kernel.assign(weight("ffn_down").T)
    backbone.get_layer("sequence_output_layernorm").scale.assign(tensors[OUTPUT_NORM])
