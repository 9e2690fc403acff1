"""The built-in model `tiny-gpt2`: a small GPT-2 that the project trains itself.

Nothing can be downloaded here (model hubs are unreachable), so the project
needs a language model it can make from what ships with Python. `tiny-gpt2` is
a keras-hub `GPT2CausalLM` with a SentencePiece tokenizer, both trained on the
built-in corpus (`representative_data.corpus.builtin_corpus()`, Python's own
documentation topics), deterministically from a seed.

`build_tiny_gpt2()` writes a local keras-hub preset folder,
`<build_dir>/tiny-gpt2/preset/`:

    config.json, metadata.json, model.weights.h5    (backbone.save_to_preset)
    tokenizer.json, assets/tokenizer/vocabulary.spm (tokenizer.save_to_preset)
    training.json                                   (settings and figures)

`keras_hub.models.Backbone.from_preset(folder)` and
`keras_hub.tokenizers.Tokenizer.from_preset(folder)` load it back;
`load_tiny_gpt2(folder)` does both and wraps the backbone in a `GPT2CausalLM`
without a preprocessor.

Token ids: 0 is padding (`<pad>`), 1 unknown (`<unk>`; never produced, since
characters outside the vocabulary fall back to byte pieces), 2 beginning of
text (`<s>`; unused in training) and 3 end of text (`</s>`). The training text
is cut by `representative_data` exactly as the converter cuts calibration and
evaluation text (same tokenizer adapter, windows of `sequence_length` tokens,
same seeded split), so the converter's evaluation windows are this model's
held-out windows.

Determinism: the tokenizer is trained single-threaded on every line of the
text, so its proto is byte-identical from run to run. Model initialisation,
the train/evaluation split, dropout and batch order all derive from `seed`; on
CPU, two builds with the same seed and settings give bit-identical weights
(the tests check this on a micro model). The optional time budget trades this
away: where training stops then depends on the machine's speed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from converter.common import files

if TYPE_CHECKING:
    import keras_hub

TINY_GPT2 = "tiny-gpt2"

PAD_TOKEN_ID = 0
UNK_TOKEN_ID = 1
BOS_TOKEN_ID = 2
# End of text: follows every document in the training text.
EOS_TOKEN_ID = 3

TRAINING_REPORT_FILE = "training.json"

# What a finished preset holds. The build writes into a temporary folder and
# renames it into place only when complete; this list checks a folder found on
# disk (for instance one copied by hand).
PRESET_FILES = (
    "config.json",
    "metadata.json",
    "model.weights.h5",
    "tokenizer.json",
    "assets/tokenizer/vocabulary.spm",
    TRAINING_REPORT_FILE,
)


class TinyGpt2TrainingError(RuntimeError):
    """Raised when the trained model does not beat the unigram baseline."""


@dataclasses.dataclass(frozen=True)
class TinyGpt2Settings:
    """Everything that decides what a tiny-gpt2 build produces.

    Recorded in `training.json`; a cached preset is reused only when its
    settings equal the requested ones.

    Attributes:
      seed: Seeds model initialisation, dropout, batch order and the split.
      vocabulary_size: SentencePiece vocabulary size. It must leave room for
        the 4 special pieces, the newline piece, 256 byte-fallback pieces and
        every character of the training text.
      num_layers: Transformer layers.
      num_heads: Attention heads per layer.
      hidden_dim: Width of the residual stream.
      intermediate_dim: Width of the feed-forward layer.
      max_sequence_length: Positions the model supports (size of the position
        embedding).
      sequence_length: Tokens per window (the converter's seq_len); the model
        reads the first `sequence_length - 1` and predicts the next token at
        each.
      dropout: Dropout rate inside the backbone.
      batch_size: Windows per training step.
      epochs: Passes over the training windows.
      learning_rate: Peak AdamW learning rate, reached after linear warmup.
      weight_decay: AdamW decoupled weight decay (not applied to biases,
        LayerNorm parameters or embeddings).
      warmup_fraction: Share of all steps spent warming up; then cosine decay
        down to a tenth of the peak.
      eval_fraction: Share of the windows held out for evaluation.
      max_documents: Use only the first this many corpus documents (tests use
        a small slice); `None` uses all of them.
      time_budget_seconds: Stop training after this much wall time even if
        epochs remain (the result then depends on machine speed); `None`
        trains every epoch.
      min_improvement: The held-out perplexity must be at least this many
        times lower than the unigram baseline's, or the build fails; `None`
        skips the check (micro models in tests cannot pass it).
    """

    seed: int = 0
    vocabulary_size: int = 4096
    num_layers: int = 4
    num_heads: int = 4
    hidden_dim: int = 256
    intermediate_dim: int = 1024
    max_sequence_length: int = 256
    sequence_length: int = 128
    # Tuned on a 2-core machine: batch 8 gives twice the optimizer steps of
    # batch 16 for the same compute, and steps are what this budget lacks
    # (after 3 epochs, held-out perplexity 227 at batch 8 and 2e-3 against
    # 345 at batch 16, 1e-3 and dropout 0.1). Dropout only slows learning
    # this short: the held-out loss still falls in the last epoch.
    dropout: float = 0.0
    batch_size: int = 8
    # About 21 s per epoch on an idle 2-core machine, 40 s when shared.
    epochs: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    eval_fraction: float = 0.1
    max_documents: int | None = None
    time_budget_seconds: float | None = None
    min_improvement: float | None = 2.0

    def validate(self) -> None:
        """Checks the settings before any work starts.

        Raises:
          ValueError: A setting is out of range; the message names it.
        """
        positive = (
            "vocabulary_size",
            "num_layers",
            "num_heads",
            "hidden_dim",
            "intermediate_dim",
            "max_sequence_length",
            "sequence_length",
            "batch_size",
            "epochs",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim ({self.hidden_dim}) must be divisible by num_heads ({self.num_heads}).")
        if self.sequence_length > self.max_sequence_length:
            raise ValueError(
                f"sequence_length ({self.sequence_length}) must not exceed "
                f"max_sequence_length ({self.max_sequence_length})."
            )
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be between 0 and 1, got {self.eval_fraction}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.max_documents is not None and self.max_documents < 1:
            raise ValueError(f"max_documents must be None or at least 1, got {self.max_documents}.")
        if self.time_budget_seconds is not None and self.time_budget_seconds <= 0:
            raise ValueError(f"time_budget_seconds must be None or positive, got {self.time_budget_seconds}.")


_DEFAULTS = TinyGpt2Settings()


@dataclasses.dataclass(frozen=True)
class TrainedTinyGpt2:
    """A freshly trained tiny-gpt2, in memory.

    Attributes:
      causal_lm: The `GPT2CausalLM` (no preprocessor: token ids in, logits
        out).
      tokenizer: Its `SentencePieceTokenizer`.
      eval_windows: The held-out windows, int32 `[N, sequence_length]`.
      report: What `training.json` records (settings, figures, versions).
    """

    causal_lm: Any
    tokenizer: Any
    eval_windows: np.ndarray
    report: dict[str, Any]

    def save(self, preset_dir: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
        """Writes the model, tokenizer and report as a keras-hub preset folder.

        Args:
          preset_dir: The folder to write; created if missing.
          overwrite: Write into a folder that already has files.

        Returns:
          The preset folder.

        Raises:
          FileExistsError: The folder has files and `overwrite` is False.
        """
        folder = pathlib.Path(preset_dir)
        if folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise FileExistsError(
                f"{folder} is not empty. Pass overwrite=True to write into it, or choose an empty folder."
            )
        folder.mkdir(parents=True, exist_ok=True)
        self.causal_lm.backbone.save_to_preset(str(folder))
        self.tokenizer.save_to_preset(str(folder))
        (folder / TRAINING_REPORT_FILE).write_text(json.dumps(self.report, indent=2) + "\n", encoding="utf-8")
        return folder


def tiny_gpt2_preset_dir(build_dir: str | os.PathLike = "build") -> pathlib.Path:
    """Returns where `build_tiny_gpt2` puts the preset folder.

    Args:
      build_dir: The project's build folder.

    Returns:
      `<build_dir>/tiny-gpt2/preset`, whether or not it exists yet.
    """
    return pathlib.Path(build_dir) / TINY_GPT2 / "preset"


def is_complete_preset(preset_dir: str | os.PathLike) -> bool:
    """Tells whether a folder holds every file of a finished tiny-gpt2 preset.

    Args:
      preset_dir: The folder to look at.

    Returns:
      True if all of `PRESET_FILES` are there.
    """
    folder = pathlib.Path(preset_dir)
    return all((folder / name).is_file() for name in PRESET_FILES)


def read_training_report(preset_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads the `training.json` of a tiny-gpt2 preset.

    Args:
      preset_dir: A folder written by `build_tiny_gpt2`.

    Returns:
      The report: settings, held-out and unigram perplexity, timings,
      package versions.

    Raises:
      FileNotFoundError: The folder has no `training.json`.
    """
    path = pathlib.Path(preset_dir) / TRAINING_REPORT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: build the preset with build_tiny_gpt2() first.")
    return json.loads(path.read_text(encoding="utf-8"))


def build_tiny_gpt2(
    *,
    build_dir: str | os.PathLike = "build",
    seed: int = _DEFAULTS.seed,
    epochs: int = _DEFAULTS.epochs,
    force: bool = False,
    vocabulary_size: int = _DEFAULTS.vocabulary_size,
    num_layers: int = _DEFAULTS.num_layers,
    num_heads: int = _DEFAULTS.num_heads,
    hidden_dim: int = _DEFAULTS.hidden_dim,
    intermediate_dim: int = _DEFAULTS.intermediate_dim,
    max_sequence_length: int = _DEFAULTS.max_sequence_length,
    sequence_length: int = _DEFAULTS.sequence_length,
    dropout: float = _DEFAULTS.dropout,
    batch_size: int = _DEFAULTS.batch_size,
    learning_rate: float = _DEFAULTS.learning_rate,
    weight_decay: float = _DEFAULTS.weight_decay,
    warmup_fraction: float = _DEFAULTS.warmup_fraction,
    eval_fraction: float = _DEFAULTS.eval_fraction,
    max_documents: int | None = _DEFAULTS.max_documents,
    time_budget_seconds: float | None = _DEFAULTS.time_budget_seconds,
    min_improvement: float | None = _DEFAULTS.min_improvement,
    verbose: int = 2,
) -> pathlib.Path:
    """Trains tiny-gpt2 and its tokenizer into a preset folder, or reuses it.

    A complete preset built with the same settings is returned at once. A new
    one is built in a temporary folder beside the final one and renamed into
    place when complete, so an interrupted build never leaves a half-written
    preset (at most a `.preset-*.tmp` folder, safe to delete).

    Args:
      build_dir: The project's build folder; the preset goes to
        `<build_dir>/tiny-gpt2/preset`.
      seed: Seeds model initialisation, dropout, batch order and the split.
      epochs: Passes over the training windows.
      force: Rebuild even if a complete preset is already there.
      vocabulary_size: SentencePiece vocabulary size.
      num_layers: Transformer layers.
      num_heads: Attention heads per layer.
      hidden_dim: Width of the residual stream.
      intermediate_dim: Width of the feed-forward layer.
      max_sequence_length: Positions the model supports.
      sequence_length: Input tokens per training window.
      dropout: Dropout rate inside the backbone.
      batch_size: Windows per training step.
      learning_rate: Peak AdamW learning rate.
      weight_decay: AdamW decoupled weight decay.
      warmup_fraction: Share of the steps spent in linear warmup.
      eval_fraction: Share of the windows held out for evaluation.
      max_documents: Train on the first this many corpus documents only.
      time_budget_seconds: Stop training after this much wall time.
      min_improvement: Required ratio of unigram to model perplexity on the
        held-out windows; `None` skips the check.
      verbose: 0 is silent; 1 shows a progress bar per epoch, 2 a line per
        epoch; both print a summary at the end.

    Returns:
      The preset folder.

    Raises:
      ValueError: A setting is out of range, the corpus slice is too small for
        the window length, or a cached preset was built with other settings
        (pass `force=True` to rebuild it).
      TinyGpt2TrainingError: The trained model is not `min_improvement` times
        better than the unigram baseline; nothing is written.
    """
    settings = TinyGpt2Settings(
        seed=seed,
        vocabulary_size=vocabulary_size,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        intermediate_dim=intermediate_dim,
        max_sequence_length=max_sequence_length,
        sequence_length=sequence_length,
        dropout=dropout,
        batch_size=batch_size,
        epochs=epochs,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_fraction=warmup_fraction,
        eval_fraction=eval_fraction,
        max_documents=max_documents,
        time_budget_seconds=time_budget_seconds,
        min_improvement=min_improvement,
    )
    settings.validate()
    final_dir = tiny_gpt2_preset_dir(build_dir)

    if not force and is_complete_preset(final_dir):
        cached = read_training_report(final_dir).get("settings")
        if cached != dataclasses.asdict(settings):
            raise ValueError(
                f"{final_dir} holds a {TINY_GPT2} preset built with other settings "
                f"({_settings_difference(cached, settings)}). Pass force=True to "
                "rebuild it, or choose another build_dir."
            )
        if verbose:
            print(f"{TINY_GPT2}: using the cached preset {final_dir}", flush=True)
        return final_dir

    trained = train_tiny_gpt2(settings, verbose=verbose)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix=".preset-", suffix=".tmp", dir=final_dir.parent))
    try:
        # mkdtemp makes the folder private (0700); the preset is a build
        # artifact that other users and containers may need to read.
        work_dir.chmod(0o755)
        trained.save(work_dir, overwrite=True)
        _check_reload(work_dir, trained)
        files.replace_folder(work_dir, final_dir)
    finally:
        # A no-op after the rename; after a failure it removes the partial
        # build, so that only complete presets ever exist.
        shutil.rmtree(work_dir, ignore_errors=True)

    if verbose:
        print(f"{TINY_GPT2}: wrote {final_dir}", flush=True)
    return final_dir


