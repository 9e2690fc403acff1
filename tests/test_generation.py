"""Generation signatures (prefill/decode with a per-layer KV cache) and the device-side generation loop."""

import json

import numpy as np
import pytest

import converter
from benchmarks import generation, generation_bench
from converter.core.generation import GenerationSettings

from helpers import peaked, tiny_gpt2_causal_lm, tiny_llama_causal_lm

VOCABULARY = 512
SETTINGS = GenerationSettings(context_length=96, prefill_lengths=(8, 32), smaller_contexts=(48,))
# fp32 cache path against the full window: float reassociation only (measured about 1e-5 on logits of
# magnitude up to 10 on these models, on AVX-512 and AVX2 alike: the same kernels' summation order).
FP32_LOGIT_TOLERANCE = 1e-4


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def family(request):
    return request.param


@pytest.fixture(scope="module")
def model(family):
    if family == "gpt2":
        return peaked(tiny_gpt2_causal_lm(hidden_dim=64, max_sequence_length=128))
    return peaked(tiny_llama_causal_lm())


@pytest.fixture(scope="module")
def converted(model, tmp_path_factory, family):
    path = tmp_path_factory.mktemp("generation") / f"{family}_fp32_generate.tflite"
    result = converter.convert_keras(model, "fp32", generation=SETTINGS, output_path=path, progress=False)
    return result, path


def _keras_logits(model, ids):
    return np.asarray(
        model({"token_ids": np.asarray([ids], np.int32), "padding_mask": np.ones((1, len(ids)), np.int32)})
    )[0]


def _keras_greedy(model, prompt, steps):
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(np.argmax(_keras_logits(model, ids)[-1])))
    return ids[len(prompt) :]


def test_signatures_are_the_ones_litert_lm_looks_up(converted):
    result, path = converted
    signatures = result.signatures
    assert set(signatures) == {
        "prefill_8",
        "prefill_32",
        "decode",
        "ctx48_prefill_8",
        "ctx48_prefill_32",
        "ctx48_decode",
    }
    decode = signatures["decode"]
    layers = result.generation["cache"]["names"]
    assert set(decode["inputs"]) == {"tokens", "input_pos", *layers}
    assert set(decode["outputs"]) == {"logits", *layers}
    assert decode["inputs"]["tokens"]["shape"] == [1, 1] and decode["inputs"]["input_pos"]["shape"] == [1]
    # GPT-2: 2 heads of 32; Llama: 4 query heads sharing 2 K/V heads of 16.
    kv_heads, head_dim = (2, 16) if result.generation["family"] == "llama" else (2, 32)
    assert decode["inputs"]["kv_cache_k_0"]["shape"] == [1, kv_heads, 96, head_dim]
    assert signatures["ctx48_decode"]["inputs"]["kv_cache_v_1"]["shape"] == [1, kv_heads, 48, head_dim]
    assert signatures["prefill_32"]["inputs"]["tokens"]["shape"] == [1, 32]
    # Prefill returns the last real token's logits only.
    assert signatures["prefill_32"]["outputs"]["logits"]["shape"] == [1, 1, VOCABULARY]
    report = json.loads(path.with_suffix(".json").read_text())
    assert report["generation"]["context_length"] == 96 and report["seq_len"] == 96
    assert report["recipe"]["mode"] == "fp32"


def test_cached_logits_equal_the_full_window(converted, model):
    result, path = converted
    assert result.check["max_abs_logit_error"] <= FP32_LOGIT_TOLERANCE and result.check["top1_agreement"] == 1.0
    ids = [int(i) for i in np.random.default_rng(4).integers(0, VOCABULARY, 70)]
    expected = _keras_logits(model, ids)
    generator = generation.Generator(path, threads=1)
    # 60 prompt tokens: two chunks of 32, the second padded; then decode, teacher-forced.
    logits = generator.prefill(ids[:60], context=96)
    assert np.max(np.abs(logits - expected[59])) <= FP32_LOGIT_TOLERANCE
    for position in range(60, 70):
        logits = generator.decode(ids[position], position, context=96)
        assert np.max(np.abs(logits - expected[position])) <= FP32_LOGIT_TOLERANCE
    # The shorter cache computes the same thing over fewer positions.
    logits = generator.prefill(ids[:40], context=48)
    assert np.max(np.abs(logits - expected[39])) <= FP32_LOGIT_TOLERANCE


