"""Calibration samples in the shape `TFLiteConverter.representative_dataset` wants.

The contract: calling the dataset yields dicts keyed by the converted model's
input names, one window per dict, batch 1:
  token_ids     int32 [1, seq_len]
  padding_mask  int32 [1, seq_len]
numpy only, like windows.py.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Sequence

import numpy as np

from representative_data.windows import TokenWindows

SUPPORTED_INPUT_NAMES = ("token_ids", "padding_mask")


@dataclasses.dataclass(frozen=True, eq=False)
class RepresentativeDataset:
    """A callable that yields calibration samples; pass it to the converter.

    Attributes:
      windows: The calibration windows.
      input_names: The model input names each sample holds.
      num_samples: How many samples each call yields (the first windows).
      requested_samples: The number asked for (None: all), for reports.
      progress: Print `calibration i/n` lines to stderr.
    """

    windows: TokenWindows
    input_names: tuple[str, ...]
    num_samples: int
    requested_samples: int | None
    progress: bool

    def __call__(self) -> Iterator[dict[str, np.ndarray]]:
        """Yields one `{input_name: int32 [1, seq_len]}` dict per window."""
        arrays = {
            "token_ids": self.windows.token_ids,
            "padding_mask": self.windows.padding_mask,
        }
        # About ten progress lines per pass, however many samples there are.
        every = max(1, self.num_samples // 10)
        for index in range(self.num_samples):
            yield {name: arrays[name][index : index + 1].copy() for name in self.input_names}
            done = index + 1
            if self.progress and (done % every == 0 or done == self.num_samples):
                print(f"calibration {done}/{self.num_samples}", file=sys.stderr, flush=True)


def representative_dataset(
    windows: TokenWindows,
    *,
    input_names: Sequence[str] = ("token_ids",),
    num_samples: int | None = None,
    progress: bool = True,
) -> RepresentativeDataset:
    """Makes the function `TFLiteConverter.representative_dataset` expects.

    Samples are the first `num_samples` windows. Windows from `split_windows`
    are already in seeded random order, so these are a random sample.

    Args:
      windows: Calibration windows (never the evaluation split).
      input_names: The converted model's input names, from
        `SUPPORTED_INPUT_NAMES`.
      num_samples: Samples per pass; None uses every window. If more are asked
        for than there are windows, all windows are used and a note is printed
        to stderr.
      progress: Print `calibration i/n` to stderr while the converter reads.

    Returns:
      A callable; each call returns a fresh iterator of
      `{input_name: int32 [1, seq_len]}` dicts.

    Raises:
      ValueError: `input_names` is empty, repeats a name or holds an unknown
        name, or `num_samples` is below 1.
    """
    if not isinstance(windows, TokenWindows):
        raise TypeError(f"windows must be TokenWindows; got {type(windows).__name__}.")
    if isinstance(input_names, str):
        # A bare string would otherwise be read as one input per character.
        input_names = (input_names,)
    names = tuple(input_names)
    if not names:
        raise ValueError(f"input_names is empty; pass the model's inputs, from {list(SUPPORTED_INPUT_NAMES)}.")
    unknown = [name for name in names if name not in SUPPORTED_INPUT_NAMES]
    if unknown:
        raise ValueError(f"Unknown input name(s) {unknown}; supported: {list(SUPPORTED_INPUT_NAMES)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"input_names repeats a name: {list(names)}.")
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer))):
        raise TypeError(f"num_samples must be an int or None; got {num_samples!r}.")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be at least 1; got {num_samples}.")

    available = windows.num_windows
    used = available if num_samples is None else min(int(num_samples), available)
    if num_samples is not None and num_samples > available:
        print(
            f"calibration: {num_samples} samples requested but only {available} windows exist; using all {available}.",
            file=sys.stderr,
            flush=True,
        )
    return RepresentativeDataset(
        windows=windows,
        input_names=names,
        num_samples=used,
        requested_samples=None if num_samples is None else int(num_samples),
        progress=progress,
    )
