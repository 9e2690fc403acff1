"""`gpt2-6l`: the 6-layer GPT-2 shape of the field notes, for speed figures comparable with theirs.

Random weights (seed 0), hidden 384, 6 heads, 6 layers, feed-forward 1536,
vocabulary 8000, positions up to 256: 13.8 M parameters, the model behind the field notes' stock
converter table. Its tokenizer is real (a lossless SentencePiece unigram trained
on the built-in corpus, as tiny-gpt2's), so the usual text calibration and
evaluation windows work; perplexity of random weights means nothing, but
agreement with fp32 and latency do. The built-in corpus holds too few distinct
pieces for 8000 (sentencepiece stops at about 4700), so the tokenizer has 4096
pieces and text never reaches ids 4096..7999; the logits layer still computes
all 8000, which is what the speed figures need.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile

GPT2_6L = "gpt2-6l"
VOCABULARY_SIZE = 8000
TOKENIZER_PIECES = 4096
NUM_LAYERS = 6
HIDDEN_DIM = 384
NUM_HEADS = 6
INTERMEDIATE_DIM = 1536
MAX_SEQUENCE_LENGTH = 256
_SEED = 0


def gpt2_6l_preset_dir(build_dir: str | os.PathLike = "build") -> pathlib.Path:
    """`<build_dir>/gpt2-6l/preset`, whether or not it exists yet."""
    return pathlib.Path(build_dir) / GPT2_6L / "preset"


def build_gpt2_6l(*, build_dir: str | os.PathLike = "build") -> pathlib.Path:
    """Writes the preset folder once (about 15 s) and returns it; later calls reuse it."""
    from converter.models import tiny_gpt2  # pylint: disable=import-outside-toplevel

    destination = gpt2_6l_preset_dir(build_dir)
    if (destination / "config.json").is_file() and (destination / "tokenizer.json").is_file():
        print(f"{GPT2_6L}: using the cached preset {destination}", file=sys.stderr)
        return destination
    import keras  # pylint: disable=import-outside-toplevel
    import keras_hub  # pylint: disable=import-outside-toplevel

    import representative_data  # pylint: disable=import-outside-toplevel

    print(
        f"{GPT2_6L}: training a {TOKENIZER_PIECES}-piece tokenizer, building random weights",
        file=sys.stderr,
        flush=True,
    )
    proto = tiny_gpt2.train_tokenizer_proto(representative_data.builtin_corpus(), vocabulary_size=TOKENIZER_PIECES)
    tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=proto)
    keras.utils.set_random_seed(_SEED)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCABULARY_SIZE,
        num_layers=NUM_LAYERS,
        num_heads=NUM_HEADS,
        hidden_dim=HIDDEN_DIM,
        intermediate_dim=INTERMEDIATE_DIM,
        max_sequence_length=MAX_SEQUENCE_LENGTH,
    )
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        folder = pathlib.Path(scratch) / "preset"
        backbone.save_to_preset(str(folder))
        tokenizer.save_to_preset(str(folder))
        folder.rename(destination)
    return destination
