"""Tests for converter.gguf_llama and converter.llama_reference on a tiny GGUF file.

The file is written here with gguf's own GGUFWriter: a 2-layer Llama (hidden
32, 4 query heads sharing 2 key/value heads, so a wrong RoPE row order or a
wrong head grouping changes the logits), seeded random float32 weights with
the token embedding stored as Q8_0, and a byte-level BPE vocabulary of 266
tokens with a few merges. The RoPE base and RMSNorm epsilon are unusual so
that a default used instead of the metadata shows.
"""

import pathlib
import subprocess
import sys

import gguf
import numpy as np
import pytest

from converter.models import gguf_llama, llama_reference, model_sources

HIDDEN = 32
HEADS = 4
KV_HEADS = 2
FFN = 48
LAYERS = 2
ROPE_BASE = 1000.0
EPSILON = 1e-3
CONTEXT = 64
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ c", "a t", "Ġc at", "i s"]
# Token ids (bytes are 3 + byte value, merged tokens 259...) of a sequence that
# uses every token kind; 14 positions rotate even RoPE's slowest pairs visibly.
SEQUENCE = [3 + byte for byte in b"Tiny"] + [259, 260, 261, 262, 263, 264, 265, 2, 1, 0]


def _byte_tokens() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = chr(256 + extra)
            extra += 1
    return [chars[byte] for byte in range(256)]


TOKENS = SPECIAL_TOKENS + _byte_tokens() + [merge.replace(" ", "") for merge in MERGES]
VOCAB = len(TOKENS)


