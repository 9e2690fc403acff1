"""Accuracy metrics on cases small enough to compute by hand."""

import math

import numpy as np
import pytest

from benchmarks import accuracy


def _logits_of(probabilities):
    return np.log(np.asarray(probabilities, dtype=np.float64))


def test_uniform_logits_give_the_vocabulary_size_as_perplexity():
    acc = accuracy.AccuracyAccumulator()
    acc.add(np.array([0, 1, 2, 3]), np.ones(4), np.zeros((4, 4)))
    result = acc.result()
    assert result.positions == 3
    assert result.perplexity == pytest.approx(4.0)
    # argmax of a uniform row is id 0; the targets are 1, 2, 3.
    assert result.next_token_accuracy == 0.0


def test_perplexity_is_exp_of_the_mean_nll_over_next_tokens():
    # Targets are ids[1:] = [0, 1]: probabilities 1/2 and 1/4, so NLL ln 2 and ln 4.
    logits = _logits_of([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
    acc = accuracy.AccuracyAccumulator()
    acc.add(np.array([2, 0, 1]), np.ones(3), logits)
    result = acc.result()
    assert result.perplexity == pytest.approx(2**1.5)
    assert result.next_token_accuracy == pytest.approx(0.5)


def test_padding_positions_and_the_last_real_token_are_not_scored():
    logits = np.zeros((5, 8))
    logits[0, 3] = 100.0  # predicts ids[1] = 3 with certainty
    logits[2:, 5] = 100.0  # padding and the last real token: must not count
    acc = accuracy.AccuracyAccumulator()
    acc.add(np.array([7, 3, 6, 0, 0]), np.array([1, 1, 0, 0, 0]), logits)
    result = acc.result()
    assert result.positions == 1
    assert result.perplexity == pytest.approx(1.0)
    assert result.next_token_accuracy == 1.0


def test_kl_divergence_matches_the_hand_computed_value():
    p, q = [0.5, 0.5], [0.9, 0.1]
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert accuracy.kl_divergence(_logits_of([p]), _logits_of([q]))[0] == pytest.approx(expected)
    assert accuracy.kl_divergence(_logits_of([p]), _logits_of([p]) + 3.0)[0] == pytest.approx(0.0, abs=1e-12)


def test_agreement_kl_and_reference_perplexity_against_a_reference():
    reference = _logits_of([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    model = _logits_of([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    ids = np.array([2, 0, 1])  # targets 0 and 1
    acc = accuracy.AccuracyAccumulator()
    acc.add(ids, np.ones(3), model, reference)
    result = acc.result()
    assert result.top1_agreement == pytest.approx(0.5)  # position 0 agrees, position 1 does not
    kl0 = 0.7 * math.log(0.7 / 0.6) + 0.2 * math.log(0.2 / 0.3) + 0.1 * math.log(1.0)
    kl1 = 0.1 * math.log(0.1 / 0.5) + 0.8 * math.log(0.8 / 0.4) + 0.1 * math.log(1.0)
    assert result.mean_kl == pytest.approx((kl0 + kl1) / 2)
    assert result.max_kl == pytest.approx(max(kl0, kl1))
    assert result.perplexity == pytest.approx(math.exp(-(math.log(0.6) + math.log(0.4)) / 2))
    assert result.reference_perplexity == pytest.approx(math.exp(-(math.log(0.7) + math.log(0.8)) / 2))
    assert result.perplexity_increase == pytest.approx(result.perplexity / result.reference_perplexity - 1)


def test_windows_add_up_position_weighted():
    acc = accuracy.AccuracyAccumulator()
    acc.add(np.array([0, 1]), np.ones(2), np.zeros((2, 2)))  # one position, ppl 2
    acc.add(np.array([0, 1, 1, 1]), np.ones(4), np.zeros((4, 8)))  # three positions, ppl 8
    result = acc.result()
    assert result.windows == 2 and result.positions == 4
    assert result.perplexity == pytest.approx(math.exp((math.log(2) + 3 * math.log(8)) / 4))


def test_a_batch_axis_of_one_is_accepted():
    acc = accuracy.AccuracyAccumulator()
    acc.add(np.array([0, 1, 2]), np.ones(3), np.zeros((1, 3, 4)))
    assert acc.result().perplexity == pytest.approx(4.0)


def test_mixing_windows_with_and_without_reference_is_refused():
    acc = accuracy.AccuracyAccumulator()
    acc.add(np.array([0, 1]), np.ones(2), np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="every window or for none"):
        acc.add(np.array([0, 1]), np.ones(2), np.zeros((2, 2)))


def test_no_scorable_position_raises():
    acc = accuracy.AccuracyAccumulator()
    acc.add(np.array([5, 0]), np.array([1, 0]), np.zeros((2, 8)))
    with pytest.raises(ValueError, match="fewer than 2 real tokens"):
        acc.result()


def test_extreme_logits_stay_finite():
    logits = np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    nll = accuracy.next_token_nll(logits, np.array([0, 1]))
    assert np.all(np.isfinite(nll)) and nll[0] == pytest.approx(0.0)
