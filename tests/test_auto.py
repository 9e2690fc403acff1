"""converter.auto: budget and candidate parsing, the choice rule, and a whole search on a tiny trained model."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from converter.core import modes
from converter.tools import auto

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, expected", [("2%", 0.02), ("0.5 %", 0.005), ("0.02", 0.02), (0.1, 0.1), ("0", 0.0)])
def test_budget_is_read_as_a_fraction(text, expected):
    assert auto.parse_budget(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text, message",
    [
        ("2", "ambiguous: write 2% or 0.02"),
        ("-1%", "at least 0"),
        ("two", "not a number"),
        ("nan", "at least 0"),
    ],
)
def test_bad_budgets_are_refused_saying_how_to_write_one(text, message):
    with pytest.raises(ValueError, match=message):
        auto.parse_budget(text)


def test_candidates_name_a_mode_and_what_stays_float():
    candidate = auto.parse_candidate("int8+attention+mlp_down")
    assert (candidate.mode, candidate.float_residual_stream) == (modes.Mode.INT8, True)
    assert candidate.name == "int8+attention+mlp_down"
    strict = auto.parse_candidate("int8-strict")
    assert strict.name == "int8-strict" and not strict.float_residual_stream
    assert auto.parse_candidate("int8+softmax").keep_float == ("SOFTMAX",)
    # The mode's defaults come first; -strict keeps nothing in float.
    assert candidate.keep_float == ("SOFTMAX", "attention", "mlp_down")
    assert strict.keep_float == () and auto.parse_candidate("int16x8").keep_float == ()
    with pytest.raises(ValueError, match="only int8 and int16x8"):
        auto.parse_candidate("dynamic+attention")
    with pytest.raises(ValueError, match="Unknown mode"):
        auto.parse_candidate("int9")
    with pytest.raises(ValueError, match="Unknown float choice 'nope'"):
        auto.parse_candidate("int8+nope")


def _trial(name, size, latency, increase, **kwargs):
    return auto.Trial(
        name=name,
        mode=name.split("+")[0],
        keep_float=(),
        size_bytes=size,
        latency_ms=latency,
        perplexity=None if increase is None else 10 * (1 + increase),
        perplexity_increase=increase,
        **kwargs,
    )


def test_choice_is_the_smallest_within_budget_then_the_fastest_among_equal_sizes():
    trials = auto.mark(
        [
            _trial("fp32", 1000, 10.0, 0.0),
            _trial("fp16", 500, 10.0, 0.0),
            _trial("dynamic", 260, 3.0, 0.05),  # smallest and fastest, but over budget
            _trial("int8", 262, 8.0, 0.01),
            _trial("int8+attention", 263, 4.0, 0.015),  # within 2 % of int8's size, faster
            _trial("int16x8", 265, 300.0, 0.001),
            _trial("broken", None, None, None, error="failed"),
        ],
        0.02,
    )
    assert [t.within_budget for t in trials] == [True, True, False, True, True, True, False]
    assert auto.choose(trials).name == "int8+attention"
    # Pareto: fp32 alone is dominated (fp16 is as fast and as accurate, and smaller).
    assert {t.name for t in trials if t.pareto} == {"fp16", "dynamic", "int8", "int8+attention", "int16x8"}
    tight = auto.mark(trials, 0.0)
    assert auto.choose(tight).name == "fp16"


def test_with_nothing_within_budget_the_most_accurate_is_returned_and_flagged():
    trials = auto.mark([_trial("fp32", 1000, 10.0, 0.001), _trial("int8", 260, 3.0, 0.3)], 0.0)
    best = auto.choose(trials)
    assert best.name == "fp32" and not best.within_budget


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-layer GPT-2 trained for a few seconds on real text: a preset folder and its build folder."""
    from converter.models import tiny_gpt2

    build_dir = tmp_path_factory.mktemp("build")
    tiny_gpt2.build_tiny_gpt2(
        build_dir=build_dir,
        vocabulary_size=420,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        max_sequence_length=32,
        sequence_length=32,
        batch_size=8,
        epochs=2,
        max_documents=6,
        min_improvement=None,
        verbose=0,
    )
    return tiny_gpt2.tiny_gpt2_preset_dir(build_dir), build_dir


def _run(command):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)


