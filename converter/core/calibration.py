"""Calibration data in every form a user has, turned into token windows.

Accepted forms (`FORMS`), checked before any model is loaded:

* `"builtin"`, a `.txt` or a `.jsonl` file: text, tokenized with the model's
  own tokenizer and cut into windows;
* a `.npz` file: windows written by `representative_data.save_windows`, or
  any archive holding a `token_ids` array `[N, seq_len]`;
* `representative_data.TokenWindows`;
* an integer array `[N, seq_len]` of token ids;
* a dict of arrays keyed by input name (`token_ids`, optionally
  `padding_mask`), each `[N, seq_len]`;
* a list of such dicts, one window each (`[1, seq_len]` or `[seq_len]`);
* a callable returning an iterable of samples, as
  `TFLiteConverter.representative_dataset` takes: each sample a dict keyed
  by input name or a list of arrays in input order (`token_ids` first).

Anything else is a `TypeError` that lists these forms.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from converter.core import wrapping

FORMS = (
    "'builtin' or a .txt / .jsonl text file (tokenized with the model's tokenizer)",
    "a .npz holding token_ids [N, seq_len] (e.g. written by representative_data.save_windows)",
    "representative_data.TokenWindows",
    "an integer array of token ids [N, seq_len]",
    "a dict of arrays keyed by input name ({'token_ids': [N, seq_len], 'padding_mask': ...})",
    "a list of such dicts, one window each",
    "a callable yielding samples, as TFLiteConverter.representative_dataset takes",
)
_INPUT_NAMES = (wrapping.TOKEN_IDS, wrapping.PADDING_MASK)
_TEXT_SUFFIXES = (".txt", ".jsonl")


def _forms_error(calibration: Any) -> TypeError:
    listed = "".join(f"\n  - {form}" for form in FORMS)
    return TypeError(f"Calibration data of type {type(calibration).__name__} is not understood. Pass one of:{listed}")


def is_text_source(calibration: Any) -> bool:
    """Whether `calibration` names text to tokenize (`builtin`, `.txt`, `.jsonl`)."""
    if not isinstance(calibration, (str, os.PathLike)):
        return False
    text = os.fspath(calibration)
    return text == "builtin" or text.endswith(_TEXT_SUFFIXES)


def check_calibration(calibration: Any) -> None:
    """Validates the form of `calibration` cheaply, before any model is loaded.

    Raises:
      TypeError: not one of `FORMS` (the message lists them).
      FileNotFoundError: a file that does not exist.
      representative_data.CorpusError: a text file that cannot be read.
    """
    import representative_data  # pylint: disable=import-outside-toplevel

    if calibration is None or isinstance(calibration, representative_data.TokenWindows):
        return
    if isinstance(calibration, (str, os.PathLike)):
        text = os.fspath(calibration)
        if text.endswith(".npz"):
            if not os.path.isfile(text):
                raise FileNotFoundError(f"Calibration windows {text!r} do not exist.")
            return
        if is_text_source(text):
            representative_data.load_corpus(text)
            return
        raise ValueError(
            f"Calibration file {text!r} is neither text (.txt, .jsonl, or 'builtin') nor token windows (.npz)."
        )
    if isinstance(calibration, np.ndarray):
        if calibration.dtype.kind not in "iu":
            raise TypeError(f"A calibration array must hold integer token ids; got dtype {calibration.dtype}.")
        return
    if isinstance(calibration, Mapping):
        _check_names(calibration.keys())
        return
    if isinstance(calibration, Sequence) and not isinstance(calibration, (str, bytes)):
        if not calibration:
            raise ValueError("The calibration list is empty; give at least one window.")
        if not all(isinstance(sample, Mapping) for sample in calibration):
            raise _forms_error(calibration)
        for sample in calibration:
            _check_names(sample.keys())
        return
    if callable(calibration):
        return
    raise _forms_error(calibration)


def _check_names(names) -> None:
    names = list(names)
    unknown = [n for n in names if n not in _INPUT_NAMES]
    if unknown or wrapping.TOKEN_IDS not in names:
        raise ValueError(
            f"Calibration inputs {names}: give token_ids (and optionally padding_mask), the converted "
            f"model's input names; {unknown or 'token_ids missing'} is not one of {list(_INPUT_NAMES)}."
        )


def _stack(samples: Sequence[Mapping[str, Any]]):
    ids = [np.asarray(s[wrapping.TOKEN_IDS]).reshape(-1) for s in samples]
    widths = {row.shape[0] for row in ids}
    if len(widths) != 1:
        raise ValueError(f"Calibration windows have different lengths {sorted(widths)}; give one seq_len.")
    masks = None
    if any(wrapping.PADDING_MASK in s for s in samples):
        masks = np.stack(
            [np.asarray(s.get(wrapping.PADDING_MASK, np.ones_like(row))).reshape(-1) for s, row in zip(samples, ids)]
        )
    return np.stack(ids), masks


def _from_callable(dataset: Callable[[], Any], limit: int) -> list[dict[str, Any]]:
    samples = []
    for sample in dataset():
        if isinstance(sample, Mapping):
            _check_names(sample.keys())
            samples.append(dict(sample))
        elif isinstance(sample, (list, tuple)) and sample:
            if len(sample) > len(_INPUT_NAMES):
                raise ValueError(
                    f"A calibration sample holds {len(sample)} arrays; the model takes token_ids "
                    "and optionally padding_mask."
                )
            samples.append(dict(zip(_INPUT_NAMES, sample)))
        elif isinstance(sample, np.ndarray):
            samples.append({wrapping.TOKEN_IDS: sample})
        else:
            raise TypeError(
                f"The representative dataset yielded a {type(sample).__name__}; yield a dict keyed "
                "by input name or a list of arrays in input order."
            )
        if len(samples) >= limit:
            break
    if not samples:
        raise ValueError("The representative dataset yielded no samples.")
    return samples


def to_windows(calibration: Any, *, num_samples: int):
    """Token windows from any form but text (`FORMS`), with a `source` for the report.

    Args:
      calibration: as `check_calibration` accepts, not text.
      num_samples: a callable is read up to this many samples.

    Returns:
      `representative_data.TokenWindows`.

    Raises:
      TypeError, ValueError: the data is not token windows of one length.
    """
    import representative_data  # pylint: disable=import-outside-toplevel

    check_calibration(calibration)
    if isinstance(calibration, representative_data.TokenWindows):
        return calibration
    if isinstance(calibration, (str, os.PathLike)):
        return representative_data.load_windows(calibration)
    if isinstance(calibration, np.ndarray):
        return representative_data.windows_from_arrays(calibration, metadata={"source": "token id array"})
    if isinstance(calibration, Mapping):
        return representative_data.windows_from_arrays(
            calibration[wrapping.TOKEN_IDS],
            calibration.get(wrapping.PADDING_MASK),
            metadata={"source": "dict of arrays"},
        )
    if callable(calibration):
        ids, masks = _stack(_from_callable(calibration, num_samples))
        return representative_data.windows_from_arrays(ids, masks, metadata={"source": "representative dataset"})
    ids, masks = _stack(calibration)
    return representative_data.windows_from_arrays(ids, masks, metadata={"source": "list of dicts"})
