"""Mode int4: int4 weights written by ai-edge-quantizer, GPTQ values, what the file holds and what XNNPACK runs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import converter
from converter.passes import int4

from helpers import (
    SEQ_LEN,
    peaked,
    random_windows,
    run_tflite,
    tiny_gpt2_causal_lm,
    tiny_gpt2_preset,
    tiny_llama_causal_lm,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_recipe_names_carry_block_size_method_and_int8_groups():
    per_channel = converter.Recipe("int4")
    assert (per_channel.int4_block_size, per_channel.int4_method, per_channel.keep_int8) == (0, "gptq", ())
    assert per_channel.uses_calibration and not per_channel.mode.needs_calibration
    mixed = converter.Recipe.parse("int4-b32+attention+logits")
    assert mixed.int4_options == int4.Int4Options(block_size=32, method="gptq", int8=("attention", "logits"))
    assert converter.Recipe.from_dict(json.loads(mixed.to_json())) == mixed
    rtn = converter.Recipe.parse("int4-b128-rtn")
    assert rtn.name == "int4-b128-rtn" and not rtn.uses_calibration
    # Other modes neither state nor accept int4 settings.
    assert "int4_block_size" not in converter.Recipe("dynamic").to_dict()
    with pytest.raises(ValueError, match=r"\['int4_block_size'\] apply to mode int4 only, not dynamic"):
        converter.Recipe("dynamic", int4_block_size=32)
    with pytest.raises(ValueError, match="block size 48 is not one LiteRT stores: use one of 32, 64, 128, 256"):
        converter.Recipe.parse("int4-b48")
    with pytest.raises(ValueError, match=r"int8 choice\(s\) \['softmax'\] unknown in int4 recipes"):
        converter.Recipe.parse("int4-b32+softmax")


def test_int4_packing_round_trips_with_the_low_nibble_first():
    values = np.array([[-8, 7, 0, -1, 3]], np.int8)
    packed = int4.pack_int4(values)
    assert packed[0] == (0x8 | (0x7 << 4)) and len(packed) == 3
    np.testing.assert_array_equal(int4.unpack_int4(packed, values.shape), values)


def test_gptq_lowers_the_output_error_that_rounding_leaves():
    rng = np.random.default_rng(0)
    # Correlated inputs with a few strong channels, as in an LM's FULLY_CONNECTED inputs.
    mixing = rng.normal(size=(96, 96)) * np.linspace(3, 0.2, 96)
    x = rng.normal(size=(2048, 96)) @ mixing
    hessian = (x.T @ x / len(x)).astype(np.float32)
    weight = rng.normal(0, 0.05, size=(64, 96)).astype(np.float32)

    def output_error(values, scales):
        error = int4.dequantize(values, scales, 32) - weight
        return np.einsum("oi,ij,oj->", error, hessian, error)

    scales = int4.clipped_scales(weight, 32)
    assert scales.shape == (64, 3)
    rounded = np.clip(np.rint(weight / np.repeat(scales, 32, axis=1)), -8, 7).astype(np.int8)
    solved = int4.gptq(weight, hessian, scales, block_size=32)
    assert solved.dtype == np.int8 and solved.min() >= -8 and solved.max() <= 7
    assert output_error(solved, scales) < 0.5 * output_error(rounded, scales)
    # The clip search never loses to max|w| / 7 on its own objective (diagonal-weighted rounding error).
    diagonal = np.diag(hessian)
    for block in (0, 32):
        plain = int4.clipped_scales(weight, block, None)  # unweighted search
        best = int4.clipped_scales(weight, block, diagonal)
        peak = np.abs(weight).reshape(64, -1, block or 96).max(-1) / 7
        for chosen in (best, plain):
            assert chosen.size == peak.size and np.all(chosen <= peak.reshape(chosen.shape) * 1.01)

        def weighted(scales, block=block):
            columns = np.repeat(scales.reshape(64, -1), block or 96, axis=1)
            values = np.clip(np.rint(weight / columns), -8, 7)
            return float((((values * columns - weight) ** 2) * diagonal).sum())

        assert weighted(best) <= weighted(peak) + 1e-9


@pytest.fixture(scope="module")
def llama():
    """(model, windows, fp32 bytes, int4-b32 result, int4-b32-rtn result) of a peaked tiny Llama."""
    model = peaked(tiny_llama_causal_lm())
    windows = random_windows(num_windows=24)
    fp32 = converter.convert_keras(model, "fp32", seq_len=SEQ_LEN, progress=False)
    gptq = converter.convert_keras(model, "int4-b32", calibration=windows, seq_len=SEQ_LEN, progress=False)
    rtn = converter.convert_keras(model, "int4-b32-rtn", seq_len=SEQ_LEN, progress=False)
    return model, windows, fp32.model, gptq, rtn


def test_every_weight_is_int4_with_the_promised_blocks_and_gptq_values(llama):
    _, windows, fp32, gptq, rtn = llama
    tensors = int4.int4_tensors(gptq.model)
    float_weights = int4.fully_connected_weights(fp32)
    # 2 layers x (q, k, v, o, gate, up, down) + the lm head, and the token table.
    assert sorted(t.op for t in tensors).count("FULLY_CONNECTED") == 2 * 7 + 1 == len(float_weights)
    assert [t.op for t in tensors].count("EMBEDDING_LOOKUP") == 1
    for tensor in tensors:
        values, scales = int4.read_int4(gptq.model, tensor)
        assert tensor.block_size == 32 and scales.shape == (tensor.shape[0], tensor.shape[1] // 32)
        assert values.min() >= -8 and values.max() <= 7
    assert gptq.op_histogram.get("GATHER", 0) == 0 and "EMBEDDING_LOOKUP" in gptq.op_histogram
    assert gptq.size_bytes < 0.25 * len(fp32)
    assert any("GPTQ int4 values" in change for change in gptq.graph_changes)
    assert not any("GPTQ" in change for change in rtn.graph_changes)
    # Same layout, other values: GPTQ changed the int4 integers AEQ's rounding chose.
    changed = [
        not np.array_equal(int4.read_int4(gptq.model, a)[0], int4.read_int4(rtn.model, b)[0])
        for a, b in zip(int4.int4_tensors(gptq.model), int4.int4_tensors(rtn.model), strict=True)
        if a.op == "FULLY_CONNECTED"
    ]
    assert all(changed)
    assert gptq.size_bytes == rtn.size_bytes


def test_gptq_int4_is_closer_to_fp32_than_rounding_on_held_out_windows(llama):
    _, _, fp32, gptq, rtn = llama
    held_out = random_windows(num_windows=6, seed=7)
    errors = {"gptq": [], "rtn": []}
    for ids in held_out.token_ids:
        feed = {"token_ids": ids[None]}
        reference = run_tflite(fp32, feed)
        for name, result in (("gptq", gptq), ("rtn", rtn)):
            errors[name].append(float(np.sqrt(np.mean((run_tflite(result.model, feed) - reference) ** 2))))
    # Measured: 0.65 against 0.75 (0.86x), every window closer. Weight rounding dominates the error here
    # (both share the same on-the-fly activation quantization), so this holds on any CPU's kernels.
    assert all(g < r for g, r in zip(errors["gptq"], errors["rtn"], strict=True)), errors
    assert np.mean(errors["gptq"]) < 0.95 * np.mean(errors["rtn"]), errors


def test_xnnpack_takes_every_int4_fully_connected(llama, tmp_path):
    from benchmarks import op_profile

    _, _, _, gptq, _ = llama
    path = tmp_path / "int4.tflite"
    path.write_bytes(gptq.model)
    timings = op_profile.profile_ops(path, runs=2, warmup_runs=1, progress=False)
    fully_connected = [t for t in timings if t.op == "FULLY_CONNECTED"]
    assert len(fully_connected) == 15 and all(t.delegated for t in fully_connected), fully_connected
    assert all("INT4" in t.input_dtypes for t in fully_connected)


def test_int8_groups_keep_those_weights_int8(llama):
    model, windows, _, _, _ = llama
    mixed = converter.convert_keras(
        model, "int4-b32+attention+embedding", calibration=windows, seq_len=SEQ_LEN, progress=False
    )
    kinds = [t.op for t in int4.int4_tensors(mixed.model)]
    assert kinds == ["FULLY_CONNECTED"] * (2 * 3 + 1)  # gate, up, down per layer and the lm head
    assert "attention int8 (8 ops)" in " ".join(mixed.graph_changes)


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    model = tiny_llama_causal_lm()
    out = tmp_path / "m_int4.tflite"
    with pytest.raises(ValueError, match="GPTQ on calibration windows and needs calibration data.*int4-b32-rtn"):
        converter.convert_keras(model, "int4-b32", seq_len=SEQ_LEN, output_path=out, progress=False)
    # hidden 64: a block of 128 does not divide the q/k/v/gate/up inputs.
    with pytest.raises(ValueError, match=r"block size 128 does not divide the model's hidden_dim 64.*\(32, 64\)"):
        converter.convert_keras(model, "int4-b128-rtn", seq_len=SEQ_LEN, output_path=out, progress=False)
    # A model without keras-hub's widths is checked on its fp32 flatbuffer, before ai-edge-quantizer runs.
    fp32 = converter.convert_keras(model, "fp32", seq_len=SEQ_LEN, progress=False).model
    with pytest.raises(ValueError, match=r"block size 128 does not divide the 64 input channels of '.*'"):
        int4.quantize(fp32, int4.Int4Options(block_size=128, method="rtn"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="Not a TFLite model"):
        int4.quantize(b"not a model at all", int4.Int4Options(method="rtn"))


def test_cli_writes_the_block_size_into_the_file_name(tmp_path):
    import representative_data

    preset = tiny_gpt2_preset(tmp_path / "tiny-lm")
    calibration = representative_data.save_windows(
        random_windows(num_windows=12, seq_len=16, vocabulary_size=300), tmp_path / "windows.npz"
    )
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "converter",
            f"--model={preset}",
            "--mode=int4-b32",
            f"--calibration={calibration}",
            f"--build_dir={tmp_path}",
            "--seq_len=16",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    written = tmp_path / "tiny-lm" / "tiny-lm_int4-b32.tflite"
    assert written.is_file() and "int4-b32" in completed.stdout
    report = json.loads(written.with_suffix(".json").read_text())
    assert report["recipe"]["int4_block_size"] == 32 and report["mode"] == "int4"
    assert report["op_histogram"]["EMBEDDING_LOOKUP"]["count"] >= 1


def test_a_tied_gpt2_table_is_solved_as_the_lm_head_it_also_is():
    model = peaked(tiny_gpt2_causal_lm())
    result = converter.convert_keras(
        model, "int4-b32", calibration=random_windows(num_windows=40), seq_len=SEQ_LEN, progress=False
    )
    tensors = int4.int4_tensors(result.model)
    # 2 layers x (q, k, v, o, in, out) and the token table, which the lm head reads too: one buffer, solved
    # by GPTQ as the lm head. (The fixed window's position table is folded into a constant.)
    assert [t.op for t in tensors] == ["FULLY_CONNECTED"] * 13
    assert result.op_histogram["EMBEDDING_LOOKUP"]["count"] == 1
    # 40 windows x 32 positions: enough rows for a Hessian of every input, the 512-wide MLP output's too.
    assert "13 weights (0 without a Hessian rounded)" in " ".join(result.graph_changes)


def test_generation_signatures_share_one_set_of_int4_weights_solved_on_a_prefill(llama, tmp_path):
    from benchmarks import generation

    model, windows, _, _, _ = llama
    settings = converter.GenerationSettings(context_length=64)
    path = tmp_path / "llama_int4-b32_generate.tflite"
    gptq = converter.convert_keras(
        model, "int4-b32", generation=settings, calibration=windows, output_path=path, progress=False
    )
    rtn = converter.convert_keras(model, "int4-b32-rtn", generation=settings, progress=False)
    tensors = int4.int4_tensors(gptq.model)
    # prefill_32 and decode read the same 15 int4 FULLY_CONNECTED buffers and the int4 table.
    assert [t.op for t in tensors].count("FULLY_CONNECTED") == 15
    assert all({s for s, _ in t.names} == {0, 1} for t in tensors), [t.names for t in tensors]
    # Every FULLY_CONNECTED solved with a Hessian from the fixed-window model (a prefill's last layer and lm head
    # see one position); only the token table, which has none, is rounded.
    assert "15 weights (1 without a Hessian rounded)" in " ".join(gptq.graph_changes), gptq.graph_changes
    assert gptq.check["rms_logit_error"] < rtn.check["rms_logit_error"]
    reply = generation.Generator(path, threads=1).generate([1, 2, 3, 4], max_new_tokens=6)
    assert len(reply.tokens) == 6


def test_auto_measures_int4_recipes_and_picks_the_smallest_within_the_budget(llama):
    from converter.tools import auto

    model, windows, _, _, _ = llama
    held_out = random_windows(num_windows=4, seed=9)
    candidates = ["dynamic", "int4-b32", "int4-b64"]
    loose = auto.auto_convert(
        model,
        max_ppl_increase="1000%",
        calibration=windows,
        evaluation=held_out,
        candidates=candidates,
        threads=1,
        eval_windows=4,
        seq_len=SEQ_LEN,
        progress=False,
    )
    by_name = {t.name: t for t in loose.trials}
    assert set(by_name) >= {"int4-b32", "int4-b64"} and by_name["int4-b64"].size_bytes < by_name["int4-b32"].size_bytes
    assert loose.chosen == "int4-b64" and loose.recipe == converter.Recipe.parse("int4-b64")
    # Each int4 candidate is its own conversion, measured on the held-out windows.
    assert all(by_name[n].perplexity is not None and by_name[n].error is None for n in ("int4-b32", "int4-b64"))
    assert by_name["int4-b32"].perplexity != by_name["int4-b64"].perplexity
