"""llama.cpp on the built-in SmolLM2's GGUF weights, as a peer of `make bench-generation`.

    python -m converter.cli.llama_cpp_bench [--threads=1,2] [--kinds=Q8_0,Q4_0] [--results_dir=results]

Builds llama.cpp once from the llama-cpp-python sdist (`converter.tools.llama_cpp`), requantizes the
shipped Q4_1 GGUF to each kind, runs `llama-bench -p 128,512 -n <new_tokens>` and writes, per kind
and thread count, a `benchmarks.generation_bench.GenerationBaseline` (variant `llama.cpp-<kind>`)
beside the LiteRT results, plus llama-bench's own record.
"""

from __future__ import annotations

import sys

from absl import flags

from converter.cli import flags as cli_flags
from converter.common import progress


def _define_flags() -> None:
    cli_flags.define("build_dir", flags.DEFINE_string, "build", "Build folder (llama.cpp is built there once).")
    cli_flags.define("threads", flags.DEFINE_list, ["1", "2"], "CPU thread counts.")
    cli_flags.define("kinds", flags.DEFINE_list, ["Q8_0", "Q4_0"], "GGUF quantizations to measure.")
    cli_flags.define("results_dir", flags.DEFINE_string, "results", "Folder for result files.")
    cli_flags.define("new_tokens", flags.DEFINE_integer, 128, "tg<N>: tokens generated.", lower_bound=1)
    cli_flags.define("repetitions", flags.DEFINE_integer, 3, "llama-bench repetitions.", lower_bound=1)


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    # pylint: disable=import-outside-toplevel
    import pathlib

    from benchmarks import generation_bench, results, runtimes
    from converter.tools import llama_cpp

    value = flags.FLAGS
    try:
        folder = results.check_results_dir(value.results_dir)
        threads = [int(t) for t in value.threads]
        llama_cpp.build_llama_cpp(build_dir=value.build_dir)
        for kind in value.kinds:
            gguf = llama_cpp.requantize(kind=kind, build_dir=value.build_dir)
            measured = llama_cpp.bench(
                gguf,
                threads=threads,
                prompt_tokens=(128, 512),
                generated_tokens=value.new_tokens,
                repetitions=value.repetitions,
                build_dir=value.build_dir,
            )
            variant = f"llama.cpp-{kind}"
            record = folder / "smollm2-135m" / f"{variant}_llama-bench_{generation_bench.now_stamp()}.json"
            record.parent.mkdir(parents=True, exist_ok=True)
            measured.save(record)
            for count in threads:
                baseline = generation_bench.GenerationBaseline.create(
                    model={
                        "name": "smollm2-135m",
                        "variant": variant,
                        "path": str(gguf),
                        "size_bytes": pathlib.Path(gguf).stat().st_size,
                    },
                    runtime=runtimes.RuntimeInfo(name="llama.cpp", version=str(measured.build.get("build_commit"))),
                    threads=count,
                    new_tokens=value.new_tokens,
                    decode_tokens_per_second=measured.tokens_per_second(f"tg{value.new_tokens}", count),
                    prefill_tokens_per_second={str(n): measured.tokens_per_second(f"pp{n}", count) for n in (128, 512)},
                    note=f"llama-bench, {measured.model.get('model_type', kind)}, requantized from the shipped Q4_1",
                    command=" ".join(measured.command),
                )
                path = baseline.save(folder)
                print(
                    f"{variant}, {count} thread(s): pp128 {baseline.prefill_tokens_per_second['128']:.1f}, "
                    f"tg{value.new_tokens} {baseline.decode_tokens_per_second:.1f} tok/s"
                )
                progress.log("llama.cpp", f"wrote {path}")
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
