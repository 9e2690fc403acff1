"""The harness against LiteRT-LM's own benchmark on the same bundle, threads and token counts: a fidelity check.

    python -m benchmarks.litertlm_bench --bundle=build/m/m_dynamic.litertlm --threads=1,2 [--prefill_tokens=128]
        [--decode_tokens=128] [--runs=3] [--results_dir=results]

For each thread count, in one process: LiteRT-LM's benchmark mode
(`litert_lm.Benchmark`: prefill N tokens, decode M) and the project's
`Generator` on the `.tflite` inside the bundle (the file its record names,
checked by sha256), prefilling N ids and decoding M greedily on the context
LiteRT-LM runs (the `decode` signature's, the longest). The runs alternate,
each after its own warm-up, so that drift on a shared machine lands on both.
The result gives both speeds and their ratio; the harness should be within
15 % of LiteRT-LM's decode speed, and a larger gap is a finding to explain.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
from typing import Any

import numpy as np

from benchmarks import generation, litertlm
from benchmarks.machine import MachineInfo, machine_info
from converter.common import files

SCHEMA = "keras-lm-litert/litertlm-fidelity/1"
AGREEMENT = 0.15  # the harness's decode speed within this fraction of LiteRT-LM's


@dataclasses.dataclass(frozen=True)
class LitertLmFidelity:
    """LiteRT-LM's own prefill/decode speeds on a bundle beside the harness's on the model inside it.

    Attributes:
      model: name, variant, bundle path and sha256, the `.tflite` inside and its context.
      litert_lm: LiteRT-LM's benchmark (`benchmarks.litertlm.EngineBenchmark.to_dict()`).
      harness: the same counts through `benchmarks.generation.Generator`:
        prefill and decode tokens per second, time to first token, spreads over runs.
      decode_ratio, prefill_ratio: harness over LiteRT-LM (medians).
      decode_within: whether |decode_ratio - 1| <= `AGREEMENT`.
    """

    schema: str
    created: str
    machine: MachineInfo
    model: dict[str, Any]
    threads: int
    prefill_tokens: int
    decode_tokens: int
    runs: int
    litert_lm: dict[str, Any]
    harness: dict[str, Any]
    decode_ratio: float
    prefill_ratio: float
    decode_within: bool

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
        """Writes `path/<name>/<variant>_litertlm_t<threads>_<time>.json`."""
        stamp = self.created.replace(":", "").replace("-", "").replace("+0000", "Z")
        target = (
            pathlib.Path(path) / self.model["name"] / f"{self.model['variant']}_litertlm_t{self.threads}_{stamp}.json"
        )
        files.refuse_existing([target], overwrite=overwrite)
        return files.write_atomically(target, self.to_json())

    def summary(self) -> str:
        engine, ours = (
            f"{run['prefill_tokens_per_second']['median']:.1f} / {run['decode_tokens_per_second']['median']:.1f}"
            for run in (self.litert_lm, self.harness)
        )
        return (
            f"{pathlib.Path(self.model['bundle']).name} ({self.threads} thread(s)): prefill / decode tok/s "
            f"LiteRT-LM {engine}, harness {ours}; decode ratio {self.decode_ratio:.2f} "
            f"({'within' if self.decode_within else 'outside'} {100 * AGREEMENT:.0f} %)"
        )


def compare(
    bundle: str | os.PathLike,
    *,
    threads: int = 2,
    prefill_tokens: int = 128,
    decode_tokens: int = 128,
    runs: int = 3,
    name: str | None = None,
    variant: str | None = None,
) -> LitertLmFidelity:
    """Measures LiteRT-LM and the harness on one bundle; see the module docstring.

    Raises:
      litertlm.BundleIntegrityError: the bundle does not match its record.
      FileNotFoundError, ValueError: the model the record names is missing or
        is not the one inside the bundle (its sha256 differs), or counts that
        do not fit the context.
    """
    record = litertlm.verify_bundle(bundle)
    model = pathlib.Path(record["model"]["path"])
    if not model.is_file():
        raise FileNotFoundError(
            f"{model}, the model inside {pathlib.Path(bundle).name}, is missing: the harness measures that file. "
            "Keep it beside the bundle (make litertlm writes both)."
        )
    if files.sha256_of(model) != record["model"]["sha256"]:
        raise ValueError(f"{model} is not the model inside {pathlib.Path(bundle).name} (sha256 differs).")
    context = record["model"]["context"]
    engine_benchmark = None
    generator = generation.Generator(model, threads=threads)
    prompt = [int(t) for t in np.random.default_rng(0).integers(1, generator.vocabulary_size, prefill_tokens)]

    def ours():
        return generator.generate(prompt, max_new_tokens=decode_tokens, context=context)

    ours()  # warm-up
    runs_ours = []
    engine_runs = []
    for _ in range(runs):  # alternate, one LiteRT-LM benchmark (its own warm-up and one run) then ours
        engine_benchmark = litertlm.benchmark(
            bundle, threads=threads, prefill_tokens=prefill_tokens, decode_tokens=decode_tokens, runs=1
        )
        engine_runs.append(engine_benchmark)
        runs_ours.append(ours())
    pick = lambda key: [r.to_dict()[key]["values"][0] for r in engine_runs]  # noqa: E731
    engine = {
        **engine_runs[-1].to_dict(),
        "runs": runs,
        "prefill_tokens_per_second": litertlm.spread(pick("prefill_tokens_per_second")),
        "decode_tokens_per_second": litertlm.spread(pick("decode_tokens_per_second")),
        "time_to_first_token_ms": litertlm.spread(pick("time_to_first_token_ms")),
        "init_seconds": litertlm.spread(pick("init_seconds")),
    }
    harness = {
        "prefill_tokens_per_second": litertlm.spread([r.prefill_tokens_per_second for r in runs_ours]),
        "decode_tokens_per_second": litertlm.spread([r.decode_tokens_per_second for r in runs_ours]),
        "time_to_first_token_ms": litertlm.spread([1000 * r.first_token_seconds for r in runs_ours]),
        "context": context,
        "binding": generator.binding.value,
    }
    decode_ratio = harness["decode_tokens_per_second"]["median"] / engine["decode_tokens_per_second"]["median"]
    prefill_ratio = harness["prefill_tokens_per_second"]["median"] / engine["prefill_tokens_per_second"]["median"]
    stem = pathlib.Path(bundle).name[: -len(litertlm.BUNDLE_SUFFIX)]
    return LitertLmFidelity(
        schema=SCHEMA,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        machine=machine_info(),
        model={
            "name": name or stem.split("_")[0],
            "variant": variant or stem,
            "bundle": str(bundle),
            "bundle_sha256": record["sha256"],
            "path": str(model),
            "sha256": record["model"]["sha256"],
            "context": context,
        },
        threads=threads,
        prefill_tokens=prefill_tokens,
        decode_tokens=decode_tokens,
        runs=runs,
        litert_lm=engine,
        harness=harness,
        decode_ratio=decode_ratio,
        prefill_ratio=prefill_ratio,
        decode_within=abs(decode_ratio - 1) <= AGREEMENT,
    )


def _define_flags() -> None:
    from absl import flags  # pylint: disable=import-outside-toplevel

    flags.DEFINE_string("bundle", None, "A .litertlm bundle with its record beside it.", required=True)
    flags.DEFINE_list("threads", ["1", "2"], "CPU thread counts.")
    flags.DEFINE_integer("prefill_tokens", 128, "Prompt tokens each run prefills.", lower_bound=1)
    flags.DEFINE_integer("decode_tokens", 128, "Tokens each run decodes.", lower_bound=1)
    flags.DEFINE_integer("runs", 3, "Runs of each, alternating.", lower_bound=1)
    flags.DEFINE_string("name", None, "Model name in the results (default: from the file name).")
    flags.DEFINE_string("variant", None, "Variant name in the results (default: the bundle's stem).")
    flags.DEFINE_string("results_dir", "results", "Folder for result files.")


def main(argv: list[str]) -> int:
    import sys  # pylint: disable=import-outside-toplevel

    from absl import app, flags  # pylint: disable=import-outside-toplevel

    from benchmarks import results  # pylint: disable=import-outside-toplevel

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    value = flags.FLAGS
    try:
        folder = results.check_results_dir(value.results_dir)
        threads = [int(t) for t in value.threads]
        for count in threads:
            measured = compare(
                value.bundle,
                threads=count,
                prefill_tokens=value.prefill_tokens,
                decode_tokens=value.decode_tokens,
                runs=value.runs,
                name=value.name,
                variant=value.variant,
            )
            print(measured.summary())
            print(f"[litertlm] wrote {measured.save(folder)}", file=sys.stderr)
    except (OSError, ValueError, RuntimeError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from absl import app as _app  # pylint: disable=import-outside-toplevel

    _define_flags()
    _app.run(main)
