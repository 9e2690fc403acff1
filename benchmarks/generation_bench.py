"""Generation benchmarks in llama-bench's terms: prefill and decode tokens per second, TTFT, memory, roofline.

    python -m benchmarks.generation_bench --model=build/m/m_dynamic_generate.tflite --threads=1,2 \\
        [--window_model=build/m/m_dynamic.tflite] [--results_dir=results]

Per model and thread count (numpy and LiteRT only, one process per run):

* `pp<N>`: prefill of N prompt tokens into an empty cache, tokens per second;
* `tg<N>`: N tokens generated greedily after a short prompt, decode tokens
  per second, on the shortest cache that holds them (what `Generator` picks);
* time to first token of that short prompt;
* decode cost at several cache fill levels on the full context;
* peak RSS while loading and generating, against the file and the cache;
* the memory roofline: the bytes one decode step must read (its weights and
  the cache) over the memory bandwidth measured in the same run, and how
  close the measured step gets to it;
* with `--window_model`, the baseline a fixed-window model gives: one full
  window forward per generated token.

Prompts are token ids drawn with a fixed seed from the vocabulary: speed does
not depend on which ids they are.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import generation, runtimes
from benchmarks.machine import MachineInfo, machine_info
from converter import tflite_file
from converter.common import files, resources

SCHEMA = "keras-lm-litert/generation-result/1"
BASELINE_SCHEMA = "keras-lm-litert/generation-baseline/1"
DEFAULT_PROMPT_LENGTHS = (128, 512)
DEFAULT_NEW_TOKENS = 128
DEFAULT_FILLS = (16, 256, 512, 1000)
SHORT_PROMPT = 8
_BANDWIDTH_BYTES = 256 * 2**20


@dataclasses.dataclass(frozen=True)
class Spread:
    """Median, min and max over repeats."""

    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(float(statistics.median(values)), float(min(values)), float(max(values)))


@dataclasses.dataclass(frozen=True)
class GenerationBenchmark:
    """One generation model at one thread count, as measured.

    Attributes:
      prefill_tokens_per_second: prompt length -> spread over repeats.
      decode_tokens_per_second: tg<N> on the context the generator picks.
      decode_context: that context.
      time_to_first_token_ms: for a `SHORT_PROMPT`-token prompt.
      decode_ms_by_fill: cache fill -> median ms of one decode step, full context.
      window_forward_ms: one full-window forward of the fixed-window model
        (None without one); its tok/s is what generating costs without a cache.
      peak_rss_bytes, file_bytes, cache_bytes: memory against what it must hold.
      roofline: bytes per decode step, measured bandwidth, bound and efficiency.
      device: on a bench pack's board: its state before and after, the sweep.
    """

    schema: str
    created: str
    machine: MachineInfo
    runtime: runtimes.RuntimeInfo
    model: dict[str, Any]
    threads: int
    binding: str
    repeats: int
    new_tokens: int
    prefill_tokens_per_second: dict[str, Spread]
    decode_tokens_per_second: Spread
    decode_context: int
    time_to_first_token_ms: Spread
    decode_ms_by_fill: dict[str, float]
    window_forward_ms: float | None
    peak_rss_bytes: int
    baseline_rss_bytes: int
    file_bytes: int
    cache_bytes: int
    roofline: dict[str, Any]
    device: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
        """Writes the result into the folder `path/<model name>/` under a name no other run has.

        Raises:
          FileExistsError: `overwrite` is False and that name exists (two runs in one second).
        """
        return _save_unique(self, path, overwrite=overwrite)

    def summary(self) -> str:
        prefill = ", ".join(f"pp{n} {s.median:.1f} tok/s" for n, s in self.prefill_tokens_per_second.items())
        return (
            f"{self.model['path']} ({self.threads} thread(s), {self.binding}): {prefill}, "
            f"tg{self.new_tokens} {self.decode_tokens_per_second.median:.1f} tok/s (context {self.decode_context}), "
            f"TTFT {self.time_to_first_token_ms.median:.1f} ms, peak RSS {self.peak_rss_bytes / 2**20:.0f} MiB"
        )


@dataclasses.dataclass(frozen=True)
class GenerationBaseline:
    """A peer's or a baseline's generation speed, measured in the same run (llama.cpp, Keras, no cache).

    Attributes:
      model: name, variant (`keras-generate`, `window-recompute`, `llama.cpp-Q8_0`, ...), path, size_bytes.
      prefill_tokens_per_second, decode_tokens_per_second: what the peer reports or was measured,
        None where it has no such figure.
      note: how the figure was taken; command: the command line, for peers run as programs.
    """

    schema: str
    created: str
    machine: MachineInfo
    runtime: runtimes.RuntimeInfo
    model: dict[str, Any]
    threads: int
    new_tokens: int
    prefill_tokens_per_second: dict[str, float]
    decode_tokens_per_second: float | None
    note: str
    command: str | None = None

    @classmethod
    def create(
        cls,
        *,
        model,
        runtime,
        threads,
        new_tokens,
        decode_tokens_per_second,
        prefill_tokens_per_second=None,
        note="",
        command=None,
    ) -> GenerationBaseline:
        return cls(
            BASELINE_SCHEMA,
            _now(),
            machine_info(),
            runtime,
            dict(model),
            int(threads),
            int(new_tokens),
            dict(prefill_tokens_per_second or {}),
            decode_tokens_per_second,
            note,
            command,
        )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
        """Writes the result into `path/<model name>/` under a name no other run has."""
        return _save_unique(self, path, overwrite=overwrite)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def now_stamp() -> str:
    """The time as result file names carry it (`20261201T120000Z`)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def _save_unique(result, path: str | os.PathLike, *, overwrite: bool) -> pathlib.Path:
    folder = pathlib.Path(path) / result.model["name"]
    stamp = result.created.replace(":", "").replace("-", "").replace("+0000", "Z")
    target = folder / f"{result.model['variant']}_generate_t{result.threads}_{result.runtime.name}_{stamp}.json"
    if target.exists() and not overwrite:
        target = folder / f"{target.stem}_{uuid.uuid4().hex[:6]}.json"
    files.refuse_existing([target], overwrite=overwrite)
    return files.write_atomically(target, result.to_json())