def test_a_padded_chunk_at_the_end_of_the_context_lands_where_it_belongs(converted, model):
    _, path = converted
    ids = [int(i) for i in np.random.default_rng(5).integers(0, VOCABULARY, 95)]
    expected = _keras_logits(model, ids)
    generator = generation.Generator(path, threads=1)
    generator.prefill(ids[:80], context=96)
    # 15 tokens at positions 80-94 in a chunk of 32 run past position 96: DYNAMIC_UPDATE_SLICE clamps the write.
    logits = generator.prefill(ids[80:95], context=96, start=80)
    assert np.max(np.abs(logits - expected[94])) <= FP32_LOGIT_TOLERANCE


def test_greedy_generation_equals_keras_and_every_binding_agrees(converted, model):
    _, path = converted
    prompt = [3, 17, 42, 99, 7]
    expected = _keras_greedy(model, prompt, 24)
    # The margins between the two best tokens are far above the fp32 error: greedy equality is no luck.
    ids = prompt + expected
    logits = _keras_logits(model, ids)[len(prompt) - 1 : -1]
    top2 = np.sort(logits, axis=-1)[:, -2:]
    assert np.min(top2[:, 1] - top2[:, 0]) > 100 * FP32_LOGIT_TOLERANCE
    for binding in generation.CacheBinding:
        generator = generation.Generator(path, threads=1, binding=binding)
        result = generator.generate(prompt, max_new_tokens=24)
        assert list(result.tokens) == expected, binding
        assert result.context == 48 and result.stopped_by == "max_new_tokens"
        assert len(result.decode_seconds) == 23 and result.decode_tokens_per_second > 0


def test_sampling_is_seeded_and_stop_tokens_end_the_reply(converted):
    _, path = converted
    generator = generation.Generator(path, threads=1)
    sampling = generation.Sampling(temperature=1.5, top_k=50, top_p=0.95, seed=7)
    first = generator.generate([1, 2, 3], max_new_tokens=20, sampling=sampling)
    again = generator.generate([1, 2, 3], max_new_tokens=20, sampling=sampling)
    other = generator.generate([1, 2, 3], max_new_tokens=20, sampling=generation.Sampling(temperature=1.5, seed=8))
    assert first.tokens == again.tokens and first.tokens != other.tokens
    greedy = generator.generate([1, 2, 3], max_new_tokens=20)
    stop = greedy.tokens[4]
    stopped = generator.generate([1, 2, 3], max_new_tokens=20, stop_token_ids=[stop])
    assert stopped.tokens == greedy.tokens[: greedy.tokens.index(stop) + 1] and stopped.stopped_by == "stop token"
    streamed = []
    generator.generate([1, 2, 3], max_new_tokens=5, on_token=streamed.append)
    assert tuple(streamed) == greedy.tokens[:5]


def test_sampler_keeps_only_the_top_k_and_top_p_tokens():
    logits = np.log(np.asarray([0.5, 0.3, 0.15, 0.05]))
    drawn = {generation.Sampler(generation.Sampling(temperature=1.0, top_k=2, seed=s))(logits) for s in range(200)}
    assert drawn == {0, 1}
    drawn = {generation.Sampler(generation.Sampling(temperature=1.0, top_p=0.6, seed=s))(logits) for s in range(200)}
    assert drawn == {0, 1}
    with pytest.raises(ValueError, match="temperature must be at least 0"):
        generation.Sampling(temperature=-1)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        generation.Sampling(top_p=0)


def test_bad_requests_say_what_fits(converted):
    _, path = converted
    generator = generation.Generator(path, threads=1)
    with pytest.raises(ValueError, match="The prompt is empty"):
        generator.generate([], max_new_tokens=4)
    with pytest.raises(ValueError, match=r"Token id 512 is outside the vocabulary \[0, 512\)"):
        generator.generate([1, 512], max_new_tokens=4)
    with pytest.raises(ValueError, match="need 100 positions, but the model's context holds 96: at most 6 new tokens"):
        generator.generate(list(range(90)), max_new_tokens=10)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer of at least 1"):
        generator.generate([1], max_new_tokens=0)


