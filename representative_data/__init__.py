"""Text in, token windows out: corpora, tokenizer adapters, windows, calibration data.

Importing this package does not import TensorFlow or Keras; only a keras-hub
tokenizer passed in brings them.
"""

from representative_data.calibration import (
    SUPPORTED_INPUT_NAMES,
    RepresentativeDataset,
    representative_dataset,
)
from representative_data.corpus import (
    BUILTIN_CORPUS,
    SUPPORTED_EXTENSIONS,
    CorpusError,
    builtin_corpus,
    corpus_sha256,
    load_corpus,
)
from representative_data.pipeline import build_windows
from representative_data.tokenization import TokenizerAdapter, chunk_text
from representative_data.windows import (
    PAD_ID,
    SPLIT_CALIBRATION,
    SPLIT_EVALUATION,
    TokenWindows,
    check_window_options,
    load_windows,
    make_windows,
    save_windows,
    split_windows,
    validate_windows,
    windows_from_arrays,
)

__all__ = [
    "BUILTIN_CORPUS",
    "PAD_ID",
    "SPLIT_CALIBRATION",
    "SPLIT_EVALUATION",
    "SUPPORTED_EXTENSIONS",
    "SUPPORTED_INPUT_NAMES",
    "CorpusError",
    "RepresentativeDataset",
    "TokenWindows",
    "TokenizerAdapter",
    "build_windows",
    "builtin_corpus",
    "check_window_options",
    "chunk_text",
    "corpus_sha256",
    "load_corpus",
    "load_windows",
    "make_windows",
    "representative_dataset",
    "save_windows",
    "split_windows",
    "validate_windows",
    "windows_from_arrays",
]