def short_prompt(vocabulary: int, seed: int = 100) -> list[int]:
    """The short prompt tg<N> and TTFT are measured after (`SHORT_PROMPT` ids drawn with a seed)."""
    return _prompt(SHORT_PROMPT, vocabulary, seed)


def memory_bandwidth_bytes_per_second(size_bytes: int = _BANDWIDTH_BYTES, repeats: int = 5) -> float:
    """Bytes per second one core moves copying a buffer larger than any cache (read + write counted)."""
    source = np.ones(size_bytes // 8, np.float64)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * size_bytes / best


def decode_step_bytes(path: str | os.PathLike, signature: str) -> tuple[int, int]:
    """(constant bytes the signature's subgraph reads, cache bytes it reads) for one step."""
    model_object = tflite_file.load_model_object(path)
    inspected = tflite_file.inspect_model(path)
    info = inspected.signatures[signature]
    subgraph = model_object.subgraphs[info.subgraph]
    used = {int(t) for op in subgraph.operators for t in op.inputs if t >= 0}
    weights = 0
    seen = set()
    for index in used:
        buffer = subgraph.tensors[index].buffer
        data = model_object.buffers[buffer].data if buffer > 0 else None
        if data is not None and len(data) and buffer not in seen:
            seen.add(buffer)
            weights += len(data)
    cache = sum(int(np.prod(t.shape)) * 4 for name, t in info.inputs.items() if name.startswith("kv_cache_"))
    return weights, cache


def _prompt(length: int, vocabulary: int, seed: int = 0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(1, vocabulary, length)]


def _window_forward_ms(path: str | os.PathLike, threads: int, repeats: int) -> float:
    runner = runtimes.open_runner(path, threads=threads)
    runner.prepare(
        {
            runtimes.TOKEN_IDS: np.zeros((1, runner.seq_len), np.int32),
            runtimes.PADDING_MASK: np.ones((1, runner.seq_len), np.int32),
        }
    )
    runner.invoke()
    samples = []
    for _ in range(max(repeats, 3)):
        start = time.perf_counter()
        runner.invoke()
        samples.append(1000 * (time.perf_counter() - start))
    return float(statistics.median(samples))


def benchmark_generation(
    path: str | os.PathLike,
    *,
    threads: int = 2,
    binding: generation.CacheBinding | str = generation.CacheBinding.SHARED,
    prompt_lengths: Sequence[int] = DEFAULT_PROMPT_LENGTHS,
    new_tokens: int = DEFAULT_NEW_TOKENS,
    fills: Sequence[int] = DEFAULT_FILLS,
    repeats: int = 3,
    window_model: str | os.PathLike | None = None,
    model_name: str | None = None,
    variant: str | None = None,
    progress: bool = True,
) -> GenerationBenchmark:
    """Measures a generation model; see the module docstring for what.

    Raises:
      generation.NotAGenerationModelError: the file has no decode signature.
      ValueError: a prompt length or fill the context cannot hold, or bad counts.
    """
    from converter.common import progress as progress_lib  # pylint: disable=import-outside-toplevel

    path = tflite_file.check_model_file(path)
    runtimes.check_threads(threads)
    if repeats < 1 or new_tokens < 1:
        raise ValueError(f"repeats and new_tokens must be at least 1, got {repeats} and {new_tokens}.")
    baseline = resources.current_rss_bytes()
    resources.reset_peak_rss()  # the peak below then covers this run only (Linux >= 4.0)
    generator = generation.Generator(path, threads=threads, binding=binding)
    context = generator.context_length
    too_long = [n for n in (*prompt_lengths, *fills) if n + 1 > context]
    if too_long:
        raise ValueError(f"Prompt lengths / fills {too_long} do not fit the model's context of {context} positions.")
    vocabulary = generator.vocabulary_size
    log = lambda message: progress_lib.log("generation", message, enabled=progress)  # noqa: E731
    # Warm up every signature the runs below use (the first run of each packs its weights).
    generator.generate(_prompt(SHORT_PROMPT, vocabulary), max_new_tokens=2)
    prefill = {}
    for length in prompt_lengths:
        rates = []
        for repeat in range(repeats + 1):
            start = time.perf_counter()
            generator.prefill(_prompt(length, vocabulary, repeat), context=context)
            elapsed = time.perf_counter() - start
            if repeat:  # the first run of a length is a warm-up
                rates.append(length / elapsed)
        prefill[f"{length}"] = Spread.of(rates)
        log(f"pp{length}: {prefill[f'{length}'].median:.1f} tok/s")
    decode_rates, first_token = [], []
    decode_context = generator.signatures.context_for(SHORT_PROMPT + new_tokens)
    for repeat in range(repeats):
        result = generator.generate(short_prompt(vocabulary, 100 + repeat), max_new_tokens=new_tokens)
        decode_rates.append(result.decode_tokens_per_second)
        first_token.append(1000 * result.first_token_seconds)
    log(f"tg{new_tokens}: {statistics.median(decode_rates):.1f} tok/s on context {decode_context}")
    by_fill = {}
    for fill in fills:
        generator.prefill(_prompt(fill, vocabulary, 7), context=context)
        samples = []
        for step in range(max(8, repeats * 4)):
            start = time.perf_counter()
            generator.decode(1, fill + step % 4, context=context)
            samples.append(1000 * (time.perf_counter() - start))
        by_fill[f"{fill}"] = float(statistics.median(samples))
    log("decode ms by fill: " + ", ".join(f"{k}: {v:.2f}" for k, v in by_fill.items()))
    peak = resources.peak_rss_bytes()
    window_ms = _window_forward_ms(window_model, threads, repeats) if window_model else None
    weights, cache = decode_step_bytes(path, generator.signatures.contexts[context][generation.DECODE])
    bandwidth = memory_bandwidth_bytes_per_second()
    step_ms = by_fill[f"{max(fills)}"] if fills else None
    bound_ms = 1000 * (weights + cache) / bandwidth
    roofline = {
        "decode_signature": generator.signatures.contexts[context][generation.DECODE],
        "weight_bytes_per_step": weights,
        "cache_bytes_per_step": cache,
        "bandwidth_bytes_per_second": bandwidth,
        "bound_ms": bound_ms,
        "measured_ms": step_ms,
        "efficiency": None if not step_ms else bound_ms / step_ms,
    }
    return GenerationBenchmark(
        schema=SCHEMA,
        created=_now(),
        machine=machine_info(),
        runtime=runtimes.runtime_info(runtimes.Runtime.AI_EDGE_LITERT),
        model={
            "name": model_name or path.stem.split("_")[0],
            "variant": variant or path.stem,
            "path": str(path),
            "sha256": files.sha256_of(path),
            "size_bytes": path.stat().st_size,
            "context": context,
            "contexts": sorted(generator.signatures.contexts),
        },
        threads=threads,
        binding=generation.CacheBinding(binding).value,
        repeats=repeats,
        new_tokens=new_tokens,
        prefill_tokens_per_second=prefill,
        decode_tokens_per_second=Spread.of(decode_rates),
        decode_context=decode_context,
        time_to_first_token_ms=Spread.of(first_token),
        decode_ms_by_fill=by_fill,
        window_forward_ms=window_ms,
        peak_rss_bytes=peak,
        baseline_rss_bytes=baseline,
        file_bytes=path.stat().st_size,
        cache_bytes=sum(
            int(np.prod(shape)) * 4 * len(generator.signatures.cache_names)
            for c, shape in generator.signatures.cache_shapes.items()
            if c == context
        ),
        roofline=roofline,
    )


def _define_flags() -> None:
    from absl import flags  # pylint: disable=import-outside-toplevel

    flags.DEFINE_list("model", None, "Generation .tflite files.", required=True)
    flags.DEFINE_list("threads", ["1", "2"], "CPU thread counts.")
    flags.DEFINE_enum(
        "binding",
        generation.CacheBinding.SHARED.value,
        [b.value for b in generation.CacheBinding],
        "How the KV cache stays in place between steps (benchmarks/generation.py).",
    )
    flags.DEFINE_list("prompt_lengths", [str(n) for n in DEFAULT_PROMPT_LENGTHS], "pp<N>: prompt lengths.")
    flags.DEFINE_integer("new_tokens", DEFAULT_NEW_TOKENS, "tg<N>: tokens generated.", lower_bound=1)
    flags.DEFINE_list("fills", [str(n) for n in DEFAULT_FILLS], "Cache fill levels for the decode cost.")
    flags.DEFINE_integer("repeats", 3, "Repeats of each measurement.", lower_bound=1)
    flags.DEFINE_string("window_model", None, "The fixed-window model of the same weights (baseline).")
    flags.DEFINE_string("name", None, "Model name in the results (default: from the file name).")
    flags.DEFINE_string("variant", None, "Variant name in the results (default: the file's stem).")
    flags.DEFINE_string("results_dir", "results", "Folder for result files.")


def _integers(values: Sequence[str], name: str) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--{name} takes integers, e.g. --{name}=1,2; got {','.join(values)}.") from None


def main(argv: list[str]) -> int:
    import sys  # pylint: disable=import-outside-toplevel

    from absl import app, flags  # pylint: disable=import-outside-toplevel

    from benchmarks import results  # pylint: disable=import-outside-toplevel

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    value = flags.FLAGS
    try:
        folder = results.check_results_dir(value.results_dir)
        threads = _integers(value.threads, "threads")
        for path in value.model:
            for count in threads:
                measured = benchmark_generation(
                    path,
                    threads=count,
                    binding=value.binding,
                    prompt_lengths=_integers(value.prompt_lengths, "prompt_lengths"),
                    new_tokens=value.new_tokens,
                    fills=_integers(value.fills, "fills"),
                    repeats=value.repeats,
                    window_model=value.window_model,
                    model_name=value.name,
                    variant=value.variant,
                )
                print(measured.summary())
                print(f"[generation] wrote {measured.save(folder)}", file=sys.stderr)
    except (OSError, ValueError, runtimes.ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from absl import app as _app  # pylint: disable=import-outside-toplevel

    _define_flags()
    _app.run(main)