def test_a_fixed_window_model_is_refused_by_the_generator_naming_the_option(tmp_path):
    path = tmp_path / "window.tflite"
    converter.convert_keras(tiny_gpt2_causal_lm(), "fp32", seq_len=16, output_path=path, progress=False)
    with pytest.raises(generation.NotAGenerationModelError, match=r"fixed-window model.*GENERATE=1"):
        generation.Generator(path)


def test_settings_left_out_take_the_defaults_that_fit_the_context():
    assert GenerationSettings().signature_names() == [
        "ctx256_prefill_32",
        "ctx256_prefill_128",
        "ctx256_decode",
        "prefill_32",
        "prefill_128",
        "decode",
    ]
    assert GenerationSettings(context_length=200).contexts == (200,)
    assert GenerationSettings(context_length=64).signature_names() == ["prefill_32", "decode"]
    assert GenerationSettings(context_length=16).prefill_lengths == (16,)
    # Given values are checked as they are, never trimmed.
    with pytest.raises(ValueError, match=r"smaller_contexts \(256,\) must be below context_length 128"):
        GenerationSettings(context_length=128, smaller_contexts=(256,))
    with pytest.raises(ValueError, match="A prefill chunk of 128 tokens does not fit a cache of 64"):
        GenerationSettings(context_length=64, prefill_lengths=(128,))


def test_what_cannot_have_generation_signatures_is_refused_before_tracing():
    import keras

    inputs = keras.Input((8,), dtype="int32")
    plain = keras.Model(inputs, keras.layers.Dense(VOCABULARY)(keras.layers.Embedding(VOCABULARY, 8)(inputs)))
    with pytest.raises(ValueError, match=r"keras-hub GPT2CausalLM or LlamaCausalLM.*without generation"):
        converter.convert_keras(plain, "fp32", generation=True, progress=False)
    with pytest.raises(ValueError, match="context_length 100 is above what the model supports: .* 64 entries"):
        converter.convert_keras(
            tiny_gpt2_causal_lm(),
            "fp32",
            generation=GenerationSettings(context_length=100, prefill_lengths=(8,), smaller_contexts=()),
            progress=False,
        )
    with pytest.raises(ValueError, match="mode int8 needs its calibration passes run per signature"):
        converter.convert_keras(tiny_gpt2_causal_lm(), "int8", generation=True, calibration=np.zeros((2, 8), int))
    with pytest.raises(ValueError, match="seq_len is the fixed window's length"):
        converter.convert_keras(tiny_gpt2_causal_lm(), "fp32", generation=True, seq_len=16)
    with pytest.raises(ValueError, match="does not fit a cache of 48 positions"):
        GenerationSettings(context_length=96, prefill_lengths=(64,), smaller_contexts=(48,))


def _constant_bytes(model_bytes):
    from converter import tflite_file

    return sum(len(b.data) for b in tflite_file.load_model_object(model_bytes).buffers if b.data is not None)


def test_weights_are_stored_once_whatever_the_number_of_signatures(model, converted):
    result, _ = converted
    one = converter.convert_keras(
        model,
        "fp32",
        progress=False,
        generation=GenerationSettings(context_length=96, prefill_lengths=(8,), smaller_contexts=()),
    )
    # Six signatures against two share every weight buffer: the constants grow by a few shape vectors only.
    weights = sum(np.prod(v.shape) * 4 for v in model.weights)
    assert _constant_bytes(one.model) >= 0.9 * weights
    assert _constant_bytes(result.model) - _constant_bytes(one.model) < 0.02 * weights


def test_fp16_and_dynamic_generation_stay_close_to_keras(model):
    fp32 = converter.convert_keras(model, "fp32", generation=SETTINGS, progress=False)
    fp16 = converter.convert_keras(model, "fp16", generation=SETTINGS, progress=False)
    dynamic = converter.convert_keras(model, "dynamic", generation=SETTINGS, progress=False)
    # RMS logit error over the logits' spread (not argmax counts, which are rounding luck on random weights):
    # fp16 weights round to 11 bits (measured 5e-4 of the spread), int8 weights and per-row int8 activations
    # to 8 bits (measured 0.017 on both families).
    assert fp16.check["rms_logit_error"] < 0.002 * fp16.check["logit_std"]
    assert dynamic.check["rms_logit_error"] < 0.05 * dynamic.check["logit_std"]
    # int8 weight matrices: a quarter of their bytes; biases, norms and GPT-2's position table stay float
    # (0.32 of the constants here, 0.25 for Llama). The files also hold six signatures' graphs.
    assert _constant_bytes(dynamic.model) < 0.35 * _constant_bytes(fp32.model)
    assert _constant_bytes(fp16.model) < 0.55 * _constant_bytes(fp32.model)


