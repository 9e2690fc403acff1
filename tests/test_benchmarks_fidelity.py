"""The comparison with LiteRT's own benchmark tool runs both tools (figures go to the README, not here)."""

from benchmarks import fidelity


def test_both_tools_time_the_same_model(converted_tiny_lm):
    result = fidelity.compare(str(converted_tiny_lm["fp32"]), threads=1, runs=5, warmup_runs=1, rounds=1)
    assert len(result.harness_medians_ms) == len(result.tool_medians_ms) == 1
    assert result.harness_ms > 0 and result.tool_ms > 0
    assert result.to_dict()["relative_difference"] == result.harness_ms / result.tool_ms - 1
    table = fidelity.render([result])
    assert "| `tiny_fp32.tflite` | 1 |" in table


def test_the_tool_ships_in_the_wheel():
    assert fidelity.tool_path().name == "benchmark_litert_model.py"
