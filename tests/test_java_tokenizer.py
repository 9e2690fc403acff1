"""The Java tokenizer (android/tokenizer) gives keras-hub's ids and text, compiled and run here."""

from __future__ import annotations

import pathlib
import random
import re
import shutil
import subprocess

import pytest

import android_helpers as helpers

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCES = REPO / "android" / "tokenizer" / "src" / "main" / "java"
CLI = "org.keraslmlitert.tokenizer.TokenizerCli"

TOKENIZERS = {
    # tiny-gpt2's options: identity normalization, no dummy prefix, byte fallback, "\n" user-defined.
    "sentencepiece_like_tiny_gpt2": lambda: helpers.sentencepiece_tokenizer(),
    # SentencePiece's defaults for whitespace, and multi-character user-defined pieces.
    "sentencepiece_dummy_prefix": lambda: helpers.sentencepiece_tokenizer(
        dummy_prefix=True, user_symbols=("\n", "<sep>", "ing▁", "▁▁▁▁")
    ),
    # Rare characters stay unknown: a run of them is one unknown id.
    "sentencepiece_without_byte_fallback": lambda: helpers.sentencepiece_tokenizer(byte_fallback=False),
    "byte_pair_gpt2_merges": lambda: helpers.byte_pair_tokenizer(),
    "byte_pair_cross_word_merges": lambda: helpers.byte_pair_tokenizer(regex=False, add_prefix_space=True),
}


def _texts() -> list[str]:
    """About 9 kB of real text plus random mixes of tricky fragments (ties, specials, bytes)."""
    rng = random.Random(0)
    fragments = [
        "the",
        "ing ",
        "e ",
        "  ",
        "    ",
        "\n",
        "\t",
        "**",
        "===",
        "<sep>",
        helpers.SPECIAL,
        "é",
        "日本",
        "🙂",
        "'s",
        "123",
        "x",
        "\r\n",
        "\u00a0",
    ]
    mixes = ["".join(rng.choice(fragments) for _ in range(rng.randint(1, 30))) for _ in range(150)]
    return helpers.sample_texts() + mixes


@pytest.fixture(scope="module")
def classes(tmp_path_factory) -> pathlib.Path:
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.fail("javac/java not found: run `make setup` (installs default-jdk-headless) or install a JDK 8+.")
    out = tmp_path_factory.mktemp("classes")
    sources = sorted(str(p) for p in SOURCES.rglob("*.java"))
    # --release 8 checks both the language level and that only Java 8 APIs are used.
    completed = subprocess.run(
        ["javac", "--release", "8", "-Xlint:all", "-Werror", "-encoding", "UTF-8", "-d", str(out), *sources],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return out


def _java(classes: pathlib.Path, *args: str) -> str:
    completed = subprocess.run(
        ["java", "-cp", str(classes), CLI, *args],
        capture_output=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode("utf-8", "replace")
    return completed.stdout.decode("utf-8")


def test_java_sources_use_no_android_classes_and_no_library():
    imports = set()
    for source in SOURCES.rglob("*.java"):
        imports |= set(re.findall(r"^import\s+([\w.]+)", source.read_text(encoding="utf-8"), flags=re.M))
    assert imports, "no sources found"
    assert all(name.startswith("java.") for name in imports), sorted(imports)


@pytest.mark.parametrize("case", sorted(TOKENIZERS))
def test_java_ids_and_text_equal_keras_hub(case, classes, tmp_path):
    tokenizer = TOKENIZERS[case]()
    manifest = helpers.write_tokenizer(tokenizer, tmp_path)
    texts = _texts()
    (tmp_path / "texts.txt").write_text("\0".join(texts), encoding="utf-8")
    lines = _java(classes, "encode", str(manifest), str(tmp_path / "texts.txt")).split("\n")
    expected = [helpers.keras_hub_ids(tokenizer, text) for text in texts]
    actual = [[int(token) for token in line.split()] for line in lines[: len(texts)]]
    mismatches = [repr(t[:60]) for t, e, a in zip(texts, expected, actual) if e != a]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} texts differ, e.g. {mismatches[:3]}"
    assert sum(len(text.encode("utf-8")) for text in texts) > 8000
    assert any(len(ids) > 100 for ids in expected)

    # Decoding: every text's ids, and cut-off id runs that split multi-byte characters.
    id_lists = expected + [ids[: len(ids) // 2 + 1] for ids in expected if ids]
    (tmp_path / "ids.txt").write_text("".join(" ".join(map(str, ids)) + "\n" for ids in id_lists), encoding="utf-8")
    decoded = _java(classes, "decode", str(manifest), str(tmp_path / "ids.txt")).split("\0")
    wrong = [i for i, ids in enumerate(id_lists) if decoded[i] != helpers.keras_hub_text(tokenizer, ids)]
    assert not wrong, f"{len(wrong)} decodings differ, e.g. ids {id_lists[wrong[0]][:10]}"


def test_java_rejects_an_unknown_tokenizer_type(classes, tmp_path):
    (tmp_path / "m.json").write_text(
        '{"tokenizer": {"type": "wordpiece", "vocabulary_file": "v.txt", "vocabulary_size": 1}}', encoding="utf-8"
    )
    (tmp_path / "v.txt").write_text("a\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("a", encoding="utf-8")
    completed = subprocess.run(
        ["java", "-cp", str(classes), CLI, "encode", str(tmp_path / "m.json"), str(tmp_path / "t.txt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode != 0
    assert "Unknown tokenizer type 'wordpiece'" in completed.stderr