def train_tiny_gpt2(settings: TinyGpt2Settings | None = None, *, verbose: int = 2) -> TrainedTinyGpt2:
    """Trains the tokenizer and the model in memory, without writing anything.

    Args:
      settings: What to train; `None` means the defaults.
      verbose: 0 is silent; 1 shows a progress bar per epoch, 2 a line per
        epoch; both print the perplexities at the end.

    Returns:
      The trained model, its tokenizer, the held-out windows and the report.

    Raises:
      ValueError: A setting is out of range or the corpus slice is too small
        for the window length.
      TinyGpt2TrainingError: The model is not `settings.min_improvement` times
        better than the unigram baseline on the held-out windows.
    """
    # pylint: disable=import-outside-toplevel
    import keras
    import keras_hub
    import tensorflow as tf

    from representative_data.corpus import builtin_corpus

    settings = settings or TinyGpt2Settings()
    settings.validate()
    started = time.perf_counter()
    documents = builtin_corpus()
    if settings.max_documents is not None:
        documents = documents[: settings.max_documents]
    corpus_text = "".join(documents)

    proto = train_tokenizer_proto(documents, vocabulary_size=settings.vocabulary_size, seed=settings.seed)
    tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=proto)
    train_windows, eval_windows, token_count = _training_windows(documents, tokenizer, settings)
    train_inputs, train_targets = _model_inputs(train_windows)
    eval_inputs, eval_targets = _model_inputs(eval_windows)
    baseline = unigram_perplexity(train_targets, eval_targets, vocabulary_size=settings.vocabulary_size)
    if verbose:
        print(
            f"{TINY_GPT2}: {len(documents)} documents, {len(corpus_text)} characters, "
            f"{token_count} tokens ({len(corpus_text) / token_count:.2f} characters "
            f"per token); {len(train_windows)} training and {len(eval_windows)} "
            f"held-out windows of {settings.sequence_length} tokens",
            flush=True,
        )

    keras.utils.set_random_seed(settings.seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=settings.vocabulary_size,
        num_layers=settings.num_layers,
        num_heads=settings.num_heads,
        hidden_dim=settings.hidden_dim,
        intermediate_dim=settings.intermediate_dim,
        dropout=settings.dropout,
        max_sequence_length=settings.max_sequence_length,
    )
    causal_lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)

    steps_per_epoch = math.ceil(len(train_windows) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    warmup_steps = int(total_steps * settings.warmup_fraction)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else settings.learning_rate,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=0.1,
        warmup_target=settings.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule,
        weight_decay=settings.weight_decay,
        beta_2=0.98,
        global_clipnorm=1.0,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "embeddings"])
    # XLA was slower than plain graph mode for this model on CPU (about 250
    # against 200 microseconds per token at batch 16).
    causal_lm.compile(optimizer=optimizer, jit_compile=False)

    # keras-hub tasks turn arrays into an unshuffled dataset of their own and
    # ignore `shuffle=True`, so shuffle here, seeded, afresh every epoch.
    train_data = (
        tf.data.Dataset.from_tensor_slices((train_inputs, train_targets))
        .shuffle(len(train_windows), seed=settings.seed, reshuffle_each_iteration=True)
        .batch(settings.batch_size)
    )
    eval_data = tf.data.Dataset.from_tensor_slices((eval_inputs, eval_targets)).batch(settings.batch_size)
    callbacks = []
    if settings.time_budget_seconds is not None:
        callbacks.append(_time_budget_callback(settings.time_budget_seconds))
    train_started = time.perf_counter()
    history = causal_lm.fit(
        train_data,
        epochs=settings.epochs,
        shuffle=False,  # Shuffled above; this only keeps Keras from warning.
        validation_data=eval_data,
        callbacks=callbacks,
        verbose=verbose,
    )
    training_seconds = time.perf_counter() - train_started

    eval_perplexity = _model_perplexity(causal_lm, eval_windows, batch_size=settings.batch_size)
    improvement = baseline / eval_perplexity
    if verbose:
        print(
            f"{TINY_GPT2}: held-out perplexity {eval_perplexity:.2f}, unigram "
            f"baseline {baseline:.2f} ({improvement:.1f}x lower) on "
            f"{len(eval_windows)} windows of {settings.sequence_length} tokens; "
            f"trained {len(history.history.get('loss', []))} epochs in "
            f"{training_seconds:.0f} s",
            flush=True,
        )
    if settings.min_improvement is not None and improvement < settings.min_improvement:
        raise TinyGpt2TrainingError(
            f"{TINY_GPT2} did not learn enough: its held-out perplexity "
            f"{eval_perplexity:.2f} is only {improvement:.2f}x lower than the "
            f"unigram baseline's {baseline:.2f} (required: "
            f"{settings.min_improvement}x). Train longer (epochs) or check the "
            "learning rate; nothing was written."
        )

    report = {
        "model": TINY_GPT2,
        "settings": dataclasses.asdict(settings),
        "special_token_ids": {
            "pad": PAD_TOKEN_ID,
            "unk": UNK_TOKEN_ID,
            "bos": BOS_TOKEN_ID,
            "eos": EOS_TOKEN_ID,
        },
        "tokenizer": {
            "type": "sentencepiece unigram, identity normalization, byte fallback",
            "vocabulary_size": tokenizer.vocabulary_size(),
            "proto_sha256": hashlib.sha256(proto).hexdigest(),
        },
        "parameters": int(backbone.count_params()),
        "corpus": {
            "source": "representative_data.corpus.builtin_corpus()",
            "documents": len(documents),
            "characters": len(corpus_text),
            "sha256": hashlib.sha256(corpus_text.encode("utf-8")).hexdigest(),
            "tokens": token_count,
        },
        "train_windows": len(train_windows),
        "eval_windows": len(eval_windows),
        "window_tokens": settings.sequence_length,
        "steps_per_epoch": steps_per_epoch,
        "epochs_completed": len(history.history.get("loss", [])),
        "stopped_by_time_budget": any(callback.stopped for callback in callbacks),
        "history": {key: [float(value) for value in values] for key, values in history.history.items()},
        "eval_perplexity": eval_perplexity,
        "unigram_perplexity": baseline,
        "improvement": improvement,
        "perplexity_convention": (
            "exp of the mean negative log-likelihood over every target token of "
            "the held-out windows (sequence_length targets each, the first token "
            "of a window is context only); the unigram baseline uses add-one "
            "smoothed frequencies of the training windows' targets"
        ),
        "training_seconds": training_seconds,
        "total_seconds": time.perf_counter() - started,
        "versions": _versions(),
        "machine": {
            "platform": platform.platform(),
            "architecture": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
    }
    return TrainedTinyGpt2(causal_lm=causal_lm, tokenizer=tokenizer, eval_windows=eval_windows, report=report)


def load_tiny_gpt2(
    preset_dir: str | os.PathLike,
) -> tuple[keras_hub.models.GPT2CausalLM, keras_hub.tokenizers.Tokenizer]:
    """Loads a tiny-gpt2 preset folder.

    Args:
      preset_dir: A folder written by `build_tiny_gpt2`.

    Returns:
      `(causal_lm, tokenizer)`: a `GPT2CausalLM` without a preprocessor (it
      takes `{"token_ids", "padding_mask"}` and returns logits) and the
      `SentencePieceTokenizer`.

    Raises:
      FileNotFoundError: The folder is not a complete preset.
    """
    folder = pathlib.Path(preset_dir)
    missing = [name for name in PRESET_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a complete {TINY_GPT2} preset (missing: "
            f"{', '.join(missing)}). Build it with build_tiny_gpt2()."
        )
    import keras_hub  # pylint: disable=import-outside-toplevel

    backbone = keras_hub.models.Backbone.from_preset(str(folder))
    with warnings.catch_warnings():
        # keras-hub 0.32 reads the proto with `open(path).read()` and never
        # closes the file; CPython closes it at once, with a ResourceWarning
        # that a warnings-as-errors test run would turn into a failure.
        warnings.simplefilter("ignore", ResourceWarning)
        tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(str(folder))
    causal_lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    return causal_lm, tokenizer


def train_tokenizer_proto(documents: Sequence[str], *, vocabulary_size: int, seed: int = 0) -> bytes:
    """Trains a lossless SentencePiece unigram model on documents.

    `keras_hub.tokenizers.compute_sentence_piece_proto` hard-codes NFKC
    normalisation with whitespace folding, which destroys newlines and code
    indentation, and offers no byte fallback. So this calls the `sentencepiece`
    trainer that it wraps directly, with the same special ids (pad 0, unk 1,
    bos 2, eos 3) and options that make `detokenize(tokenize(text)) == text`
    for any UTF-8 text.

    Args:
      documents: Training text.
      vocabulary_size: Number of pieces.
      seed: Seed of sentencepiece's random generator (training uses every
        sentence, so nothing is sampled; this only pins it down).

    Returns:
      A serialized SentencePiece model proto, for
      `keras_hub.tokenizers.SentencePieceTokenizer(proto=...)`.

    Raises:
      ValueError: The vocabulary cannot be trained at that size; the message
        says why.
    """
    import io  # pylint: disable=import-outside-toplevel

    import sentencepiece  # pylint: disable=import-outside-toplevel

    # Lines are the trainer's sentences; "\n" itself is a user-defined piece so
    # that encoding whole documents keeps their line breaks.
    lines = [line for document in documents for line in document.split("\n") if line]
    if not lines:
        raise ValueError("Cannot train a tokenizer on empty text.")
    writer = io.BytesIO()
    sentencepiece.set_random_generator_seed(seed)
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=writer,
            vocab_size=vocabulary_size,
            model_type="unigram",
            # Lossless: no normalisation, no whitespace folding, no implicit
            # leading space, and bytes for characters outside the vocabulary.
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            byte_fallback=True,
            character_coverage=1.0,
            user_defined_symbols=["\n"],
            # Runs of spaces (code indentation) become single pieces.
            allow_whitespace_only_pieces=True,
            split_digits=True,
            max_sentence_length=1 << 16,
            pad_id=PAD_TOKEN_ID,
            unk_id=UNK_TOKEN_ID,
            bos_id=BOS_TOKEN_ID,
            eos_id=EOS_TOKEN_ID,
            # One thread: multi-threaded EM sums in a varying order.
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as error:
        raise ValueError(
            f"Could not train a {vocabulary_size}-piece tokenizer: "
            f"{str(error).rstrip('.')}. The "
            "vocabulary must hold 261 fixed pieces plus every character of the "
            "text, and the text must have enough distinct pieces to fill it."
        ) from error
    return writer.getvalue()


def unigram_perplexity(train_targets: np.ndarray, eval_targets: np.ndarray, *, vocabulary_size: int) -> float:
    """Perplexity of add-one smoothed unigram frequencies.

    Args:
      train_targets: Token ids whose frequencies make the model.
      eval_targets: Token ids to score.
      vocabulary_size: Number of possible ids (each gets one extra count).

    Returns:
      `exp` of the mean negative log-likelihood of `eval_targets`.
    """
    counts = np.bincount(train_targets.ravel(), minlength=vocabulary_size)
    log_probs = np.log(counts + 1.0) - np.log(counts.sum() + vocabulary_size)
    return float(np.exp(-log_probs[eval_targets.ravel()].mean()))


def _settings_difference(cached: Any, settings: TinyGpt2Settings) -> str:
    """Names the settings that differ between a cached preset and a request."""
    if not isinstance(cached, dict):
        return "none recorded"
    differences = [
        f"{key}: cached {cached.get(key)!r}, requested {value!r}"
        for key, value in dataclasses.asdict(settings).items()
        if cached.get(key) != value
    ]
    return "; ".join(differences) or "unknown difference"


def _training_windows(documents, tokenizer, settings) -> tuple[np.ndarray, np.ndarray, int]:
    """Training and held-out windows, cut exactly as `representative_data.build_windows` cuts them.

    The converter's CLI cuts the same corpus with the same tokenizer, seq_len
    and seed through `build_windows`, so its evaluation windows are this
    model's held-out windows: accuracy is measured on text it never trained
    on, and calibration (the other split) is text it did train on.

    Returns:
      (training windows, held-out windows, token count); windows are int32
      `[N, sequence_length]`, full windows only (a padded tail is dropped).

    Raises:
      ValueError: the text is too small for two windows of that length.
    """
    # pylint: disable=import-outside-toplevel
    from representative_data import TokenizerAdapter, make_windows, split_windows

    adapter = TokenizerAdapter(tokenizer)
    stream = adapter.encode_documents(documents, separator_id=adapter.end_token_id)
    try:
        windows = make_windows(stream, seq_len=settings.sequence_length)
        if round(windows.num_windows * settings.eval_fraction) >= windows.num_windows:
            # split_windows would quietly keep one window for training.
            raise ValueError(f"holding out {settings.eval_fraction:.0%} of {windows.num_windows} leaves none")
        training, held_out = split_windows(windows, evaluation_fraction=settings.eval_fraction, seed=settings.seed)
    except ValueError as error:
        raise ValueError(
            f"The text makes too few windows of {settings.sequence_length} tokens to hold "
            f"some out ({error}). Use more documents (max_documents) or a shorter "
            "sequence_length."
        ) from error

    def full(split):
        return split.token_ids[split.padding_mask.all(axis=1)]

    training_windows, held_out_windows = full(training), full(held_out)
    if not len(training_windows) or not len(held_out_windows):
        raise ValueError(
            f"The text makes too few full windows of {settings.sequence_length} tokens to "
            "hold some out. Use more documents (max_documents) or a shorter sequence_length."
        )
    return training_windows, held_out_windows, int(len(stream))


def _model_inputs(windows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Splits windows into GPT2CausalLM inputs and next-token targets."""
    token_ids = windows[:, :-1]
    inputs = {
        "token_ids": token_ids,
        "padding_mask": np.ones(token_ids.shape, dtype=bool),
    }
    return inputs, windows[:, 1:]


def _model_perplexity(causal_lm: Any, windows: np.ndarray, *, batch_size: int) -> float:
    """Perplexity over every target token of the windows, summed in float64."""
    inputs, targets = _model_inputs(windows)
    total_nll = 0.0
    for start in range(0, len(windows), batch_size):
        batch = {key: value[start : start + batch_size] for key, value in inputs.items()}
        logits = np.asarray(causal_lm.predict_on_batch(batch), dtype=np.float64)
        peak = logits.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(logits - peak).sum(axis=-1)) + peak[..., 0]
        target = targets[start : start + batch_size, :, None]
        total_nll += float((log_norm - np.take_along_axis(logits, target, axis=-1)[..., 0]).sum())
    return math.exp(total_nll / targets.size)


def _check_reload(preset_dir: pathlib.Path, trained: TrainedTinyGpt2) -> None:
    """Fails the build if the written preset does not load back the same model.

    Raises:
      RuntimeError: The reloaded model or tokenizer differs from the trained one.
    """
    causal_lm, tokenizer = load_tiny_gpt2(preset_dir)
    inputs, _ = _model_inputs(trained.eval_windows[:1])
    expected = np.asarray(trained.causal_lm.predict_on_batch(inputs))
    actual = np.asarray(causal_lm.predict_on_batch(inputs))
    if not np.array_equal(expected, actual):
        raise RuntimeError(
            f"The saved {TINY_GPT2} preset gives other logits than the trained model "
            f"(largest difference {np.abs(expected - actual).max()}): a bug in "
            "saving, nothing was written."
        )
    if tokenizer.get_vocabulary() != trained.tokenizer.get_vocabulary():
        raise RuntimeError(
            f"The saved {TINY_GPT2} tokenizer differs from the trained one: a bug in saving, nothing was written."
        )


def _versions() -> dict[str, str]:
    """Versions of what decides the result, for training.json."""
    # pylint: disable=import-outside-toplevel
    import keras
    import keras_hub
    import sentencepiece
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "sentencepiece": sentencepiece.__version__,
    }


def _time_budget_callback(seconds: float) -> Any:
    """A Keras callback that stops training once `seconds` of wall time are spent.

    Defined inside a function so that importing this module does not import
    Keras. Its `stopped` attribute tells whether it ended training.
    """
    import keras  # pylint: disable=import-outside-toplevel

    class TimeBudget(keras.callbacks.Callback):
        """Stops training after the current step once the budget is spent."""

        def __init__(self, budget: float) -> None:
            super().__init__()
            self.budget = budget
            self.started = 0.0
            self.stopped = False

        def on_train_begin(self, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if time.perf_counter() - self.started > self.budget:
                self.stopped = True
                self.model.stop_training = True

    return TimeBudget(seconds)
