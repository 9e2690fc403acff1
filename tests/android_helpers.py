"""Tokenizers and text for the Android export tests, all built here from the built-in corpus."""

from __future__ import annotations

import io
import json
import pathlib

SPECIAL = "<|endoftext|>"
# Real text for tokenizer comparisons: Python documentation (code, prose,
# indentation, runs of '*' and '=') plus lines outside an English vocabulary.
MULTILINGUAL = (
    "Größe, naïve café, déjà vu — «guillemets», ‘curly quotes’… Œuvre, Ærø, ß.\n"
    "日本語のテキストと中文字符、한국어 문장, Ελληνικά, русский текст, العربية, हिन्दी, ไทย\n"
    "emoji 🙂🚀🎉, a family 👩‍👩‍👧 (ZWJ), flags 🇫🇷, skin tone 👍🏽, math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢\n"
    "tabs\tand\t\ttabs, CRLF\r\nline, NBSP\u00a0here, thin\u2009space, ideographic\u3000space\n"
    "   leading spaces, trailing spaces   \n\n\nnumbers 1234567890 3.14159 1e-10 0x1F\n"
    "it's, we're, they'LL, don't, I'M, 'quoted' and \"double\" -- ~~~ ### @@@ $$$\n"
)


def documents(count: int = 12) -> list[str]:
    from representative_data import builtin_corpus

    return builtin_corpus()[:count]


def sample_texts() -> list[str]:
    """About 9 kB of text in pieces: documentation excerpts, the multilingual lines, edge cases."""
    from representative_data import builtin_corpus

    corpus = builtin_corpus()
    excerpts = [corpus[k][:1200] for k in (0, 7, 21, 40, 55, 70)]
    return excerpts + [MULTILINGUAL, "\n\n".join(corpus[3][:800] for _ in range(2)), "", " ", "a", "  x  ", "\n"]


def sentencepiece_tokenizer(*, dummy_prefix: bool = False, byte_fallback: bool = True, user_symbols=("\n",)):
    """A unigram SentencePieceTokenizer; the defaults are tiny-gpt2's options."""
    import keras_hub
    import sentencepiece

    from converter.models import tiny_gpt2

    if not dummy_prefix and byte_fallback and tuple(user_symbols) == ("\n",):
        proto = tiny_gpt2.train_tokenizer_proto(documents(), vocabulary_size=700)
    else:
        lines = [line for document in documents() for line in document.split("\n") if line]
        writer = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=writer,
            vocab_size=700,
            model_type="unigram",
            normalization_rule_name="identity",
            add_dummy_prefix=dummy_prefix,
            remove_extra_whitespaces=dummy_prefix,
            byte_fallback=byte_fallback,
            character_coverage=1.0 if byte_fallback else 0.995,
            user_defined_symbols=list(user_symbols),
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            num_threads=1,
            minloglevel=2,
        )
        proto = writer.getvalue()
    return keras_hub.tokenizers.SentencePieceTokenizer(proto=proto)


def byte_pair_tokenizer(*, vocabulary_size: int = 600, regex: bool = True, add_prefix_space: bool = False):
    """A GPT-2 style byte-level BPE tokenizer with merges trained on the corpus.

    With `regex=False` the merges are trained on whole lines, so they join
    across spaces and punctuation: keras-hub then applies them across word
    boundaries too, which exercises the merge order more than GPT-2's merges.
    """
    import keras_hub
    import tokenizers
    from tokenizers import models, pre_tokenizers, trainers

    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=regex)
    trainer = trainers.BpeTrainer(
        vocab_size=vocabulary_size,
        special_tokens=[SPECIAL],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    texts = documents() if regex else [line for d in documents() for line in d.split("\n") if line]
    backend.train_from_iterator(texts, trainer)
    state = json.loads(backend.to_str())["model"]
    merges = [" ".join(m) if isinstance(m, list) else m for m in state["merges"]]
    return keras_hub.tokenizers.GPT2Tokenizer(
        vocabulary=dict(state["vocab"]), merges=merges, add_prefix_space=add_prefix_space
    )


def write_tokenizer(tokenizer, folder: pathlib.Path, *, name: str = "tok") -> pathlib.Path:
    """Writes a tokenizer's exported files and a manifest holding its section; returns the manifest."""
    from converter.deploy import tokenizer_export

    exported = tokenizer_export.export_tokenizer(tokenizer, name=name)
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, data in exported.files.items():
        (folder / file_name).write_bytes(data)
    manifest = folder / f"{name}.json"
    manifest.write_text(
        json.dumps({"tokenizer": exported.spec, "special_token_ids": exported.special_token_ids}), encoding="utf-8"
    )
    return manifest


def keras_hub_ids(tokenizer, text: str) -> list[int]:
    import numpy as np

    return [int(i) for i in np.asarray(tokenizer(text)).tolist()] if text else []


def keras_hub_text(tokenizer, ids: list[int]) -> str:
    text = tokenizer.detokenize(ids)
    text = text.numpy() if hasattr(text, "numpy") else text
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)
