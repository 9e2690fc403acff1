"""Quantization debugging: a broken layer ranks first, reports are written whole, bad input is refused."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from helpers import SEQ_LEN, random_windows, tiny_gpt2_causal_lm

REPO = pathlib.Path(__file__).resolve().parents[1]
# The debugger reads .tflite files only: importing TensorFlow in its process fails the test.
_BLOCK_TENSORFLOW = """
import importlib.abc, runpy, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "keras_hub", "tf_keras"):
            raise ImportError(f"{name} is not available here")
        return None
sys.meta_path.insert(0, _NoTensorFlow())
sys.argv = ["converter.cli.debug", *sys.argv[1:]]
runpy.run_module("converter.cli.debug", run_name="__main__", alter_sys=True)
"""
# Small enough for seconds per report, large enough to rank the broken op.
_FAST = dict(max_windows=3, share_candidates=4, share_windows=2, op_type_shares=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny random GPT-2 in fp32 and int8, its windows, and the folder holding them."""
    import converter
    import representative_data

    folder = tmp_path_factory.mktemp("debug")
    model = tiny_gpt2_causal_lm()
    windows = random_windows(seq_len=SEQ_LEN)
    paths = {"folder": folder, "windows": folder / f"tiny_seq{SEQ_LEN}_evaluation.npz"}
    representative_data.save_windows(random_windows(num_windows=4, seq_len=SEQ_LEN, seed=1), paths["windows"])
    for mode in ("fp32", "int8"):
        paths[mode] = folder / f"tiny_{mode}.tflite"
        # The strict all-int8 graph (every tensor between ops quantized), which these tests take apart.
        converter.convert_keras(
            model,
            mode,
            calibration=windows if mode == "int8" else None,
            seq_len=SEQ_LEN,
            output_path=paths[mode],
            progress=False,
            float_residual_stream=False,
            keep_float=(),
        )
    return paths


