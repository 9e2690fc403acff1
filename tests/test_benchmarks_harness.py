"""The harness end to end on a real converted model, and every bad input it must refuse."""

import json
import math

import numpy as np
import pytest

import representative_data
from benchmarks import AccuracyAccumulator, harness, load_results, open_runner

from helpers import SEQ_LEN, VOCABULARY_SIZE


@pytest.fixture(scope="module")
def dynamic_result(converted_tiny_lm):
    return harness.benchmark_file(
        converted_tiny_lm["dynamic"],
        threads=1,
        evaluation=converted_tiny_lm["evaluation"],
        reference=converted_tiny_lm["fp32"],
        runs=5,
        warmup_runs=1,
        min_seconds=0.0,
        progress=None,
    )


def test_result_holds_machine_model_settings_latency_memory_and_accuracy(dynamic_result, converted_tiny_lm):
    result = dynamic_result.to_dict()
    report = json.loads(converted_tiny_lm["dynamic"].with_suffix(".json").read_text())
    # Name and variant come from the conversion report beside the file.
    assert result["model"]["variant"] == "dynamic" and result["model"]["name"] == report["model_name"]
    assert result["model"]["size_bytes"] == converted_tiny_lm["dynamic"].stat().st_size
    assert (result["model"]["seq_len"], result["model"]["vocabulary_size"]) == (SEQ_LEN, VOCABULARY_SIZE)
    assert result["runtime"] == {"name": "ai-edge-litert", "version": "2.3.0"}
    assert result["machine"]["logical_cores"] >= 1 and result["machine"]["cpu"]
    latency = result["latency"]
    assert latency["runs"] >= 5 and latency["min_ms"] <= latency["median_ms"] <= latency["p90_ms"] <= latency["max_ms"]
    assert result["memory"]["peak_rss_bytes"] > 0 and result["memory"]["peak_covers_load_only"] is True
    assert result["settings"]["threads"] == 1 and result["settings"]["evaluation"]["num_windows"] == 6
    assert result["accuracy"]["windows"] == 6
    # 5 full windows of 31 positions each, and a tail window of 7 tokens (6 positions).
    assert result["accuracy"]["positions"] == 5 * (SEQ_LEN - 1) + 6


def test_accuracy_equals_a_direct_computation_with_the_interpreter(dynamic_result, converted_tiny_lm):
    windows = representative_data.load_windows(converted_tiny_lm["evaluation"])
    model, reference = open_runner(converted_tiny_lm["dynamic"]), open_runner(converted_tiny_lm["fp32"])
    nll, count, agree = 0.0, 0, 0
    for ids, mask in zip(windows.token_ids, windows.padding_mask):
        outputs = []
        for runner in (model, reference):
            runner.prepare({"token_ids": ids[None], "padding_mask": mask[None]})
            runner.invoke()
            outputs.append(runner.logits()[0].astype(np.float64))
        n = int(mask.sum())
        logits = outputs[0][: n - 1]
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        nll -= log_probs[np.arange(n - 1), ids[1:n]].sum()
        agree += int((outputs[0][: n - 1].argmax(-1) == outputs[1][: n - 1].argmax(-1)).sum())
        count += n - 1
    accuracy = dynamic_result.accuracy
    assert accuracy.perplexity == pytest.approx(math.exp(nll / count), rel=1e-9)
    assert accuracy.top1_agreement == pytest.approx(agree / count)
    assert 0 < accuracy.mean_kl < 1e-3  # int8 weights: close to fp32, not equal (3e-6 measured; another model 0.01)


def test_the_fp32_model_against_itself_agrees_fully(converted_tiny_lm):
    result = harness.benchmark_file(
        converted_tiny_lm["fp32"],
        evaluation=converted_tiny_lm["evaluation"],
        reference=converted_tiny_lm["fp32"],
        runs=2,
        warmup_runs=0,
        min_seconds=0.0,
        progress=None,
    )
    assert result.accuracy.top1_agreement == 1.0 and result.accuracy.mean_kl == pytest.approx(0.0, abs=1e-9)
    assert result.accuracy.perplexity == pytest.approx(result.accuracy.reference_perplexity)


def test_without_windows_only_speed_and_memory_are_measured(converted_tiny_lm):
    result = harness.benchmark_file(converted_tiny_lm["fp32"], runs=2, warmup_runs=0, min_seconds=0.0, progress=None)
    assert result.accuracy is None and result.latency.runs >= 2


def test_saved_results_never_overwrite_each_other_and_load_back(dynamic_result, tmp_path):
    first, second = dynamic_result.save(tmp_path), dynamic_result.save(tmp_path)
    assert first != second and first.parent == tmp_path / dynamic_result.model.name
    assert json.loads(first.read_text()) == dynamic_result.to_dict()
    loaded = load_results(tmp_path)
    assert len(loaded) == 2 and loaded[0]["accuracy"]["perplexity"] == dynamic_result.accuracy.perplexity
    assert not list(tmp_path.rglob("*.tmp"))


def _windows_file(tmp_path, token_ids, name="windows.npz"):
    windows = representative_data.TokenWindows(token_ids.astype(np.int32), np.ones_like(token_ids, dtype=np.int32))
    path = tmp_path / name
    representative_data.save_windows(windows, path)
    return path


def test_windows_of_another_seq_len_are_refused(converted_tiny_lm, tmp_path):
    path = _windows_file(tmp_path, np.ones((2, SEQ_LEN * 2)))
    with pytest.raises(ValueError, match=f"hold {SEQ_LEN * 2} tokens but .* takes {SEQ_LEN}"):
        harness.benchmark_file(converted_tiny_lm["fp32"], evaluation=path, runs=1, progress=None)


def test_windows_with_ids_at_or_above_the_vocabulary_are_refused(converted_tiny_lm, tmp_path):
    ids = np.ones((2, SEQ_LEN))
    ids[1, 5] = VOCABULARY_SIZE
    path = _windows_file(tmp_path, ids)
    with pytest.raises(ValueError, match=f"token id {VOCABULARY_SIZE} but .* vocabulary of {VOCABULARY_SIZE}"):
        harness.benchmark_file(converted_tiny_lm["fp32"], evaluation=path, runs=1, progress=None)


def test_missing_windows_and_missing_reference_are_refused_before_loading(converted_tiny_lm, tmp_path):
    with pytest.raises(FileNotFoundError, match="No evaluation windows"):
        harness.benchmark_file(converted_tiny_lm["fp32"], evaluation=tmp_path / "none.npz", progress=None)
    with pytest.raises(FileNotFoundError, match="No model at"):
        harness.benchmark_file(converted_tiny_lm["fp32"], reference=tmp_path / "none.tflite", progress=None)


def test_bad_counts_are_refused(converted_tiny_lm):
    with pytest.raises(ValueError, match="threads must be an integer of at least 1"):
        harness.benchmark_file(converted_tiny_lm["fp32"], threads=0, progress=None)
    with pytest.raises(ValueError, match="runs must be at least 1"):
        harness.benchmark_file(converted_tiny_lm["fp32"], runs=0, progress=None)


def test_accumulator_is_exported_for_custom_loops():
    assert AccuracyAccumulator is harness.AccuracyAccumulator
