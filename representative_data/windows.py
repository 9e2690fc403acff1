"""Token windows: cutting a token stream, splitting, validating and the .npz format.

This module is read on edge devices without TensorFlow: it imports numpy and the
standard library only.

The .npz format (written by `save_windows`, read by `load_windows`):
  token_ids     int32 [num_windows, seq_len]; padding positions hold id 0.
  padding_mask  int32 [num_windows, seq_len]; 1 = real token, 0 = padding. Windows
                are right-padded: each row is ones followed by zeros, at least one 1.
  metadata      0-d unicode array holding a JSON object (see `TokenWindows`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converter.common import files

PAD_ID = 0
# A window needs two tokens to hold one next-token prediction.
MIN_WINDOW_TOKENS = 2
SPLIT_CALIBRATION = "calibration"
SPLIT_EVALUATION = "evaluation"
_ARRAY_NAMES = ("token_ids", "padding_mask", "metadata")
_INT32_MAX = np.iinfo(np.int32).max


# eq=False: a generated __eq__ would compare numpy arrays, whose truth value is ambiguous.
@dataclasses.dataclass(frozen=True, eq=False)
class TokenWindows:
    """Fixed-length token windows, ready to feed a model with batch 1.

    Attributes:
      token_ids: int32 `[num_windows, seq_len]`; padding positions hold `PAD_ID`.
      padding_mask: int32 `[num_windows, seq_len]`; 1 for a real token, 0 for
        padding. Rows are right-padded (ones, then zeros) with at least one 1.
      metadata: JSON-serialisable facts about the windows. Keys written by this
        package: `source`, `corpus_sha256`, `num_documents`, `tokenizer`,
        `vocabulary_size`, `separator_id`, `text_field` (from `build_windows`);
        `seq_len`, `num_windows`, `num_tokens`, `padded_windows`,
        `dropped_tokens` (from `make_windows`); `split`, `seed`,
        `evaluation_fraction`, `source_num_windows`, `window_indices` (from
        `split_windows`). Stored read-only.
    """

    token_ids: np.ndarray
    padding_mask: np.ndarray
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("token_ids", "padding_mask"):
            array = getattr(self, name)
            if not isinstance(array, np.ndarray):
                raise TypeError(f"{name} must be a numpy array; got {type(array).__name__}.")
            if array.dtype != np.int32:
                raise ValueError(f"{name} must have dtype int32; got {array.dtype}. Convert it with .astype(np.int32).")
            if array.ndim != 2:
                raise ValueError(f"{name} must be 2-D [num_windows, seq_len]; got shape {array.shape}.")
        if self.token_ids.shape != self.padding_mask.shape:
            raise ValueError(
                f"token_ids shape {self.token_ids.shape} and padding_mask shape "
                f"{self.padding_mask.shape} differ; they must match."
            )
        if self.token_ids.shape[0] < 1 or self.token_ids.shape[1] < 1:
            raise ValueError(
                f"Windows must hold at least one window of at least one token; got shape {self.token_ids.shape}."
            )
        mask = self.padding_mask
        if not np.all((mask == 0) | (mask == 1)):
            raise ValueError("padding_mask must hold only 0 (padding) and 1 (real token).")
        # Accuracy metrics read the real tokens as a prefix of each row.
        if not np.all(mask[:, 0] == 1) or not np.all(np.diff(mask, axis=1) <= 0):
            raise ValueError("padding_mask rows must be right-padded: ones (at least one) followed by zeros.")
        if not isinstance(self.metadata, Mapping):
            raise TypeError(f"metadata must be a mapping; got {type(self.metadata).__name__}.")
        metadata = dict(self.metadata)
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"metadata must be JSON-serialisable ({error}); use str, int, float, bool, None, lists and dicts."
            ) from None
        object.__setattr__(self, "metadata", types.MappingProxyType(metadata))

    def __reduce__(self):
        # The read-only metadata view cannot be pickled; rebuild from a plain dict.
        return (type(self), (self.token_ids, self.padding_mask, dict(self.metadata)))

    @property
    def num_windows(self) -> int:
        """The number of windows (rows)."""
        return int(self.token_ids.shape[0])

    @property
    def seq_len(self) -> int:
        """The length of every window in tokens, padding included."""
        return int(self.token_ids.shape[1])


def make_windows(
    token_stream: np.ndarray,
    *,
    seq_len: int,
    metadata: Mapping[str, Any] | None = None,
) -> TokenWindows:
    """Cuts a token stream into consecutive, non-overlapping windows.

    The last partial window is kept, right-padded with `PAD_ID` and mask 0,
    when it holds at least `MIN_WINDOW_TOKENS` (2) tokens; a single leftover
    token predicts nothing and is dropped. `metadata["padded_windows"]` (0 or 1)
    and `metadata["dropped_tokens"]` (0 or 1) record which happened.

    Args:
      token_stream: 1-D integer token ids, e.g. from
        `TokenizerAdapter.encode_documents`.
      seq_len: Tokens per window, at least 2.
      metadata: Extra JSON-serialisable facts to store with the windows.

    Returns:
      The windows in stream order; metadata gains `seq_len`, `num_windows`,
      `num_tokens`, `padded_windows` and `dropped_tokens`.

    Raises:
      ValueError: `seq_len` is below 2, the stream is not 1-D integers that fit
        int32, or it is shorter than 2 tokens.
    """
    seq_len = _check_int("seq_len", seq_len, minimum=MIN_WINDOW_TOKENS)
    stream = np.asarray(token_stream)
    if stream.ndim != 1:
        raise ValueError(f"token_stream must be 1-D; got shape {stream.shape}.")
    if stream.size and not np.issubdtype(stream.dtype, np.integer):
        raise ValueError(f"token_stream must hold integer token ids; got dtype {stream.dtype}.")
    if stream.size and (stream.min() < np.iinfo(np.int32).min or stream.max() > _INT32_MAX):
        raise ValueError("token_stream holds ids that do not fit int32.")
    num_tokens = int(stream.size)
    if num_tokens < MIN_WINDOW_TOKENS:
        raise ValueError(
            f"The corpus is too small for seq_len={seq_len}: it gave {num_tokens} token(s) "
            f"and a window needs at least {MIN_WINDOW_TOKENS}. Use a larger corpus."
        )

    num_full, remainder = divmod(num_tokens, seq_len)
    keep_partial = remainder >= MIN_WINDOW_TOKENS
    num_windows = num_full + int(keep_partial)
    token_ids = np.full((num_windows, seq_len), PAD_ID, dtype=np.int32)
    padding_mask = np.zeros((num_windows, seq_len), dtype=np.int32)
    used = num_full * seq_len
    token_ids[:num_full] = stream[:used].reshape(num_full, seq_len)
    padding_mask[:num_full] = 1
    if keep_partial:
        token_ids[num_full, :remainder] = stream[used:]
        padding_mask[num_full, :remainder] = 1

    facts = {
        "seq_len": seq_len,
        "num_windows": num_windows,
        "num_tokens": num_tokens,
        "padded_windows": int(keep_partial),
        "dropped_tokens": 0 if keep_partial else remainder,
    }
    return TokenWindows(token_ids, padding_mask, {**(metadata or {}), **facts})


def split_windows(
    windows: TokenWindows,
    *,
    evaluation_fraction: float = 0.1,
    seed: int = 0,
    max_calibration: int | None = None,
    max_evaluation: int | None = None,
) -> tuple[TokenWindows, TokenWindows]:
    """Splits windows into disjoint calibration and evaluation sets.

    A seeded permutation of the window indices is cut in two: the first
    `round(num_windows * evaluation_fraction)` indices (at least 1, at most
    `num_windows - 1`) are evaluation, the rest calibration. Windows never
    overlap, so disjoint indices mean no text is in both sets. Each set keeps
    the permuted order, so its first k windows are a random sample; caps take
    those first k. The evaluation set does not depend on `max_calibration`.
    The same seed gives the same split (for the same numpy version).

    Args:
      windows: All windows, from `make_windows`.
      evaluation_fraction: Share of windows for evaluation, strictly between
        0 and 1.
      seed: Non-negative seed for the permutation.
      max_calibration: Keep at most this many calibration windows.
      max_evaluation: Keep at most this many evaluation windows.

    Returns:
      `(calibration, evaluation)`. Their metadata adds `split`, `seed`,
      `evaluation_fraction`, `source_num_windows`, `window_indices` (indices
      into `windows`, in set order) and updates `num_windows`.

    Raises:
      ValueError: There are fewer than 2 windows, an option is out of range,
        or `windows` is already a split.
    """
    if not isinstance(windows, TokenWindows):
        raise TypeError(f"windows must be TokenWindows; got {type(windows).__name__}.")
    if "split" in windows.metadata:
        raise ValueError(
            f"These windows are already the {windows.metadata['split']!r} split; split "
            "the full windows from make_windows instead."
        )
    check_window_options(
        evaluation_fraction=evaluation_fraction,
        seed=seed,
        max_calibration=max_calibration,
        max_evaluation=max_evaluation,
    )
    seed = int(seed)

    total = windows.num_windows
    if total < 2:
        raise ValueError(
            f"Cannot split {total} window into disjoint calibration and evaluation sets: "
            "need at least 2. Use a larger corpus or a smaller seq_len."
        )
    num_evaluation = min(max(round(total * evaluation_fraction), 1), total - 1)
    order = np.random.default_rng(seed).permutation(total)
    evaluation_indices = order[:num_evaluation][:max_evaluation]
    calibration_indices = order[num_evaluation:][:max_calibration]

    def subset(name: str, indices: np.ndarray) -> TokenWindows:
        metadata = {
            **windows.metadata,
            "split": name,
            "seed": seed,
            "evaluation_fraction": float(evaluation_fraction),
            "source_num_windows": total,
            "num_windows": int(indices.size),
            "window_indices": [int(index) for index in indices],
        }
        return TokenWindows(windows.token_ids[indices], windows.padding_mask[indices], metadata)

    return (
        subset(SPLIT_CALIBRATION, calibration_indices),
        subset(SPLIT_EVALUATION, evaluation_indices),
    )


def check_window_options(
    *,
    seq_len: int | None = None,
    evaluation_fraction: float = 0.1,
    seed: int = 0,
    max_calibration: int | None = None,
    max_evaluation: int | None = None,
) -> None:
    """Checks `make_windows`/`split_windows` options before there is any data.

    Lets a caller fail in a moment instead of after a long tokenization.

    Args:
      seq_len: As for `make_windows`; None skips the check.
      evaluation_fraction: As for `split_windows`.
      seed: As for `split_windows`.
      max_calibration: As for `split_windows`.
      max_evaluation: As for `split_windows`.

    Raises:
      TypeError: An option has the wrong type.
      ValueError: An option is out of range.
    """
    if seq_len is not None:
        _check_int("seq_len", seq_len, minimum=MIN_WINDOW_TOKENS)
    if isinstance(evaluation_fraction, bool) or not isinstance(evaluation_fraction, (int, float, np.floating)):
        raise TypeError(f"evaluation_fraction must be a number; got {evaluation_fraction!r}.")
    if not 0.0 < evaluation_fraction < 1.0:
        raise ValueError(f"evaluation_fraction must be strictly between 0 and 1; got {evaluation_fraction}.")
    _check_int("seed", seed, minimum=0)
    for name, cap in (("max_calibration", max_calibration), ("max_evaluation", max_evaluation)):
        if cap is not None:
            _check_int(name, cap, minimum=1)


def save_windows(windows: TokenWindows, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Writes windows to an `.npz` file atomically.

    The file is written beside its destination under a temporary name and
    renamed into place, so a reader never sees half a file and an interrupted
    run leaves the old file intact.

    Args:
      windows: The windows to save.
      path: Destination ending in `.npz`; missing parent folders are created.
      overwrite: Replace an existing file.

    Returns:
      The path written.

    Raises:
      FileExistsError: `path` exists and `overwrite` is False.
      ValueError: `path` does not end in `.npz` or is a directory.
    """
    if not isinstance(windows, TokenWindows):
        raise TypeError(f"windows must be TokenWindows; got {type(windows).__name__}.")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"Windows are saved as .npz; {path} must end in .npz.")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass a file path ending in .npz.")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists. Pass overwrite=True (--overwrite on the command line) to replace it."
        )
    metadata = np.array(json.dumps(dict(windows.metadata), sort_keys=True))
    with files.atomic_output(path) as temporary, open(temporary, "wb") as file:
        np.savez_compressed(
            file,
            token_ids=windows.token_ids,
            padding_mask=windows.padding_mask,
            metadata=metadata,
        )
    return path