def _random_tensors(*, untied: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Float32 weights in GGUF numpy layout ([out, in])."""
    rng = np.random.default_rng(seed)
    config = gguf_llama.LlamaConfig(
        num_layers=LAYERS,
        hidden_dim=HIDDEN,
        intermediate_dim=FFN,
        num_query_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        rope_max_wavelength=ROPE_BASE,
        layer_norm_epsilon=EPSILON,
        vocabulary_size=VOCAB,
        context_length=CONTEXT,
    )
    tensors = {}
    for name, shape in gguf_llama.required_tensor_shapes(config).items():
        if len(shape) == 1:
            tensors[name] = (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
        else:
            # Small embeddings make the RMSNorm epsilon matter.
            scale = 0.1 if name == gguf_llama.TOKEN_EMBEDDING else 0.5 / np.sqrt(shape[1])
            tensors[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    if untied:
        tensors[gguf_llama.OUTPUT] = (0.2 * rng.standard_normal((VOCAB, HIDDEN))).astype(np.float32)
    return tensors


def write_tiny_gguf(
    path: pathlib.Path,
    *,
    architecture: str = "llama",
    untied: bool = False,
    drop_tensors: tuple[str, ...] = (),
    extra_tensors: dict[str, np.ndarray] | None = None,
    drop_keys: tuple[str, ...] = (),
    tokenizer_model: str = "gpt2",
    eos_token_id: int = 2,
) -> pathlib.Path:
    """Writes the tiny Llama GGUF file; the options break it in one way each."""
    tensors = {name: value for name, value in _random_tensors(untied=untied).items() if name not in drop_tensors}
    tensors.update(extra_tensors or {})
    writer = gguf.GGUFWriter(str(path), architecture)
    metadata = {
        "name": lambda: writer.add_name("tiny llama"),
        "block_count": lambda: writer.add_block_count(LAYERS),
        "context_length": lambda: writer.add_context_length(CONTEXT),
        "embedding_length": lambda: writer.add_embedding_length(HIDDEN),
        "feed_forward_length": lambda: writer.add_feed_forward_length(FFN),
        "head_count": lambda: writer.add_head_count(HEADS),
        "head_count_kv": lambda: writer.add_head_count_kv(KV_HEADS),
        "rope_freq_base": lambda: writer.add_rope_freq_base(ROPE_BASE),
        "rms_eps": lambda: writer.add_layer_norm_rms_eps(EPSILON),
        "vocab_size": lambda: writer.add_vocab_size(VOCAB),
        "tokenizer_model": lambda: writer.add_tokenizer_model(tokenizer_model),
        "tokens": lambda: writer.add_token_list(TOKENS),
        "merges": lambda: writer.add_token_merges(MERGES),
        "token_types": lambda: writer.add_token_types([3] * len(SPECIAL_TOKENS) + [1] * (VOCAB - len(SPECIAL_TOKENS))),
        "bos": lambda: writer.add_bos_token_id(1),
        "eos": lambda: writer.add_eos_token_id(eos_token_id),
        "pad": lambda: writer.add_pad_token_id(2),
        "add_bos": lambda: writer.add_add_bos_token(False),
    }
    for key, add in metadata.items():
        if key not in drop_keys:
            add()
    for name, value in tensors.items():
        if name == gguf_llama.TOKEN_EMBEDDING:
            # Exercise dequantization: the embedding is Q8_0, as in SmolLM2.
            quantized = gguf.quants.quantize(value, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def tiny_model(tiny_gguf):
    return gguf_llama.read_llama_gguf(tiny_gguf)


@pytest.fixture(scope="module")
def tiny_causal_lm(tiny_model):
    return gguf_llama.build_causal_lm(tiny_model)


def _keras_logits(causal_lm, token_ids) -> np.ndarray:
    inputs = {
        "token_ids": np.asarray([token_ids], dtype=np.int32),
        "padding_mask": np.ones((1, len(token_ids)), dtype=bool),
    }
    return np.asarray(causal_lm(inputs, training=False))[0]


def test_modules_import_without_tensorflow():
    code = (
        "import sys\n"
        "import converter.models.gguf_llama, converter.models.llama_reference, converter.models.smollm2\n"
        "import converter.models.model_sources\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'keras_hub', 'gguf') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_comes_from_the_metadata(tiny_model):
    assert tiny_model.config == gguf_llama.LlamaConfig(
        num_layers=LAYERS,
        hidden_dim=HIDDEN,
        intermediate_dim=FFN,
        num_query_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        rope_max_wavelength=ROPE_BASE,
        layer_norm_epsilon=pytest.approx(EPSILON),
        vocabulary_size=VOCAB,
        context_length=CONTEXT,
    )
    assert tiny_model.name == "tiny llama"
    assert tiny_model.tied_embeddings
    assert tiny_model.tensor_types[gguf_llama.TOKEN_EMBEDDING] == "Q8_0"
    assert tiny_model.tensor_types["blk.0.attn_q.weight"] == "F32"
    tokenizer = tiny_model.tokenizer
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 2)
    assert tokenizer.control_tokens == tuple(SPECIAL_TOKENS)
    assert not tokenizer.add_bos_token


def test_float_tensors_are_read_exactly_and_q8_0_closely(tiny_model):
    written = _random_tensors(untied=False)
    np.testing.assert_array_equal(tiny_model.tensors["blk.1.attn_k.weight"], written["blk.1.attn_k.weight"])
    embedding = tiny_model.tensors[gguf_llama.TOKEN_EMBEDDING]
    assert embedding.dtype == np.float32 and embedding.shape == (VOCAB, HIDDEN)
    # Q8_0: one scale per 32 values, 8-bit codes.
    np.testing.assert_allclose(embedding, written[gguf_llama.TOKEN_EMBEDDING], atol=0.01)


@pytest.mark.parametrize("untied", [False, True], ids=["tied", "untied"])
def test_keras_logits_match_the_numpy_reference(tmp_path, untied):
    model = gguf_llama.read_llama_gguf(write_tiny_gguf(tmp_path / "tiny.gguf", untied=untied))
    causal_lm = gguf_llama.build_causal_lm(model)
    expected = llama_reference.llama_logits(model.tensors, model.config, SEQUENCE)
    actual = _keras_logits(causal_lm, SEQUENCE)
    assert actual.shape == (len(SEQUENCE), VOCAB)
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)
    # Logits of order one: agreement to 1e-4 is not a property of tiny values.
    assert np.abs(expected).max() > 0.5
    np.testing.assert_array_equal(
        causal_lm.backbone.get_layer("token_embedding").reverse_embeddings.numpy(), model.output_weight().T
    )


def test_reference_catches_a_missing_rope_row_reordering(tiny_model, monkeypatch):
    monkeypatch.setattr(gguf_llama, "half_split_rope_rows", lambda weight, num_heads: weight)
    causal_lm = gguf_llama.build_causal_lm(tiny_model)
    expected = llama_reference.llama_logits(tiny_model.tensors, tiny_model.config, SEQUENCE)
    assert np.abs(_keras_logits(causal_lm, SEQUENCE) - expected).max() > 1e-2


def test_half_split_rope_rows_pairs_adjacent_rows_into_halves():
    # One head of 4 rows: adjacent pairs (0, 1), (2, 3) become halves (0, 2), (1, 3).
    weight = np.arange(8, dtype=np.float32).reshape(8, 1)
    reordered = gguf_llama.half_split_rope_rows(weight, num_heads=2)
    np.testing.assert_array_equal(reordered[:, 0], [0, 2, 1, 3, 4, 6, 5, 7])


def test_reference_rope_leaves_position_zero_alone_and_keeps_norms():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 2, 8))
    rotated = llama_reference.rope_adjacent_pairs(x, 10000.0)
    np.testing.assert_allclose(rotated[0], x[0])
    pair_norms = lambda a: np.hypot(a[..., 0::2], a[..., 1::2])  # noqa: E731
    np.testing.assert_allclose(pair_norms(rotated), pair_norms(x))


def test_reference_rejects_ids_outside_the_vocabulary(tiny_model):
    with pytest.raises(ValueError, match=rf"\[0, {VOCAB}\)"):
        llama_reference.llama_logits(tiny_model.tensors, tiny_model.config, [0, VOCAB])


def test_tokenizer_applies_the_merges_and_keeps_special_tokens_whole(tiny_causal_lm):
    tokenizer = tiny_causal_lm.preprocessor.tokenizer
    ids = {token: index for index, token in enumerate(TOKENS)}
    assert np.asarray(tokenizer("the cat is")).tolist() == [ids["t"], ids["he"], ids["Ġcat"], ids["Ġ"], ids["is"]]
    assert np.asarray(tokenizer("<|im_end|>")).tolist() == [2]
    assert tokenizer.end_token_id == 2
    assert tokenizer.vocabulary_size() == VOCAB


def test_preset_reloads_with_the_same_logits_and_tokenizer(tiny_causal_lm, tmp_path):
    import keras_hub

    preset = tmp_path / "preset"
    tiny_causal_lm.save_to_preset(str(preset))
    reloaded = keras_hub.models.CausalLM.from_preset(str(preset))
    np.testing.assert_array_equal(_keras_logits(reloaded, SEQUENCE), _keras_logits(tiny_causal_lm, SEQUENCE))
    loaded = model_sources.load_model(preset)
    assert loaded.model.preprocessor is None
    np.testing.assert_array_equal(_keras_logits(loaded.model, SEQUENCE), _keras_logits(tiny_causal_lm, SEQUENCE))
    assert loaded.tokenizer is not None
    assert (
        np.asarray(loaded.tokenizer("the cat")).tolist()
        == np.asarray(tiny_causal_lm.preprocessor.tokenizer("the cat")).tolist()
    )
    assert loaded.tokenizer.end_token_id == 2


def test_preset_with_its_byte_pair_preprocessor_converts_to_litert(tiny_causal_lm, tmp_path):
    import converter

    preset = tmp_path / "preset"
    tiny_causal_lm.save_to_preset(str(preset))
    # The preprocessor's lookup tables must stay out of the traced graph.
    result = converter.convert_keras(str(preset), "fp32", seq_len=16, progress=False)
    assert result.vocabulary_size == VOCAB
    assert result.check["max_abs_logit_error"] < 1e-4
    assert result.check["top1_agreement"] == 1.0


def test_greedy_generation_follows_the_reference(tiny_model, tiny_causal_lm):
    tiny_causal_lm.compile(sampler="greedy")
    prompt_ids = np.asarray(tiny_causal_lm.preprocessor.tokenizer("the cat")).tolist()
    new_tokens = 4
    # generate_step is what generate() runs after its preprocessor: ids in,
    # ids out, so the comparison is exact (no detokenizing).
    generated = tiny_causal_lm.generate_step(
        {
            "token_ids": np.asarray([prompt_ids + [0] * new_tokens], dtype=np.int32),
            "padding_mask": np.asarray([[True] * len(prompt_ids) + [False] * new_tokens]),
        },
        stop_token_ids=None,
    )
    ids = list(prompt_ids)
    for _ in range(new_tokens):
        ids.append(int(llama_reference.llama_logits(tiny_model.tensors, tiny_model.config, ids)[-1].argmax()))
    assert np.asarray(generated["token_ids"])[0].tolist() == ids


# Bad input: each stops with a message that names the problem.


def test_unsupported_architecture_is_named_with_the_supported_ones(tmp_path):
    path = write_tiny_gguf(tmp_path / "gpt2.gguf", architecture="gpt2")
    with pytest.raises(ValueError, match=r"holds a 'gpt2' model; only these GGUF architectures are supported: llama"):
        gguf_llama.read_llama_gguf(path)


def test_missing_tensors_are_named(tmp_path):
    path = write_tiny_gguf(tmp_path / "missing.gguf", drop_tensors=("output_norm.weight", "blk.1.ffn_up.weight"))
    with pytest.raises(
        ValueError, match=r"lacks 2 tensor\(s\) a Llama model needs: output_norm.weight, blk.1.ffn_up.weight"
    ):
        gguf_llama.read_llama_gguf(path)


def test_unknown_tensors_are_named(tmp_path):
    path = write_tiny_gguf(
        tmp_path / "bias.gguf", extra_tensors={"blk.0.attn_q.bias": np.zeros(HIDDEN, dtype=np.float32)}
    )
    with pytest.raises(ValueError, match=r"does not know: blk.0.attn_q.bias"):
        gguf_llama.read_llama_gguf(path)


def test_wrong_tensor_shape_is_named(tmp_path):
    path = write_tiny_gguf(
        tmp_path / "shape.gguf",
        drop_tensors=("blk.0.ffn_up.weight",),
        extra_tensors={"blk.0.ffn_up.weight": np.zeros((FFN + 1, HIDDEN), dtype=np.float32)},
    )
    with pytest.raises(ValueError, match=r"'blk.0.ffn_up.weight' has shape \[49, 32\], expected \[48, 32\]"):
        gguf_llama.read_llama_gguf(path)


def test_missing_metadata_key_is_named(tmp_path):
    path = write_tiny_gguf(tmp_path / "nokey.gguf", drop_keys=("head_count",))
    with pytest.raises(ValueError, match=r"lacks the metadata key 'llama.attention.head_count'"):
        gguf_llama.read_llama_gguf(path)


@pytest.mark.parametrize("keep", [0.5, 0.999], ids=["half", "last-bytes-missing"])
def test_truncated_file_is_refused(tiny_gguf, tmp_path, keep):
    data = tiny_gguf.read_bytes()
    path = tmp_path / "truncated.gguf"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"truncated.*Download it again"):
        gguf_llama.read_llama_gguf(path)


def test_truncated_header_is_refused(tiny_gguf, tmp_path):
    path = tmp_path / "header.gguf"
    path.write_bytes(tiny_gguf.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"not a readable GGUF file .*truncated or corrupt"):
        gguf_llama.read_llama_gguf(path)


def test_file_that_is_not_gguf_is_refused(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 not a gguf file at all")
    with pytest.raises(ValueError, match=r"is not a GGUF file"):
        gguf_llama.read_llama_gguf(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="No GGUF file"):
        gguf_llama.read_llama_gguf(tmp_path / "absent.gguf")


def test_sentencepiece_tokenizer_is_refused(tmp_path):
    path = write_tiny_gguf(tmp_path / "spm.gguf", tokenizer_model="llama")
    with pytest.raises(ValueError, match=r"has a 'llama' tokenizer; only byte-level BPE tokenizers \(gpt2\)"):
        gguf_llama.read_llama_gguf(path)


def test_unsupported_end_token_lists_the_supported_ones(tmp_path):
    model = gguf_llama.read_llama_gguf(write_tiny_gguf(tmp_path / "eos.gguf", eos_token_id=1))
    with pytest.raises(
        ValueError, match=r"end-of-text token is '<\|im_start\|>'; supported .*'<\|im_end\|>', '<\|endoftext\|>'"
    ):
        gguf_llama.build_tokenizer(model.tokenizer)
