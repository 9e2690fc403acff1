"""LM accuracy on token windows: perplexity, and agreement / KL divergence against a reference.

Every figure is over the same positions: in a window with `n` real tokens,
positions `0 .. n-2`, each predicting the token after it. Sums are kept in
float64 so that many windows add up without drift.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis, computed stably in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def next_token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood (nats) of each target under its row of logits.

    Args:
      logits: `[positions, vocab]`.
      targets: `[positions]` token ids.
    """
    log_probs = log_softmax(logits)
    return -np.take_along_axis(log_probs, np.asarray(targets)[:, None], axis=-1)[:, 0]


def kl_divergence(reference_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """KL(P_reference || P_model) per position, in nats (0 when the distributions agree)."""
    reference = log_softmax(reference_logits)
    model = log_softmax(logits)
    return np.maximum((np.exp(reference) * (reference - model)).sum(axis=-1), 0.0)


def top1_agreement(reference_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Whether the most likely next token is the same, per position."""
    return np.argmax(reference_logits, axis=-1) == np.argmax(logits, axis=-1)


@dataclasses.dataclass(frozen=True)
class AccuracyResult:
    """LM accuracy of a model on evaluation windows.

    Attributes:
      windows: windows evaluated.
      positions: next-token predictions scored.
      perplexity: exp(mean next-token NLL) of the model.
      next_token_accuracy: fraction of positions whose argmax is the true next token.
      reference_perplexity: the reference model's perplexity on the same
        positions, or None without a reference.
      top1_agreement: fraction of positions where model and reference agree on
        the most likely next token, or None.
      mean_kl: mean KL(P_reference || P_model) in nats, or None.
      max_kl: the largest per-position KL, or None.
    """

    windows: int
    positions: int
    perplexity: float
    next_token_accuracy: float
    reference_perplexity: float | None = None
    top1_agreement: float | None = None
    mean_kl: float | None = None
    max_kl: float | None = None

    @property
    def perplexity_increase(self) -> float | None:
        """Relative perplexity change against the reference (0.02 = 2 % worse)."""
        if self.reference_perplexity is None:
            return None
        return self.perplexity / self.reference_perplexity - 1.0

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["perplexity_increase"] = self.perplexity_increase
        return values


class AccuracyAccumulator:
    """Adds up accuracy figures window by window (one window of logits in memory at a time)."""

    def __init__(self) -> None:
        self._windows = 0
        self._positions = 0
        self._nll = 0.0
        self._correct = 0
        self._reference_nll = 0.0
        self._agree = 0
        self._kl = 0.0
        self._max_kl = 0.0
        self._with_reference: bool | None = None

    def add(
        self,
        token_ids: np.ndarray,
        padding_mask: np.ndarray,
        logits: np.ndarray,
        reference_logits: np.ndarray | None = None,
    ) -> None:
        """Scores one window.

        Args:
          token_ids: `[seq_len]` ids of the window.
          padding_mask: `[seq_len]`, ones then zeros.
          logits: `[seq_len, vocab]` (a leading batch axis of 1 is accepted).
          reference_logits: the reference model's logits on the same window, or
            None. Pass it for every window or for none.
        """
        with_reference = reference_logits is not None
        if self._with_reference is not None and with_reference != self._with_reference:
            raise ValueError("Pass reference logits for every window or for none.")
        self._with_reference = with_reference
        logits = np.asarray(logits).reshape(-1, np.shape(logits)[-1])
        length = int(np.asarray(padding_mask).sum())
        self._windows += 1
        if length < 2:
            return
        scored = slice(0, length - 1)
        targets = np.asarray(token_ids)[1:length]
        nll = next_token_nll(logits[scored], targets)
        self._positions += nll.size
        self._nll += float(nll.sum())
        self._correct += int((np.argmax(logits[scored], axis=-1) == targets).sum())
        if with_reference:
            reference = np.asarray(reference_logits).reshape(logits.shape)
            self._reference_nll += float(next_token_nll(reference[scored], targets).sum())
            self._agree += int(top1_agreement(reference[scored], logits[scored]).sum())
            kl = kl_divergence(reference[scored], logits[scored])
            self._kl += float(kl.sum())
            self._max_kl = max(self._max_kl, float(kl.max()))

    def result(self) -> AccuracyResult:
        """The figures so far.

        Raises:
          ValueError: no position has been scored yet.
        """
        if self._positions == 0:
            raise ValueError("No next-token position to score: every window holds fewer than 2 real tokens.")
        count = self._positions
        reference = bool(self._with_reference)
        return AccuracyResult(
            windows=self._windows,
            positions=count,
            perplexity=math.exp(self._nll / count),
            next_token_accuracy=self._correct / count,
            reference_perplexity=math.exp(self._reference_nll / count) if reference else None,
            top1_agreement=self._agree / count if reference else None,
            mean_kl=self._kl / count if reference else None,
            max_kl=self._max_kl if reference else None,
        )
