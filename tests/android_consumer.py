"""Uses an exported asset folder the way an app does, with nothing from this project.

    python tests/android_consumer.py <folder> [--name=<name>] [--prompt=TEXT] [--steps=N]

It reads the manifest, checks every file's sha256 and that the model's embedded
manifest matches, loads the model with `ai_edge_litert`, tokenizes the prompt
with the exported vocabulary (and merges), decodes greedily for a few tokens
and prints JSON: prompt ids, generated ids and the generated text. A
generation model (the manifest's `model.generation`) runs as
`android/.../CachedGenerator.kt` runs it: the prompt prefilled in chunks, then
one decode per token, the KV caches each step returns fed to the next. Besides the
standard library it imports numpy and ai_edge_litert only: what it needs is
in the folder and in the format the README documents, which is what
`tests/test_android_export.py` checks.
"""

from __future__ import annotations

import argparse
import array
import hashlib
import heapq
import json
import pathlib
import sys

import numpy as np
from ai_edge_litert import interpreter as litert
from ai_edge_litert import schema_py_generated as schema

FORMAT = "keras-lm-litert-android"
METADATA_NAME = "keras_lm_litert_manifest"
SPACE = "\u2581"


def read_lines(path: pathlib.Path) -> list[str]:
    """One entry per line feed (not str.splitlines: tokens may hold U+2028)."""
    text = path.read_text(encoding="utf-8")
    return text[:-1].split("\n") if text else []


