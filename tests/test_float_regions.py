"""Float regions in quantized LMs: the residual stream and norm statistics found by pattern and run in float."""

import numpy as np
import pytest

from helpers import SEQ_LEN, random_windows, run_tflite, tiny_gpt2_causal_lm, tiny_llama_causal_lm


def _reads_float(inspected, op) -> bool:
    return inspected.tensors[op.inputs[0]].dtype == "float32"


@pytest.mark.parametrize("family, mode", [("gpt2", "int8"), ("llama", "int16x8")])
def test_residual_stream_and_norm_statistics_run_in_float_and_the_model_stays_close(family, mode):
    import converter
    from converter.tflite_file import inspection

    model = tiny_gpt2_causal_lm() if family == "gpt2" else tiny_llama_causal_lm()
    windows = random_windows(seq_len=SEQ_LEN)
    stock = converter.convert_keras(
        model,
        mode,
        calibration=windows,
        seq_len=SEQ_LEN,
        progress=False,
        float_residual_stream=False,
        measured_ranges=True,
    )
    floated = converter.convert_keras(
        model,
        mode,
        calibration=windows,
        seq_len=SEQ_LEN,
        progress=False,
        float_residual_stream=True,
        measured_ranges=True,
    )
    summary = [c for c in floated.graph_changes if c.startswith("residual stream and norm statistics run in float")]
    assert len(summary) == 1 and "RSQRT" in summary[0] and "MEAN" in summary[0], floated.graph_changes
    inspected = inspection.inspect_model(floated.model)
    # Two norms per layer and a final one, every one of them in float.
    assert [_reads_float(inspected, op) for op in inspected.ops_of_type("RSQRT")] == [True] * 5
    if family == "llama":
        squares = [op for op in inspected.ops_of_type("MUL") if op.inputs[0] == op.inputs[1]]
        assert len(squares) == 5 and all(_reads_float(inspected, op) for op in squares)
    # The projections stay quantized: only the stream and the norms changed.
    assert {inspected.tensors[op.inputs[0]].dtype for op in inspected.ops_of_type("FULLY_CONNECTED")} == {
        "int8" if mode == "int8" else "int16"
    }
    # The error relative to the logits, not argmax counts: on a random model most positions' top-1 margins
    # are below the quantization error (docs/2026-12-01-tests-on-any-cpu.md). Measured ratios 0.90 (GPT-2) and
    # 1.00 (Llama) on x86 AVX-512, AVX2 and ARM; one projection's weight scale off by 1.25 gives 2.2-8.2.
    assert floated.check["rms_logit_error"] <= 1.25 * stock.check["rms_logit_error"]
    assert floated.check["max_abs_logit_error"] <= 1.5 * stock.check["max_abs_logit_error"] + 1e-3
    feed = {"token_ids": windows.token_ids[:1]}
    assert np.all(np.isfinite(run_tflite(floated.model, feed)))


def test_a_model_without_norms_is_left_unchanged():
    from converter.passes import float_regions
    from converter.tflite_file import inspection, writing

    schema = inspection.schema()
    model_object = schema.ModelT()
    model_object.version = 3
    model_object.buffers = [schema.BufferT()]
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.inputs, subgraph.outputs = [], [], [], []
    model_object.subgraphs, model_object.operatorCodes = [subgraph], []
    model = writing.pack(model_object)
    result = float_regions.run_residual_and_norms_in_float(model)
    assert result.model == model and result.changes == ()
