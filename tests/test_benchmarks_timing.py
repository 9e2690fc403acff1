"""Latency statistics and the run loop (counts and phases, never speed)."""

import pytest

from benchmarks import timing


def test_summary_statistics_match_hand_values():
    stats = timing.summarize(list(range(1, 11)), init_ms=5.0, first_ms=3.0, warmup_runs=2)
    assert (stats.min_ms, stats.max_ms, stats.median_ms, stats.mean_ms) == (1, 10, 5.5, 5.5)
    assert stats.p90_ms == pytest.approx(9.1)  # linear interpolation between 9 and 10
    assert stats.runs == 10 and stats.warmup_runs == 2 and stats.init_ms == 5.0 and stats.first_ms == 3.0


def test_summary_of_nothing_raises():
    with pytest.raises(ValueError, match="at least one run"):
        timing.summarize([], init_ms=0, first_ms=0, warmup_runs=0)


def test_time_runs_does_first_run_warmup_and_timed_runs_in_that_order():
    calls = []
    first_ms, warmups, samples = timing.time_runs(
        lambda: calls.append(1), warmup_runs=3, runs=7, min_warmup_seconds=0.0, min_seconds=0.0
    )
    assert warmups == 3 and len(samples) == 7 and len(calls) == 1 + 3 + 7
    assert first_ms >= 0 and all(sample >= 0 for sample in samples)


def test_time_runs_keeps_running_until_the_minimum_duration():
    _, _, samples = timing.time_runs(lambda: None, warmup_runs=0, runs=1, min_warmup_seconds=0.0, min_seconds=0.05)
    assert len(samples) > 1


def test_slow_models_cut_warmup_and_timed_runs_short():
    import time

    first_ms, warmups, samples = timing.time_runs(
        lambda: time.sleep(0.02), warmup_runs=50, runs=50, min_warmup_seconds=0.0, min_seconds=0.0, max_seconds=0.1
    )
    assert 1 <= warmups < 50 and 3 <= len(samples) < 50
