"""`make generate`: continue a prompt with a generation model, converting it first when it is missing.

    python -m converter.cli.generate --prompt="The capital of France is" [--model=smollm2-135m] [--mode=dynamic]
        [--max_new_tokens=64] [--temperature=0.7 --top_k=40 --top_p=0.9 --seed=0] [--threads=2]

The model is `build/<model>/<model>_<mode>_generate.tflite` with its tokenizer
beside it (what `make convert GENERATE=1` writes); generation itself runs on
numpy and LiteRT only (`benchmarks.generation.generate_text`). The reply is
printed as it is generated, then the speeds.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from converter.cli import flags as cli_flags
from converter.cli import missing
from converter.common import progress


def _define_flags() -> None:
    cli_flags.model_flags(with_seq_len=False)
    cli_flags.generation_mode_flag()
    cli_flags.define("prompt", flags.DEFINE_string, None, "The text to continue.", required=True)
    cli_flags.define("max_new_tokens", flags.DEFINE_integer, 64, "Most tokens to generate.", lower_bound=1)
    cli_flags.define("temperature", flags.DEFINE_float, 0.0, "0: greedy; above 0: sampling.", lower_bound=0.0)
    cli_flags.define("top_k", flags.DEFINE_integer, 0, "Sample among the k most likely tokens (0: all).", lower_bound=0)
    cli_flags.define("top_p", flags.DEFINE_float, 1.0, "Sample among the most likely tokens that add up to p.")
    cli_flags.define("seed", flags.DEFINE_integer, 0, "Seed of the sampling.")
    cli_flags.threads_flag(default=2, help_text="CPU threads.")
    cli_flags.define(
        "context_length",
        flags.DEFINE_integer,
        None,
        "When the model must be converted: its context length (default 1024).",
        lower_bound=2,
    )
    cli_flags.verbosity_flags()


def _export_tokenizer(value, path) -> None:
    """Writes the device tokenizer beside a generation model converted without it."""
    # pylint: disable=import-outside-toplevel
    from converter.deploy import device_tokenizer
    from converter.models import model_sources

    with progress.silence_native_output(enabled=not value.verbose):
        tokenizer = model_sources.load_tokenizer(value.model, build_dir=value.build_dir)
        if tokenizer is None:
            raise ValueError(
                f"Model {value.model!r} has no tokenizer, so its replies cannot be turned into text; "
                "use benchmarks.Generator with token ids instead."
            )
        device_tokenizer.export_device_tokenizer(tokenizer, name=path.stem).save(path.parent)
    progress.log("generate", f"wrote the tokenizer beside {path}")


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # pylint: disable=import-outside-toplevel
    from benchmarks import generation

    value = flags.FLAGS
    try:
        sampling = generation.Sampling(
            temperature=value.temperature, top_k=value.top_k, top_p=value.top_p, seed=value.seed
        )
        path = missing.generation_model_path(value.model, value.mode, build_dir=value.build_dir)
        missing.convert_if_missing(
            path,
            value.model,
            value.mode,
            build_dir=value.build_dir,
            generate=True,
            context_length=value.context_length,
            verbose=value.verbose,
            label="generate",
        )
        if not generation.tokenizer_beside(path).is_file():
            _export_tokenizer(value, path)
        print(value.prompt, end="", flush=True)
        with progress.silence_native_output(enabled=not value.verbose):
            reply = generation.generate_text(
                path,
                value.prompt,
                max_new_tokens=value.max_new_tokens,
                sampling=sampling,
                threads=value.threads,
                on_text=lambda piece: print(piece, end="", file=progress.stdout(), flush=True),
            )
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, generation.NotAGenerationModelError) as error:
        print(f"\nerror: {error}", file=sys.stderr)
        return 2
    run = reply.generation
    print(
        f"\n\n[generate] {path.name}: prompt {run.prompt_tokens} tokens, time to first token "
        f"{1000 * run.first_token_seconds:.0f} ms, prefill {run.prefill_tokens_per_second:.0f} tok/s, decode "
        f"{run.decode_tokens_per_second:.1f} tok/s over {len(run.tokens)} tokens ({run.stopped_by}; context "
        f"{run.context}, {value.threads} threads)"
    )
    return 0


def run() -> None:
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