def test_the_generation_benchmark_measures_prefill_decode_memory_and_roofline(converted, tmp_path):
    _, path = converted
    measured = generation_bench.benchmark_generation(
        path,
        threads=1,
        prompt_lengths=(16, 40),
        new_tokens=12,
        fills=(4, 60),
        repeats=1,
        progress=False,
        model_name="tiny",
        variant="fp32",
    )
    assert set(measured.prefill_tokens_per_second) == {"16", "40"}
    assert measured.decode_tokens_per_second.median > 0 and measured.decode_context == 48
    assert set(measured.decode_ms_by_fill) == {"4", "60"}
    roofline = measured.roofline
    assert roofline["weight_bytes_per_step"] > 0.5 * path.stat().st_size  # a decode step reads (nearly) every weight
    assert roofline["cache_bytes_per_step"] == measured.cache_bytes > 0 and roofline["efficiency"] > 0
    assert measured.machine.vector_features is not None and measured.peak_rss_bytes > 0
    saved = measured.save(tmp_path)
    data = json.loads(saved.read_text())
    assert data["schema"] == generation_bench.SCHEMA and data["new_tokens"] == 12
    with pytest.raises(ValueError, match="do not fit the model's context of 96"):
        generation_bench.benchmark_generation(path, threads=1, prompt_lengths=(200,), progress=False)


def test_text_in_and_out_through_the_exported_tokenizer(family, tmp_path):
    from converter.deploy import device_tokenizer

    from helpers import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    size = tokenizer.vocabulary_size()
    if family == "gpt2":
        model = peaked(tiny_gpt2_causal_lm(hidden_dim=64, max_sequence_length=128, vocabulary_size=size))
    else:
        model = peaked(tiny_llama_causal_lm(vocabulary_size=size))
    path = tmp_path / f"{family}_generate.tflite"
    converter.convert_keras(model, "fp32", generation=SETTINGS, output_path=path, progress=False)
    device_tokenizer.export_device_tokenizer(tokenizer, name=path.stem).save(tmp_path)
    prompt = "The for statement is used to"
    ids = [int(i) for i in np.asarray(tokenizer(prompt))]
    expected = generation.Generator(path, threads=1).generate(ids, max_new_tokens=12)
    streamed = []
    reply = generation.generate_text(
        path, prompt, max_new_tokens=12, threads=1, stop_token_ids=[], on_text=streamed.append
    )
    assert reply.generation.tokens == expected.tokens
    assert reply.text == "".join(streamed) == tokenizer.detokenize(np.asarray(expected.tokens))
    with pytest.raises(FileNotFoundError, match="No tokenizer at .* `make convert GENERATE=1`"):
        generation.generate_text(path, prompt, tokenizer=tmp_path / "missing.tokenizer_spec.json")


@pytest.mark.large
def test_the_generate_cli_converts_a_missing_model_then_prints_the_reply_and_speeds(tmp_path):
    import subprocess
    import sys

    from helpers import tiny_gpt2_preset

    preset = tiny_gpt2_preset(tmp_path / "gen-preset", max_sequence_length=64)
    command = [sys.executable, "-m", "converter.cli.generate", f"--model={preset}", f"--build_dir={tmp_path}"]
    prompt = "The for statement"
    completed = subprocess.run(
        [*command, "--mode=fp32", f"--prompt={prompt}", "--max_new_tokens=4", "--context_length=32"],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # The conversion's one-line summary comes first, then the prompt with its continuation, then the speeds.
    assert (
        f"\n{prompt}" in completed.stdout and "[generate] gen-preset_fp32_generate.tflite: prompt" in completed.stdout
    )
    assert (tmp_path / "gen-preset" / "gen-preset_fp32_generate.tokenizer_spec.json").is_file()
    refused = subprocess.run(
        [*command, "--mode=fp32", "--prompt=x", "--max_new_tokens=40"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "but the model's context holds 32" in refused.stderr