def unescape(token: str) -> str:
    out, i = [], 0
    while i < len(token):
        if token[i] == "\\":
            out.append({"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}[token[i + 1]])
            i += 2
        else:
            out.append(token[i])
            i += 1
    return "".join(out)


class Unigram:
    """SentencePiece unigram: float32 Viterbi over pieces, byte fallback."""

    def __init__(self, lines: list[str], options: dict):
        self.options = options
        self.pieces, self.scores, self.types, self.bytes = [], [], [], {}
        self.trie: dict = {}
        for index, line in enumerate(lines):
            piece, score, kind = line.split("\t")
            piece = unescape(piece)
            self.pieces.append(piece)
            self.scores.append(float(score))
            self.types.append(kind)
            if kind in ("normal", "user_defined", "unused"):
                node = self.trie
                for character in piece:
                    node = node.setdefault(character, {})
                node[None] = index
            elif kind == "byte":
                self.bytes[int(piece[3:5], 16)] = index

    def normalize(self, text: str) -> str:
        remove = self.options["remove_extra_whitespaces"]
        if remove:
            text = text.lstrip(" ")
        if not text:
            return ""
        space = SPACE if self.options["escape_whitespaces"] else " "
        out, previous_space = [space] if self.options["add_dummy_prefix"] else [], remove
        for character in text:
            if character == " ":
                if not previous_space:
                    out.append(space)
                previous_space = remove
            else:
                out.append(character)
                previous_space = False
        result = "".join(out)
        while remove and result.endswith(space):
            result = result[: -len(space)]
        return result

    def encode(self, text: str) -> list[int]:
        s = self.normalize(text)
        n = len(s)
        score = array.array("f", [0.0] * (n + 1))  # float32, as SentencePiece adds
        scratch = array.array("f", [0.0])
        start_of, id_of = [-1] * (n + 1), [0] * (n + 1)
        for start in range(n):
            covered, node = False, self.trie
            for end in range(start + 1, n + 1):
                node = node.get(s[end - 1])
                if node is None:
                    break
                index = node.get(None)
                if index is None or self.types[index] == "unused":
                    continue
                scratch[0] = self.scores[index] + score[start]
                if start_of[end] < 0 or scratch[0] > score[end]:
                    score[end], start_of[end], id_of[end] = scratch[0], start, index
                covered = covered or end == start + 1
            if not covered:
                scratch[0] = self.options["unknown_score"] + score[start]
                if start_of[start + 1] < 0 or scratch[0] > score[start + 1]:
                    score[start + 1], start_of[start + 1], id_of[start + 1] = scratch[0], start, self.options["unk_id"]
        spans, end = [], n
        while end > 0:
            spans.append((start_of[end], end, id_of[end]))
            end = start_of[end]
        ids, previous_unknown = [], False
        for start, end, index in reversed(spans):
            unknown = index == self.options["unk_id"]
            if unknown and self.options["byte_fallback"]:
                ids += [self.bytes[b] for b in s[start:end].encode("utf-8")]
            elif not (unknown and previous_unknown):
                ids.append(index)
            previous_unknown = unknown
        return ids

    def decode(self, ids: list[int]) -> str:
        parts, pending, at_start = [], bytearray(), True
        for index in ids:
            kind, piece = self.types[index], self.pieces[index]
            if kind == "byte":
                pending.append(int(piece[3:5], 16))
                continue
            parts.append(decode_per_byte(pending))
            pending.clear()
            at_start = at_start and not "".join(parts)
            if kind == "control":
                continue
            dropped = False
            strips = self.options["add_dummy_prefix"] or self.options["remove_extra_whitespaces"]
            if at_start and strips and piece.startswith(SPACE):
                piece, dropped = piece[1:], not self.options["remove_extra_whitespaces"]
            parts.append(self.options["unk_surface"] if kind == "unknown" else piece.replace(SPACE, " "))
            at_start = at_start and not dropped and not "".join(parts)
        parts.append(decode_per_byte(pending))
        return "".join(parts)


def decode_per_byte(data: bytearray) -> str:
    """UTF-8 text, one U+FFFD per byte that starts no valid character (as SentencePiece)."""
    out, i = [], 0
    while i < len(data):
        for length in (1, 2, 3, 4):
            try:
                out.append(bytes(data[i : i + length]).decode("utf-8"))
                i += length
                break
            except UnicodeDecodeError:
                pass
        else:
            out.append("\ufffd")
            i += 1
    return "".join(out)


def byte_characters() -> list[str]:
    """GPT-2's byte-to-character table."""
    kept = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    table, extra = [], 0
    for value in range(256):
        if value in kept:
            table.append(chr(value))
        else:
            table.append(chr(256 + extra))
            extra += 1
    return table


class ByteLevelBpe:
    """Byte-level BPE: special tokens cut out, bytes mapped to characters, merges by rank."""

    def __init__(self, lines: list[str], merge_lines: list[str], options: dict):
        self.tokens = [unescape(line) for line in lines]
        self.ids = {token: index for index, token in enumerate(self.tokens)}
        self.merges = {}
        for rank, line in enumerate(merge_lines):
            left, right = (unescape(part) for part in line.split(" "))
            self.merges[(self.ids[left], self.ids[right])] = (rank, self.ids[left + right])
        self.special = options["special_tokens"]
        self.literal = options["split_literal"]
        self.prefix_space = options["add_prefix_space"]
        self.chars = byte_characters()
        self.byte_of = {c: b for b, c in enumerate(self.chars)}

    def encode(self, text: str) -> list[int]:
        ids, i, start = [], 0, 0
        while i < len(text):
            found = [s for s in self.special if text.startswith(s, i)]
            if found:
                longest = max(found, key=len)
                self.encode_segment(text[start:i], ids)
                ids.append(self.ids[longest])
                i = start = i + len(longest)
            else:
                i += 1
        self.encode_segment(text[start:], ids)
        return ids

    def encode_segment(self, segment: str, ids: list[int]) -> None:
        for k, part in enumerate(segment.split(self.literal)):
            if k:
                self.encode_word(self.literal, ids)
            self.encode_word(part, ids)

    def encode_word(self, word: str, ids: list[int]) -> None:
        if not word:
            return
        if self.prefix_space and not word.startswith(" "):
            word = " " + word
        symbols = [self.ids[self.chars[b]] for b in word.encode("utf-8") if self.chars[b] in self.ids]
        n = len(symbols)
        left, right, gone = list(range(-1, n - 1)), list(range(1, n)) + [-1], [False] * n
        queue = [
            (self.merges[p][0], i, self.merges[p][1])
            for i, p in enumerate(zip(symbols, symbols[1:]))
            if p in self.merges
        ]
        heapq.heapify(queue)
        while queue:
            _, i, merged = heapq.heappop(queue)
            j = right[i]
            if gone[i] or j < 0 or self.merges.get((symbols[i], symbols[j]), (0, -1))[1] != merged:
                continue
            symbols[i], gone[j], right[i] = merged, True, right[j]
            if right[j] >= 0:
                left[right[j]] = i
            for a, b, at in ((left[i], i, left[i]), (i, right[i], i)):
                if a >= 0 and b >= 0 and (symbols[a], symbols[b]) in self.merges:
                    rank, new = self.merges[(symbols[a], symbols[b])]
                    heapq.heappush(queue, (rank, at, new))
        ids.extend(s for s, g in zip(symbols, gone) if not g)

    def decode(self, ids: list[int]) -> str:
        data = bytearray()
        for index in ids:
            token = self.tokens[index]
            if all(c in self.byte_of for c in token):
                data.extend(self.byte_of[c] for c in token)
            else:
                data.extend(token.encode("utf-8"))
        return data.decode("utf-8", errors="replace")


def embedded_manifest(model_bytes: bytes) -> dict:
    """The manifest stored in the model's metadata."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_NAME:
            return json.loads(bytes(model.buffers[entry.buffer].data).decode("utf-8"))
    raise ValueError(f"The model has no {METADATA_NAME} metadata.")


def load_export(folder: pathlib.Path, name: str | None = None) -> dict:
    """Reads and checks the manifest: format, file hashes, embedded copy."""
    if name is None:
        manifests = [
            p for p in folder.glob("*.json") if json.loads(p.read_text(encoding="utf-8")).get("format") == FORMAT
        ]
        if len(manifests) != 1:
            raise ValueError(f"{folder} holds {len(manifests)} exports; pass --name.")
        name = manifests[0].stem
    manifest = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT or manifest.get("format_version") != 1:
        raise ValueError(f"{name}.json is not a {FORMAT} version 1 manifest.")
    for file_name, expected in manifest["files"].items():
        data = (folder / file_name).read_bytes()
        if hashlib.sha256(data).hexdigest() != expected["sha256"] or len(data) != expected["size_bytes"]:
            raise ValueError(f"{file_name} does not match the hash in {name}.json.")
    model_file = manifest["model"]["file"]
    inside = embedded_manifest((folder / model_file).read_bytes())
    outside = dict(manifest, files={k: v for k, v in manifest["files"].items() if k != model_file})
    if inside != outside:
        raise ValueError(f"The manifest embedded in {model_file} differs from {name}.json.")
    return manifest


def load_tokenizer(folder: pathlib.Path, spec: dict):
    vocabulary = read_lines(folder / spec["vocabulary_file"])
    if spec["type"] == "sentencepiece_unigram":
        return Unigram(vocabulary, spec["sentencepiece"])
    if spec["type"] == "byte_level_bpe":
        return ByteLevelBpe(vocabulary, read_lines(folder / spec["merges_file"]), spec["byte_level_bpe"])
    raise ValueError(f"Unknown tokenizer type {spec['type']!r}.")


def greedy(folder: pathlib.Path, manifest: dict, prompt_ids: list[int], steps: int) -> list[int]:
    """Appends the most likely next token `steps` times (stops after EOS).

    The model has a fixed [1, seq_len] input: the last seq_len tokens go first,
    padding after them (causal attention never looks ahead), and the logits at
    the last real position give the next token.
    """
    model = manifest["model"]
    seq_len = model["seq_len"]
    pad = manifest["special_token_ids"]["pad"] or 0
    eos = manifest["special_token_ids"]["eos"]
    runner = litert.Interpreter(model_path=str(folder / model["file"])).get_signature_runner(model["signature_key"])
    names = {entry["name"] for entry in model["inputs"]}
    logits_entry = model["outputs"][0]
    tokens = list(prompt_ids)
    generated = []
    for _ in range(steps):
        window = tokens[-seq_len:]
        token_ids = np.full((1, seq_len), pad, dtype=np.int32)
        token_ids[0, : len(window)] = window
        feed = {"token_ids": token_ids}
        if "padding_mask" in names:
            feed["padding_mask"] = (np.arange(seq_len) < len(window)).astype(np.int32)[None, :]
        logits = runner(**feed)[logits_entry["name"]][0, len(window) - 1]
        if logits_entry["quantization"]:
            q = logits_entry["quantization"]
            logits = (logits.astype(np.float32) - q["zero_point"][0]) * q["scale"][0]
        next_id = int(np.argmax(logits))
        tokens.append(next_id)
        generated.append(next_id)
        if next_id == eos:
            break
    return generated


def cached_greedy(folder: pathlib.Path, manifest: dict, prompt_ids: list[int], steps: int) -> list[int]:
    """Greedy decoding with a generation model, making the calls `CachedGenerator.kt` makes.

    The shortest context that holds the prompt and `steps` new tokens is used;
    its caches start at zero. The prompt goes through the prefill signatures in
    chunks (the shortest that takes what is left, else the longest; a short
    chunk padded with id 0 at position 0), then each token through decode.
    Every step's returned caches are the next step's inputs, and only the
    last position's logits are read. Stops after a stop token (kept, as
    `benchmarks.generation.Generator` keeps it; the text leaves it out).
    """
    model = manifest["model"]
    generation = model["generation"]
    needed = len(prompt_ids) + steps
    fitting = [c for c in generation["contexts"] if c["context"] >= needed]
    if not fitting:
        raise ValueError(f"{needed} positions do not fit the model's contexts.")
    context = min(fitting, key=lambda c: c["context"])
    interpreter = litert.Interpreter(model_path=str(folder / model["file"]), num_threads=2)
    caches = {name: np.zeros(context["cache_shape"], np.float32) for name in generation["cache_names"]}
    stop = set(generation["stop_token_ids"])

    def run(signature: str, tokens: list[int], positions: list[int]) -> np.ndarray:
        nonlocal caches
        outputs = interpreter.get_signature_runner(signature)(
            **{
                generation["tokens"]: np.asarray([tokens], np.int32),
                generation["input_pos"]: np.asarray(positions, np.int32),
            },
            **caches,
        )
        caches = {name: outputs[name] for name in generation["cache_names"]}
        return outputs[generation["logits"]].reshape(-1)

    lengths = sorted(int(t) for t in context["prefill"])
    position, remaining, logits = 0, list(prompt_ids), None
    while remaining:
        length = next((t for t in lengths if t >= len(remaining)), lengths[-1])
        chunk, remaining = remaining[:length], remaining[length:]
        padding = length - len(chunk)
        positions = list(range(position, position + len(chunk))) + [0] * padding
        logits = run(context["prefill"][str(length)], chunk + [0] * padding, positions)
        position += len(chunk)
    generated = []
    while len(generated) < steps:
        next_id = int(np.argmax(logits))
        generated.append(next_id)
        if next_id in stop or len(generated) == steps:
            break
        logits = run(context["decode"], [next_id], [position])
        position += 1
    return generated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=pathlib.Path)
    parser.add_argument("--name")
    parser.add_argument("--prompt", default="def ")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args(argv)
    manifest = load_export(args.folder, args.name)
    tokenizer = load_tokenizer(args.folder, manifest["tokenizer"])
    prompt_ids = tokenizer.encode(args.prompt)
    decode = cached_greedy if manifest["model"].get("generation") else greedy
    generated = decode(args.folder, manifest, prompt_ids, args.steps)
    json.dump(
        {"prompt_ids": prompt_ids, "generated_ids": generated, "text": tokenizer.decode(generated)},
        sys.stdout,
        ensure_ascii=False,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