def load_windows(path: str | os.PathLike[str]) -> TokenWindows:
    """Reads windows written by `save_windows`, or any `.npz` holding a `token_ids` array.

    A file of the user's own with only `token_ids` (any integer dtype,
    `[num_windows, seq_len]`) is read as unpadded windows: `padding_mask` all
    ones, metadata `{"source": <path>}`.

    Args:
      path: An `.npz` file.

    Returns:
      The windows with their metadata.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: `path` is not an `.npz` archive, lacks `token_ids`, or holds
        invalid contents.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Windows file {path} does not exist. Create it with save_windows (or the project's windows command) first."
        )
    if path.is_dir() or not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not an .npz archive. Pass a windows file written by save_windows "
            "or np.savez(path, token_ids=...)."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            present = list(archive.files)
            arrays = {name: archive[name] for name in _ARRAY_NAMES if name in present}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} cannot be read as an .npz archive: {error}") from None
    if "token_ids" not in arrays:
        raise ValueError(
            f"{path} has no token_ids array (it has: {', '.join(present) or 'none'}). Pass a windows "
            "file written by save_windows, or one saved with np.savez(path, token_ids=ids) where ids "
            "is [num_windows, seq_len]."
        )
    metadata: Any = {"source": str(path)}
    if "metadata" in arrays:
        metadata_array = arrays["metadata"]
        if metadata_array.ndim != 0 or metadata_array.dtype.kind != "U":
            raise ValueError(f"{path}: metadata must be a 0-d unicode array holding JSON.")
        try:
            metadata = json.loads(metadata_array.item())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: metadata is not valid JSON ({error}).") from None
        if not isinstance(metadata, dict):
            raise ValueError(f"{path}: metadata must be a JSON object.")
    try:
        return windows_from_arrays(arrays["token_ids"], arrays.get("padding_mask"), metadata=metadata)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


def windows_from_arrays(
    token_ids: Any,
    padding_mask: Any = None,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> TokenWindows:
    """Windows from token-id arrays of the user's own.

    Args:
      token_ids: integer ids `[num_windows, seq_len]` (or one window `[seq_len]`),
        any integer dtype whose values fit int32.
      padding_mask: 1 for real tokens, 0 for padding, same shape; None: all ones.
      metadata: facts to keep with the windows (default `{"source": "arrays"}`).

    Raises:
      TypeError: not integer arrays.
      ValueError: wrong rank, mismatched shapes, ids that do not fit int32, or
        a mask that is not right-padded 0/1.
    """
    ids = np.asarray(token_ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"token_ids must hold integer token ids; got dtype {ids.dtype}.")
    if ids.ndim == 1:
        ids = ids[np.newaxis]
    if ids.ndim != 2:
        raise ValueError(f"token_ids must be [num_windows, seq_len]; got shape {ids.shape}.")
    if ids.size and (ids.min() < np.iinfo(np.int32).min or ids.max() > _INT32_MAX):
        raise ValueError("token_ids holds ids that do not fit int32.")
    if padding_mask is None:
        mask = np.ones(ids.shape, dtype=np.int32)
    else:
        mask = np.asarray(padding_mask)
        if mask.ndim == 1:
            mask = mask[np.newaxis]
        if mask.dtype.kind not in "iub":
            raise TypeError(f"padding_mask must hold 0 and 1; got dtype {mask.dtype}.")
    return TokenWindows(
        ids.astype(np.int32), mask.astype(np.int32), dict(metadata) if metadata is not None else {"source": "arrays"}
    )


def validate_windows(
    windows: TokenWindows,
    *,
    vocabulary_size: int | None = None,
    seq_len: int | None = None,
) -> None:
    """Checks that windows fit a model before any work is done with them.

    Args:
      windows: The windows to check.
      vocabulary_size: The model's vocabulary size; every token id must be in
        `[0, vocabulary_size)`.
      seq_len: The model's fixed sequence length.

    Raises:
      ValueError: The sequence length differs, or a token id is out of range
        (the message names the id, the window and the vocabulary size).
    """
    if not isinstance(windows, TokenWindows):
        raise TypeError(f"windows must be TokenWindows; got {type(windows).__name__}.")
    if seq_len is not None:
        _check_int("seq_len", seq_len, minimum=1)
        if windows.seq_len != seq_len:
            raise ValueError(
                f"The windows have seq_len {windows.seq_len} but {seq_len} is expected. "
                f"Rebuild the windows with seq_len={seq_len} (or convert the model with "
                f"seq_len={windows.seq_len})."
            )
    token_ids = windows.token_ids
    made_with = _made_with(windows.metadata)
    minimum = int(token_ids.min())
    if minimum < 0:
        window = int(np.argwhere(token_ids == minimum)[0, 0])
        raise ValueError(
            f"Token id {minimum} in window {window} is negative; token ids must be in "
            f"[0, vocabulary_size). The windows file is corrupt{made_with}."
        )
    if vocabulary_size is not None:
        _check_int("vocabulary_size", vocabulary_size, minimum=1)
        maximum = int(token_ids.max())
        if maximum >= vocabulary_size:
            window = int(np.argwhere(token_ids == maximum)[0, 0])
            raise ValueError(
                f"Token id {maximum} (the largest found, in window {window}) is out of "
                f"range for vocabulary size {vocabulary_size}. The windows were probably "
                f"made with another tokenizer{made_with}; rebuild them with this model's "
                "tokenizer."
            )


def _made_with(metadata: Mapping[str, Any]) -> str:
    if "tokenizer" not in metadata:
        return ""
    return (
        f" (metadata says tokenizer {metadata['tokenizer']}, vocabulary size "
        f"{metadata.get('vocabulary_size', 'unknown')})"
    )


def _check_int(name: str, value: object, *, minimum: int) -> int:
    # bool is an int subclass; True as a seq_len is always a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}.")
    # A numpy integer would make the metadata unserialisable as JSON.
    return int(value)
