"""`make litertlm`: a LiteRT-LM bundle (`.litertlm`) of a generation model, its tokenizer and LLM metadata.

    make litertlm [MODEL=smollm2-135m] [MODE=dynamic] [PROMPT="The capital of France is"] [OVERWRITE=1]
    python -m converter.cli.litertlm [--model=smollm2-135m] [--mode=dynamic|fp16|fp32] [--tflite=<generation .tflite>]
        [--out=build/<model>/<model>_<mode>.litertlm] [--chat_template=template.jinja] [--model_type=generic_model]
        [--prompt="..." --max_new_tokens=16 --threads=2] [--overwrite]

Bundles `build/<model>/<model>_<mode>_generate.tflite` (converted first when
missing) with the tokenizer beside it into `build/<model>/<model>_<mode>.litertlm`
and its record `<model>_<mode>.litertlm.json`. The chat template is the
model's own where its source has one (the built-in SmolLM2's GGUF does), or
the file given. With --prompt, the bundle is then loaded in LiteRT-LM's engine
(litert-lm-api) and continues the prompt greedily.
"""

from __future__ import annotations

import os
import pathlib
import sys

from absl import flags

from converter.cli import flags as cli_flags
from converter.cli import missing
from converter.common import files, progress


def _define_flags() -> None:
    cli_flags.model_flags(with_seq_len=False)
    cli_flags.generation_mode_flag()
    cli_flags.define(
        "tflite", flags.DEFINE_string, None, "Bundle this generation .tflite (its tokenizer beside it) instead."
    )
    cli_flags.define("out", flags.DEFINE_string, None, "The bundle's path. Default: beside the model.")
    cli_flags.define("chat_template", flags.DEFINE_string, None, "A Jinja chat template file (default: the model's).")
    cli_flags.define("model_type", flags.DEFINE_string, "generic_model", "The LlmModelType LiteRT-LM treats it as.")
    cli_flags.define("overwrite", flags.DEFINE_boolean, False, "Replace an existing bundle and record.")
    cli_flags.define(
        "context_length",
        flags.DEFINE_integer,
        None,
        "When the model must be converted: its context length (default 1024).",
        lower_bound=2,
    )
    cli_flags.define("prompt", flags.DEFINE_string, None, "Continue this text in LiteRT-LM's engine afterwards.")
    cli_flags.define("max_new_tokens", flags.DEFINE_integer, 16, "--prompt: most tokens to generate.", lower_bound=1)
    cli_flags.threads_flag(default=2, help_text="--prompt: CPU threads.")
    cli_flags.verbosity_flags()


def main(argv: list[str]) -> int:
    cli_flags.refuse_arguments(argv)
    # pylint: disable=import-outside-toplevel
    from benchmarks import generation, litertlm
    from converter.deploy import litertlm_bundle
    from converter.models import model_sources

    value = flags.FLAGS
    try:
        template = None
        if value.chat_template:
            template_path = pathlib.Path(value.chat_template)
            if not template_path.is_file():
                raise FileNotFoundError(f"--chat_template={value.chat_template}: no such file.")
            template = template_path.read_text(encoding="utf-8")
        if value.model_type not in litertlm_bundle.model_types():
            raise ValueError(
                f"--model_type={value.model_type}; LiteRT-LM knows {', '.join(litertlm_bundle.model_types())}."
            )
        if value.tflite:
            path = pathlib.Path(value.tflite)
        else:
            path = missing.generation_model_path(value.model, value.mode, build_dir=value.build_dir)
        out = pathlib.Path(value.out) if value.out else litertlm_bundle.default_bundle_path(path)
        if not value.overwrite:
            files.refuse_existing([out, litertlm.record_path(out)], overwrite=False)
        if not value.tflite:
            missing.convert_if_missing(
                path,
                value.model,
                value.mode,
                build_dir=value.build_dir,
                generate=True,
                context_length=value.context_length,
                verbose=value.verbose,
                label="litertlm",
            )
            if template is None:
                with progress.silence_native_output(enabled=not value.verbose):
                    template = model_sources.chat_template(value.model, build_dir=value.build_dir)
        record = litertlm_bundle.export_litertlm(
            path, out=out, chat_template=template, model_type=value.model_type, overwrite=value.overwrite
        )
        progress.log(
            "litertlm",
            f"wrote {record.path} ({record.size_bytes / 2**20:.1f} MiB; {record.tokenizer['type']}, stop tokens "
            f"{list(record.stop_token_ids)}, context {record.max_num_tokens}"
            f"{', chat template' if record.chat_template else ''}) and {litertlm.record_path(record.path).name}",
        )
        if value.prompt:
            print(value.prompt, end="", flush=True)
            reply = litertlm.generate(
                record.path,
                value.prompt,
                max_new_tokens=value.max_new_tokens,
                threads=value.threads,
                on_text=lambda piece: print(piece, end="", file=progress.stdout(), flush=True),
            )
            print(f"\n[litertlm] LiteRT-LM {litertlm.engine_version()}: {len(reply.pieces)} tokens", flush=True)
    except (
        ValueError,
        TypeError,
        FileNotFoundError,
        FileExistsError,
        RuntimeError,
        ImportError,
        generation.NotAGenerationModelError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    cli_flags.run(main, _define_flags)


if __name__ == "__main__":
    run()
