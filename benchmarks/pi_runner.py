"""Runs a Raspberry Pi bench pack: checks it, records the board, sweeps threads, writes results.

In a pack this file is `run_pi.py`, beside `benchmarks/`, the models and the
evaluation windows:

    python run_pi.py [--threads=1,2,3,4] [--repeats=3] [--runtime=ai-edge-litert]
        [--results_dir=results] [--cooldown=0] [--max_windows=N] [--prompt="..."] [--nogeneration]

Before anything is imported from the pack, every file listed in
`MANIFEST.sha256` is checked against its sha256; a pack that was changed or
damaged is refused. Then each model runs at every thread count, `--repeats`
times over (repeats outermost, so a Pi that heats up spreads its slowdown over
all models), with the board's temperature, clocks and throttling read before
and after each run. Accuracy is measured once per model. Each run writes one
result file (`benchmarks/results.py`'s format, with a `device` field); a model
the runtime refuses is reported and skipped. The standard library only until
the pack is verified; then numpy and the LiteRT runtime.

A pack with generation models then measures each one the same way, thread
count by thread count and repeat by repeat (`benchmarks.generation_bench`:
prefill and decode tokens per second, time to first token, decode cost by
cache fill, peak memory, with the fixed-window model of the same mode as the
no-cache baseline), and continues the pack's prompt with each at the largest
thread count, through the tokenizer files beside it (`requirements-text.txt`).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import pathlib
import sys
import time

MANIFEST = "MANIFEST.sha256"
PACK_FILE = "pack.json"
PACK_SCHEMA = "keras-lm-litert/pi-pack/1"
RUN_SCHEMA = "keras-lm-litert/pi-run/1"


class PackError(Exception):
    """The pack is incomplete, changed or damaged."""


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(pack_dir: pathlib.Path) -> dict[str, str]:
    """Relative path -> sha256, from `MANIFEST.sha256` (`sha256sum` format)."""
    manifest = pack_dir / MANIFEST
    if not manifest.is_file():
        raise PackError(
            f"{str(pack_dir)!r} has no {MANIFEST}, so it is not a whole bench pack. Unpack the tarball "
            "again (tar -xzf pi-pack-<model>.tar.gz) and run run_pi.py from the folder it makes."
        )
    entries = {}
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        digest, separator, name = line.partition("  ")
        if not separator or len(digest) != 64 or not name:
            raise PackError(f"{MANIFEST} line {number} is damaged ({line[:80]!r}). Unpack the tarball again.")
        relative = pathlib.PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise PackError(f"{MANIFEST} names {name!r}, outside the pack. Unpack the tarball again.")
        entries[name] = digest
    return entries


def verify_pack(pack_dir: pathlib.Path) -> dict:
    """Checks every file of the manifest, then returns the pack's description (`pack.json`).

    Raises:
      PackError: a file is missing or differs from its sha256, or the
        description names a file the manifest does not cover.
    """
    entries = read_manifest(pack_dir)
    missing, changed = [], []
    for name, digest in sorted(entries.items()):
        path = pack_dir / name
        if not path.is_file():
            missing.append(name)
        elif sha256_of(path) != digest:
            changed.append(name)
    if missing or changed:
        details = [f"changed: {name}" for name in changed] + [f"missing: {name}" for name in missing]
        shown = "; ".join(details[:5]) + (f"; and {len(details) - 5} more" if len(details) > 5 else "")
        raise PackError(
            f"The pack was changed or damaged after it was built ({shown}). Nothing was run. Copy the "
            "tarball again, check it with `sha256sum -c pi-pack-<model>.tar.gz.sha256`, and unpack it "
            "into an empty folder."
        )
    if PACK_FILE not in entries:
        raise PackError(f"{MANIFEST} does not cover {PACK_FILE}. Unpack the tarball again.")
    pack = json.loads((pack_dir / PACK_FILE).read_text(encoding="utf-8"))
    if pack.get("schema") != PACK_SCHEMA:
        raise PackError(f"{PACK_FILE} is not a bench pack description ({PACK_SCHEMA}). Rebuild the pack.")
    named = (
        [m["path"] for m in pack["models"]]
        + [pack["evaluation"]]
        + [name for g in pack.get("generation", []) for name in [g["path"], *g["tokenizer_files"]]]
    )
    uncovered = [name for name in named if name not in entries]
    if uncovered:
        raise PackError(f"{MANIFEST} does not cover {', '.join(uncovered)}. Rebuild the pack (make pi-pack).")
    return pack


def _threads(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads takes integers, e.g. 1,2,3,4; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every thread count must be at least 1; got {text!r}")
    return values


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {text!r}")
    return value


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the models of this pack on this board.")
    parser.add_argument(
        "--pack",
        type=pathlib.Path,
        default=pathlib.Path(__file__).resolve().parent,
        help="The unpacked pack folder (default: the folder of this script).",
    )
    parser.add_argument("--threads", type=_threads, default=[1, 2, 3, 4], help="Thread counts (default 1,2,3,4).")
    parser.add_argument("--repeats", type=_positive, default=3, help="Sweeps over all models and threads (default 3).")
    parser.add_argument(
        "--runtime",
        default="ai-edge-litert",
        choices=["ai-edge-litert", "tflite-runtime"],
        help="LiteRT packaging installed in this venv (default ai-edge-litert).",
    )
    parser.add_argument(
        "--results_dir",
        type=pathlib.Path,
        default=None,
        help="Where result files go (default: results/ inside the pack).",
    )
    parser.add_argument("--cooldown", type=float, default=0.0, help="Seconds to pause before each run.")
    parser.add_argument("--runs", type=_positive, default=50, help="Timed runs per benchmark (at least).")
    parser.add_argument("--min_seconds", type=float, default=1.0, help="Time each benchmark at least this long.")
    parser.add_argument(
        "--max_seconds",
        type=float,
        default=30.0,
        help="Stop timing a slow model after this long (at least 3 runs; default 30).",
    )
    parser.add_argument("--max_windows", type=_positive, default=None, help="Score at most this many windows.")
    parser.add_argument("--modes", default=None, help="Only these modes, comma separated (default: all in the pack).")
    parser.add_argument(
        "--nogeneration",
        dest="generation",
        action="store_false",
        help="Skip the generation models (measured after the window models by default).",
    )
    parser.add_argument("--prompt", default=None, help="Text the generation models continue (default: the pack's).")
    parser.add_argument("--max_new_tokens", type=_positive, default=32, help="Tokens of the text reply (default 32).")
    parser.add_argument(
        "--new_tokens", type=_positive, default=128, help="tg<N>: tokens generated when timing decode (default 128)."
    )
    arguments = parser.parse_args(argv)
    if arguments.prompt is not None and not arguments.prompt.strip():
        parser.error("--prompt is empty: give the text to continue.")
    return arguments


def _log(message: str) -> None:
    print(f"[pi] {message}", file=sys.stderr, flush=True)


def run(arguments: argparse.Namespace, pack: dict) -> tuple[list[pathlib.Path], list[dict]]:
    """The sweep. Returns (result files written, models the runtime refused)."""
    # Imported only now: the pack has been verified.
    import dataclasses  # pylint: disable=import-outside-toplevel

    from benchmarks import device, harness, results, runtimes  # pylint: disable=import-outside-toplevel
    from converter.common import files  # pylint: disable=import-outside-toplevel

    pack_dir = arguments.pack.resolve()
    results_dir = results.check_results_dir(arguments.results_dir or pack_dir / "results")
    runtimes.runtime_info(runtimes.parse_runtime(arguments.runtime))
    models = pack["models"]
    if arguments.modes:
        wanted = [m.strip() for m in arguments.modes.split(",") if m.strip()]
        unknown = sorted(set(wanted) - {m["mode"] for m in models})
        if unknown:
            raise ValueError(
                f"--modes names {', '.join(unknown)}, which the pack lacks; it has "
                f"{', '.join(m['mode'] for m in models)}."
            )
        models = [m for m in models if m["mode"] in wanted]
    evaluation = pack_dir / pack["evaluation"]
    reference = pack_dir / pack["reference"] if pack.get("reference") else None
    facts = device.device_facts()
    sweep_id = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    _log(
        f"board: {facts['board'] or 'unknown (not a Raspberry Pi?)'}; {len(models)} models x threads "
        f"{arguments.threads} x {arguments.repeats} repeats"
    )
    written: list[pathlib.Path] = []
    refused: dict[str, dict] = {}
    measured_accuracy: set[str] = set()
    total = len(models) * len(arguments.threads) * arguments.repeats
    done = 0
    for repeat in range(1, arguments.repeats + 1):
        for model in models:
            if model["mode"] in refused:
                continue
            for threads in arguments.threads:
                done += 1
                if arguments.cooldown:
                    time.sleep(arguments.cooldown)
                score = model["mode"] not in measured_accuracy
                before = device.device_state()
                _log(
                    f"{done}/{total}: {model['mode']}, {threads} thread(s), repeat {repeat}; "
                    f"SoC {before.soc_temperature_c if before.soc_temperature_c is not None else '?'} °C"
                )
                try:
                    result = harness.benchmark_file(
                        pack_dir / model["path"],
                        runtime=arguments.runtime,
                        threads=threads,
                        evaluation=evaluation if score else None,
                        reference=reference if score else None,
                        runs=arguments.runs,
                        min_seconds=arguments.min_seconds,
                        max_seconds=arguments.max_seconds,
                        max_windows=arguments.max_windows,
                    )
                except RuntimeError as error:  # ModelLoadError, or a kernel that fails when invoked
                    refused[model["mode"]] = {
                        "mode": model["mode"],
                        "op": getattr(error, "op", None),
                        "version": getattr(error, "version", None),
                        "error": str(error),
                    }
                    _log(f"skipped {model['mode']}: {error}")
                    break
                after = device.device_state()
                measured_accuracy.add(model["mode"])
                result = dataclasses.replace(
                    result, device=_device_record(facts, before, after, sweep_id, repeat, arguments, pack)
                )
                written.append(result.save(results_dir))
                print(result.summary(), flush=True)
    generation_written, replies = [], []
    if arguments.generation and pack.get("generation"):
        generation_written, replies = _run_generation(arguments, pack, pack_dir, results_dir, facts, sweep_id)
    summary = {
        "schema": RUN_SCHEMA,
        "sweep": sweep_id,
        "pack": pack["name"],
        "device": facts,
        "runtime": arguments.runtime,
        "threads": list(arguments.threads),
        "repeats": arguments.repeats,
        "results": [str(path.relative_to(results_dir)) for path in written],
        "refused": list(refused.values()),
        "generation_results": [str(path.relative_to(results_dir)) for path in generation_written],
        "replies": replies,
    }
    files.write_atomically(results_dir / f"run_{sweep_id}.json", json.dumps(summary, indent=2) + "\n")
    return written + generation_written, list(refused.values())


def _device_record(facts: dict, before, after, sweep_id: str, repeat: int, arguments, pack: dict) -> dict:
    return {
        **facts,
        "before": before.to_dict(),
        "after": after.to_dict(),
        "sweep": {"id": sweep_id, "repeat": repeat, "repeats": arguments.repeats, "threads": list(arguments.threads)},
        "pack": {"name": pack["name"], "created": pack["created"]},
    }


def _run_generation(arguments, pack: dict, pack_dir: pathlib.Path, results_dir: pathlib.Path, facts: dict, sweep_id):
    """The generation sweep and one text reply per model. Returns (result files, replies)."""
    # pylint: disable=import-outside-toplevel
    import dataclasses
    import gc

    from benchmarks import device, generation, generation_bench

    if arguments.runtime != "ai-edge-litert":
        _log(f"generation models run on ai-edge-litert's CompiledModel; skipped with {arguments.runtime}")
        return [], []
    models = pack["generation"]
    if arguments.modes:
        models = [m for m in models if m["mode"] in {w.strip() for w in arguments.modes.split(",")}]
    written = []
    total = len(models) * len(arguments.threads) * arguments.repeats
    done = 0
    for repeat in range(1, arguments.repeats + 1):
        for model in models:
            context = model["context_length"]
            prompt_lengths = [n for n in generation_bench.DEFAULT_PROMPT_LENGTHS if n < context] or [context // 2]
            fills = [n for n in generation_bench.DEFAULT_FILLS if n < model["context_length"]]
            for threads in arguments.threads:
                done += 1
                if arguments.cooldown:
                    time.sleep(arguments.cooldown)
                before = device.device_state()
                _log(f"generation {done}/{total}: {model['mode']}, {threads} thread(s), repeat {repeat}")
                result = generation_bench.benchmark_generation(
                    pack_dir / model["path"],
                    threads=threads,
                    prompt_lengths=prompt_lengths,
                    new_tokens=min(arguments.new_tokens, model["context_length"] - generation_bench.SHORT_PROMPT),
                    fills=fills,
                    repeats=1,
                    window_model=pack_dir / model["window_model"] if model.get("window_model") else None,
                    model_name=pack["model"],
                    variant=model["mode"],
                    progress=False,
                )
                after = device.device_state()
                result = dataclasses.replace(
                    result, device=_device_record(facts, before, after, sweep_id, repeat, arguments, pack)
                )
                written.append(result.save(results_dir))
                print(result.summary(), flush=True)
                del result
                gc.collect()
    replies = []
    prompt = arguments.prompt or pack["prompt"]
    for model in models:
        path = pack_dir / model["path"]
        try:
            reply = generation.generate_text(
                path,
                prompt,
                max_new_tokens=min(arguments.max_new_tokens, model["context_length"] - 1),
                tokenizer=pack_dir / model["tokenizer"],
                threads=max(arguments.threads),
            )
        except ImportError as error:
            _log(
                f"no text reply from {model['mode']}: {error}. Install the tokenizers: pip install "
                "--only-binary=:all: --no-deps -r requirements-text.txt"
            )
            continue
        except ValueError as error:  # a prompt that does not fit the context
            _log(f"no text reply from {model['mode']}: {error}")
            continue
        _log(
            f"{model['mode']}: {prompt!r} -> {reply.text!r} ({reply.generation.decode_tokens_per_second:.1f} tok/s "
            f"with {max(arguments.threads)} thread(s))"
        )
        print(f"{model['mode']}: {prompt}{reply.text}", flush=True)
        replies.append({"mode": model["mode"], "threads": max(arguments.threads), **reply.to_dict()})
    return written, replies


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        pack = verify_pack(arguments.pack.resolve())
    except (PackError, OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _log(f"{pack['name']}: every file matches {MANIFEST}")
    if str(arguments.pack.resolve()) not in sys.path:
        sys.path.insert(0, str(arguments.pack.resolve()))
    from benchmarks import runtimes  # pylint: disable=import-outside-toplevel

    try:
        written, refused = run(arguments, pack)
    except (OSError, ValueError, runtimes.RuntimeUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    folder = arguments.results_dir or arguments.pack.resolve() / "results"
    _log(
        f"wrote {len(written)} result files to {folder}"
        + (f"; the runtime refused {', '.join(r['mode'] for r in refused)}" if refused else "")
    )
    _log("copy that folder back to your computer and run `make pi-report RESULTS=<folder>` (see README.md)")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