@pytest.mark.large
def test_auto_returns_the_smallest_model_within_its_budget_with_the_pareto_table(trained, tmp_path):
    from benchmarks import harness

    preset, _ = trained
    out = tmp_path / "tiny_auto.tflite"
    command = [
        sys.executable,
        "-m",
        "converter",
        "--mode=auto",
        f"--model={preset}",
        f"--build_dir={tmp_path}",
        "--max_ppl_increase=2%",
        "--candidates=fp16,dynamic,int8,int8+attention,int8-strict",
        "--threads=1",
        "--eval_windows=6",
        "--num_calibration_samples=16",
        f"--out={out}",
    ]
    completed = _run(command)
    assert completed.returncode == 0, completed.stderr[-3000:]
    search = json.loads(out.with_name("tiny_auto_search.json").read_text())
    trials = {t["name"]: t for t in search["trials"]}
    assert list(trials) == ["fp32", "fp16", "dynamic", "int8", "int8+attention", "int8-strict"]
    chosen = trials[search["chosen"]]
    assert search["chosen_within_budget"] and chosen["perplexity_increase"] <= 0.02
    for trial in trials.values():
        assert trial["within_budget"] == (trial["perplexity_increase"] <= 0.02 + 1e-9)
    within = [t for t in trials.values() if t["within_budget"]]
    assert chosen["size_bytes"] <= min(t["size_bytes"] for t in within) * (1 + auto.SIZE_TIE)
    # Variants really differ: int8+attention keeps BATCH_MATMUL float, int8-strict keeps nothing float.
    assert trials["int8+attention"]["float_ops"].get("BATCH_MATMUL", 0) == 4
    assert not {"ADD", "RSQRT", "SOFTMAX", "FULLY_CONNECTED", "BATCH_MATMUL"} & set(trials["int8-strict"]["float_ops"])
    assert trials["int8"]["float_ops"].get("RSQRT", 0) > 0 and trials["int8"]["float_ops"].get("SOFTMAX") == 2
    assert trials["int8"]["keep_float"] == ["SOFTMAX"] and trials["int8-strict"]["keep_float"] == []
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["auto"]["candidate"] == search["chosen"]
    # The report's recipe rebuilds the chosen model: the search recorded the same one.
    assert report["recipe"] == trials[search["chosen"]]["recipe"] == search["recipe"]
    markdown = out.with_name("tiny_auto_search.md").read_text()
    assert f"Chosen: **{search['chosen']}**" in markdown and markdown.count("\n| ") == len(trials) + 2
    # The chosen file measures what the table says, independently of auto.
    evaluation = tmp_path / preset.name / f"{preset.name}_seq32_evaluation.npz"
    again = harness.benchmark_file(
        out, evaluation=evaluation, max_windows=6, runs=1, warmup_runs=0, min_seconds=0, progress=None
    )
    assert again.accuracy.perplexity == pytest.approx(chosen["perplexity"], rel=1e-3)
    # Existing outputs are kept unless asked.
    completed = _run(command)
    assert completed.returncode == 2 and "exists" in completed.stderr and "--overwrite" in completed.stderr


@pytest.mark.large
def test_a_zero_budget_keeps_perplexity_and_bad_flags_fail_at_parse_time(trained, tmp_path):
    import representative_data
    from converter.models import model_sources, tiny_gpt2

    preset, build_dir = trained
    loaded = model_sources.load_model(str(preset))
    calibration, evaluation = representative_data.build_windows(
        "builtin",
        loaded.tokenizer,
        seq_len=32,
        seed=0,
        max_calibration=8,
        separator_id=tiny_gpt2.EOS_TOKEN_ID,
    )
    search = auto.auto_convert(
        loaded,
        max_ppl_increase=0,
        calibration=calibration,
        evaluation=evaluation,
        candidates=["dynamic", "int8"],
        threads=1,
        eval_windows=4,
        progress=False,
    )
    assert search.chosen_within_budget
    assert next(t for t in search.trials if t.name == search.chosen).perplexity_increase <= 0
    assert search.model.path is None and search.search_report is None
    for flag, message in (("--max_ppl_increase=5", "ambiguous"), ("--candidates=int8+nope", "Unknown float choice")):
        completed = _run([sys.executable, "-m", "converter", "--mode=auto", flag])
        assert completed.returncode != 0 and message in completed.stderr
    with pytest.raises(ValueError, match="evaluation windows"):
        auto.auto_convert(loaded, max_ppl_increase="1%", calibration=calibration, evaluation=None)