def _corrupted(path: pathlib.Path, how: str) -> tuple[bytes, int]:
    """The int8 model with one mid-graph FULLY_CONNECTED broken; returns it and the op's index."""
    from converter.tflite_file import inspection, writing

    model_object = inspection.load_model_object(path)
    subgraph = model_object.subgraphs[0]
    kinds = [inspection.op_type_name(model_object, op.opcodeIndex) for op in subgraph.operators]
    residual_adds = {t for op, kind in zip(subgraph.operators, kinds) if kind == "ADD" for t in op.inputs}
    # An FC that writes into the residual stream: in a random-weight model, breaking a key or
    # query projection changes little (attention is near uniform anyway).
    fully_connected = [
        index
        for index, (op, kind) in enumerate(zip(subgraph.operators, kinds))
        if kind == "FULLY_CONNECTED" and op.outputs[0] in residual_adds
    ]
    index = fully_connected[len(fully_connected) // 2]
    op = subgraph.operators[index]
    if how == "weights":
        buffer = model_object.buffers[subgraph.tensors[op.inputs[1]].buffer]
        weights = np.frombuffer(bytes(buffer.data), np.int8)
        buffer.data = np.clip(-weights.astype(np.int16), -127, 127).astype(np.int8).view(np.uint8)
    else:  # the output scale: most values now clip
        quantization = subgraph.tensors[op.outputs[0]].quantization
        quantization.scale = np.asarray(quantization.scale, np.float32) * 0.05
    return writing.pack(model_object), index


@pytest.mark.parametrize("how", ["weights", "output_scale"])
def test_a_broken_fully_connected_ranks_first(models, how):
    from converter.tools import quant_debug

    broken, index = _corrupted(models["int8"], how)
    report = quant_debug.debug_quantization(models["fp32"], broken, models["windows"], **_FAST)
    worst = report.tensors[0]
    assert (worst.op, worst.op_index) == ("FULLY_CONNECTED", index), report.tensors[:3]
    assert worst.output_error_share > 0.5 and worst.local_relative_rmse > 0.5
    healthy = quant_debug.debug_quantization(models["fp32"], models["int8"], models["windows"], **_FAST)
    assert report.logits.rmse > 2 * healthy.logits.rmse


def test_every_quantized_tensor_is_listed_with_its_scale_and_errors(models):
    from converter.tflite_file import inspection
    from converter.tools import quant_debug

    report = quant_debug.debug_quantization(
        models["fp32"], models["int8"], models["windows"], max_windows=2, share_candidates=2, share_windows=1
    )
    quantized = {
        t.index for t in inspection.inspect_model(models["int8"]).tensors if not t.is_constant and t.dtype == "int8"
    }
    assert {t.index for t in report.tensors} == quantized
    assert report.activation_dtype == "int8" and report.windows == 2 and report.share_windows == 1
    measured = [t for t in report.tensors if t.output_error_share is not None]
    assert 1 <= len(measured) <= 2 and report.tensors[: len(measured)] == tuple(measured)
    fully_connected = next(t for t in report.tensors if t.op == "FULLY_CONNECTED")
    # A well-scaled int8 op alone is off by about rounding: a fraction of a step, a few per cent of its signal.
    assert fully_connected.local_rmse_over_scale < 1.0 and fully_connected.local_relative_rmse < 0.2
    assert all(t.scale > 0 and t.accumulated_relative_rmse is not None for t in report.tensors)
    assert {row.op for row in report.op_types} >= {"FULLY_CONNECTED", "SOFTMAX"}
    assert all(row.output_error_share is not None for row in report.op_types if row.op != "QUANTIZE")
    # Logit error relative to the float logits (0.05 measured; a broken output scale gives 0.35).
    assert 0 < report.logits.rmse < 0.1 * report.logits.reference_std


def test_the_default_int8_conversion_with_float_regions_is_reported_too(models, tmp_path):
    """`make debug` reads the default conversion, whose residual stream and norm statistics are float."""
    import converter
    from converter.tools import quant_debug

    model, windows = tiny_gpt2_causal_lm(), random_windows(seq_len=SEQ_LEN)
    float_model = converter.convert_keras(
        model, "fp32", seq_len=SEQ_LEN, output_path=tmp_path / "fp32.tflite", progress=False
    )
    default = converter.convert_keras(
        model,
        "int8",
        calibration=windows,
        seq_len=SEQ_LEN,
        output_path=tmp_path / "default_int8.tflite",
        progress=False,
    )
    assert default.float_ops.get("ADD", 0) > 0
    report = quant_debug.debug_quantization(
        float_model.path, default.path, models["windows"], max_windows=2, share_candidates=2, share_windows=1
    )
    assert report.activation_dtype == "int8"
    listed = {t.op for t in report.tensors}
    # The default recipe keeps the norms' statistics and SOFTMAX in float: they are not quantized tensors.
    assert {"FULLY_CONNECTED", "BATCH_MATMUL"} <= listed and not {"RSQRT", "SOFTMAX"} & listed
    assert sum(t.output_error_share is not None for t in report.tensors) == 2
    # Logit error relative to the float logits (0.05 measured; a broken output scale gives 0.35).
    assert 0 < report.logits.rmse < 0.1 * report.logits.reference_std


def test_reports_are_written_whole_and_not_overwritten_unasked(models, tmp_path, monkeypatch):
    from converter.tools import quant_debug

    report = quant_debug.debug_quantization(
        models["fp32"], models["int8"], models["windows"], max_windows=1, share_candidates=0, op_type_shares=False
    )
    json_path, markdown_path = tmp_path / "out" / "r.json", tmp_path / "out" / "r.md"
    report.save(json_path)
    data = json.loads(json_path.read_text())
    assert len(data["tensors"]) == len(report.tensors) and data["logits"]["positions"] == SEQ_LEN
    markdown = markdown_path.read_text()
    assert markdown.startswith("# Quantization error report") and markdown.count("| FULLY_CONNECTED #") > 0
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["r.json", "r.md"]  # no temporary files left
    with pytest.raises(FileExistsError, match="overwrite=True"):
        report.save(json_path)

    def fail(self):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(quant_debug.QuantDebugReport, "to_markdown", fail)
    with pytest.raises(RuntimeError):
        report.save(tmp_path / "other.json")
    assert not list(tmp_path.glob("other*")) and not list(tmp_path.glob(".other*"))
    json_before = json_path.read_text()
    with pytest.raises(RuntimeError):
        report.save(json_path, overwrite=True)
    assert json_path.read_text() == json_before


def test_bad_input_is_refused_with_a_message(models, tmp_path):
    import converter
    from converter.tools import quant_debug

    with pytest.raises(FileNotFoundError, match="No quantized model"):
        quant_debug.debug_quantization(models["fp32"], tmp_path / "missing.tflite", models["windows"])
    with pytest.raises(ValueError, match="seq_len 16 but 32 is expected"):
        quant_debug.debug_quantization(models["fp32"], models["int8"], random_windows(seq_len=16))
    with pytest.raises(ValueError, match="nothing to debug"):
        quant_debug.debug_quantization(models["fp32"], models["fp32"], models["windows"])
    other = tmp_path / "other_fp32.tflite"
    converter.convert_keras(
        tiny_gpt2_causal_lm(hidden_dim=64), "fp32", seq_len=SEQ_LEN, output_path=other, progress=False
    )
    with pytest.raises(ValueError, match="not the same graph"):
        quant_debug.debug_quantization(other, models["int8"], models["windows"])
    with pytest.raises(ValueError, match="max_windows"):
        quant_debug.debug_quantization(models["fp32"], models["int8"], models["windows"], max_windows=0)


def _cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_TENSORFLOW, *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )


