"""From a corpus source and a tokenizer to calibration and evaluation windows."""

from __future__ import annotations

import os
from typing import Any

from representative_data.corpus import corpus_sha256, load_corpus
from representative_data.tokenization import TokenizerAdapter
from representative_data.windows import (
    TokenWindows,
    check_window_options,
    make_windows,
    split_windows,
    validate_windows,
)


def build_windows(
    source: str | os.PathLike[str],
    tokenizer: Any,
    *,
    seq_len: int,
    evaluation_fraction: float = 0.1,
    seed: int = 0,
    separator_id: int | None = None,
    text_field: str = "text",
    max_calibration: int | None = None,
    max_evaluation: int | None = None,
    progress: bool = False,
) -> tuple[TokenWindows, TokenWindows]:
    """Reads a corpus, tokenizes it and cuts disjoint calibration/evaluation windows.

    Options and the corpus are checked before tokenization starts, so a bad
    input fails in a moment rather than after a long tokenization.

    Args:
      source: `"builtin"`, a `.txt` or a `.jsonl` file (see `load_corpus`).
      tokenizer: The model's keras-hub tokenizer, or a `TokenizerAdapter`.
      seq_len: Tokens per window (the model's fixed sequence length), >= 2.
      evaluation_fraction: Share of windows held out for evaluation.
      seed: Seed of the calibration/evaluation split.
      separator_id: Token id put between documents, e.g. the end-of-text id;
        None joins documents directly.
      text_field: The text key of `.jsonl` records.
      max_calibration: Keep at most this many calibration windows.
      max_evaluation: Keep at most this many evaluation windows.
      progress: Print tokenization progress to stderr.

    Returns:
      `(calibration, evaluation)`. Metadata holds `source`, `corpus_sha256`
      (see `corpus_sha256`), `num_documents`, `tokenizer` (class name),
      `vocabulary_size`, `separator_id`, `text_field`, plus the keys added by
      `make_windows` and `split_windows`.

    Raises:
      CorpusError: The corpus cannot be read (before any tokenization).
      ValueError: An option is out of range, or the corpus gives fewer than 2
        windows at this `seq_len`.
    """
    adapter = tokenizer if isinstance(tokenizer, TokenizerAdapter) else TokenizerAdapter(tokenizer)
    check_window_options(
        seq_len=seq_len,
        evaluation_fraction=evaluation_fraction,
        seed=seed,
        max_calibration=max_calibration,
        max_evaluation=max_evaluation,
    )
    documents = load_corpus(source, text_field=text_field)
    # encode_documents checks separator_id before it tokenizes anything.
    token_stream = adapter.encode_documents(documents, separator_id=separator_id, progress=progress)
    metadata = {
        "source": str(source),
        "corpus_sha256": corpus_sha256(documents),
        "num_documents": len(documents),
        "tokenizer": adapter.name,
        "vocabulary_size": adapter.vocabulary_size,
        "separator_id": None if separator_id is None else int(separator_id),
        "text_field": text_field,
    }
    windows = make_windows(token_stream, seq_len=seq_len, metadata=metadata)
    # A tokenizer whose ids exceed its own vocabulary_size() (e.g. added special
    # tokens) would produce windows the model cannot embed.
    validate_windows(windows, vocabulary_size=adapter.vocabulary_size)
    return split_windows(
        windows,
        evaluation_fraction=evaluation_fraction,
        seed=seed,
        max_calibration=max_calibration,
        max_evaluation=max_evaluation,
    )
