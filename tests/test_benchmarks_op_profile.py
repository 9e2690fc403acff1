"""Per-op profile: every op cut out, run alone in LiteRT, and its XNNPACK placement recorded."""

from ai_edge_litert import interpreter as litert

from benchmarks import op_profile


def test_every_op_is_timed_alone_and_the_float_matmuls_run_in_xnnpack(converted_tiny_lm):
    timings = op_profile.profile_ops(converted_tiny_lm["fp32"], runs=2, warmup_runs=0, progress=False)
    interpreter = litert.Interpreter(model_path=str(converted_tiny_lm["fp32"]))
    interpreter.allocate_tensors()
    nodes = [node for node in interpreter._get_ops_details() if node["op_name"] != "DELEGATE"]
    assert [t.op for t in timings] == [node["op_name"] for node in nodes]
    assert all(t.median_ms is not None and t.median_ms >= 0 for t in timings), [t for t in timings if t.note]
    fully_connected = [t for t in timings if t.op == "FULLY_CONNECTED"]
    assert fully_connected and all(t.delegated and t.input_dtypes[0] == "FLOAT32" for t in fully_connected)
    table = op_profile.summarize_by_op(timings)
    assert "| FULLY_CONNECTED | FLOAT32→FLOAT32 |" in table and table.startswith("Sum of ops alone:")


def test_dynamic_model_ops_keep_their_int8_weights(converted_tiny_lm):
    timings = op_profile.profile_ops(converted_tiny_lm["dynamic"], runs=1, warmup_runs=0, progress=False)
    fully_connected = [t for t in timings if t.op == "FULLY_CONNECTED"]
    # Activations float, weights int8: the cut-out model carried the weights over.
    assert all(t.input_dtypes[:2] == ("FLOAT32", "INT8") for t in fully_connected)
    assert all(t.median_ms is not None for t in fully_connected)