def test_cli_writes_both_reports_without_tensorflow_and_refuses_bad_input(models, tmp_path):
    out = tmp_path / "reports"
    common = [
        f"--model={models['int8']}",
        "--mode=int8",
        "--max_windows=1",
        "--share_candidates=1",
        "--share_windows=1",
        f"--out_dir={out}",
    ]
    completed = _cli(*common)
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in out.iterdir()) == ["tiny_int8_debug.json", "tiny_int8_debug.md"]
    assert "top-1 agreement with fp32" in completed.stdout
    again = _cli(*common)
    assert again.returncode == 2 and again.stderr.startswith("error:") and "overwrite" in again.stderr
    missing = _cli("--model=nowhere-lm", "--mode=int8", f"--build_dir={tmp_path}")
    assert missing.returncode == 2 and "error: No quantized model" in missing.stderr
    assert "make convert MODEL=nowhere-lm MODE=int8" in missing.stderr
    dynamic = _cli(f"--model={models['int8']}", "--mode=dynamic")
    assert dynamic.returncode == 2 and "int8 or int16x8" in dynamic.stderr


def test_make_debug_runs_the_debugger_and_is_in_help():
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    dry = subprocess.run(
        ["make", "-n", "debug", "MODEL=tiny-gpt2", "MODE=int16x8"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "-m converter.cli.debug --model=tiny-gpt2 --mode=int16x8" in dry.stdout, dry.stderr
    help_text = subprocess.run(["make", "help"], cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert "make debug" in help_text.stdout


def test_every_op_made_exact_gives_back_the_float_models_logits(models):
    """The rewrite behind the shares (converter.float_regions) swaps in the float model's ops faithfully."""
    from converter.passes import float_regions
    from converter.tflite_file import inspection, writing
    from converter.tools import quant_debug

    from helpers import run_tflite

    quantized, float_ = inspection.inspect_model(models["int8"]), inspection.inspect_model(models["fp32"])
    mapping, _ = quant_debug._reference_map(quantized, float_)  # pylint: disable=protected-access
    float_producer = {t: op for op in float_.ops for t in op.outputs}
    exact = {}
    for op in quantized.ops:
        twin = float_producer.get(mapping.get(op.outputs[0]))
        if twin is not None and twin.op == op.op:
            exact[op.index] = twin.index
    model_object = inspection.load_model_object(models["int8"])
    notes = float_regions.run_region_in_float(
        model_object,
        range(len(quantized.ops)),
        exact=exact,
        float_object=inspection.load_model_object(models["fp32"]),
        float_to_quantized=quant_debug.float_to_quantized(quantized, float_, mapping),
    )
    assert notes == []
    rewritten = writing.pack(model_object)
    feed = {"token_ids": random_windows(seq_len=SEQ_LEN, seed=3).token_ids[:1]}
    expected, stock, actual = (
        run_tflite(m, feed) for m in (models["fp32"].read_bytes(), models["int8"].read_bytes(), rewritten)
    )
    # Only the logits' own int8 rounding is left: the last op writes them back into their int8 tensor.
    logits_scale = quantized.tensors[quantized.ops[-1].inputs[0]].quantization.scale[0]
    assert np.max(np.abs(actual - expected)) <= 0.51 * logits_scale + 1e-5
    assert np.max(np.abs(stock - expected)) > 2 * logits_scale
    assert "FULLY_CONNECTED" in {
        op.op
        for op in inspection.inspect_model(rewritten).ops
        if inspection.inspect_model(rewritten).tensors[op.inputs[0]].dtype == "float32"
    }
