"""Every command-line flag of the project, defined once, with the defaults the library defines.

A CLI module asks for the groups it needs (`model_flags()`, `conversion_flags()`,
...) when it runs, not when it is imported, so tests can import every CLI
module in one process. Asking twice for a group returns the same holders.
Values are parsed here, at the edge: library code never reads a flag.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import flags

from converter.core import modes
from converter.core import recipe as recipe_lib
from converter.core.recipe import DEFAULT_NUM_CALIBRATION_SAMPLES
from converter.core.results import DEFAULT_BUILD_DIR
from converter.models import DEFAULT_MODEL

AUTO = "auto"
_HOLDERS: dict[str, Any] = {}


def define(name: str, definer, *args, **kwargs):
    """Defines a flag the first time it is asked for; returns its holder every time."""
    if name not in _HOLDERS:
        _HOLDERS[name] = definer(name, *args, **kwargs)
    return _HOLDERS[name]


def show_in_help() -> None:
    """Makes every flag defined here part of the running program's `--help` (absl shows the main module's)."""
    import sys  # pylint: disable=import-outside-toplevel

    for holder in _HOLDERS.values():
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[holder.name])


def run(main, define_flags) -> None:
    """Runs a program: defines its flags, shows them in `--help`, parses them and calls `main` (absl)."""
    from absl import app  # pylint: disable=import-outside-toplevel

    define_flags()
    show_in_help()
    app.run(main)


def refuse_arguments(argv: list[str]) -> None:
    """Programs take flags only: anything else on the command line is a usage error."""
    from absl import app  # pylint: disable=import-outside-toplevel

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")


def is_given(name: str) -> bool:
    """Whether the flag was set on the command line (not left at its default)."""
    return bool(flags.FLAGS[name].present)


@dataclasses.dataclass(frozen=True)
class Group:
    """Holders of a group of flags, by name: `group.model.value`."""

    holders: dict[str, Any]

    def __getattr__(self, name: str):
        try:
            return self.holders[name]
        except KeyError:
            raise AttributeError(name) from None


def verbosity_flags() -> Group:
    return Group(
        {
            "verbose": define(
                "verbose",
                flags.DEFINE_boolean,
                False,
                "Show what TensorFlow, absl and the XLA/CUDA libraries print (hidden by default; shown on error).",
            )
        }
    )


def model_flags(*, with_seq_len: bool = True) -> Group:
    holders = {
        "model": define(
            "model",
            flags.DEFINE_string,
            DEFAULT_MODEL,
            "Built-in model name (smollm2-135m, tiny-gpt2, gpt2-6l), a .keras file or a local keras-hub preset folder.",
        ),
        "build_dir": define(
            "build_dir", flags.DEFINE_string, DEFAULT_BUILD_DIR, "Folder for models, windows and reports."
        ),
    }
    if with_seq_len:
        holders["seq_len"] = define(
            "seq_len",
            flags.DEFINE_integer,
            None,
            "Fixed sequence length (default 128, capped at the model's maximum).",
            lower_bound=2,
        )
    return Group(holders)


def output_flags(*, out_help: str) -> Group:
    return Group(
        {
            "out": define("out", flags.DEFINE_string, None, out_help),
            "overwrite": define("overwrite", flags.DEFINE_boolean, False, "Replace existing outputs."),
        }
    )


def calibration_flags() -> Group:
    return Group(
        {
            "calibration": define(
                "calibration",
                flags.DEFINE_string,
                "builtin",
                "Calibration data: 'builtin' (Python's documentation text), a .txt or .jsonl file, or a .npz of "
                "token windows.",
            ),
            "num_calibration_samples": define(
                "num_calibration_samples",
                flags.DEFINE_integer,
                None,
                f"Calibration windows to use (default {DEFAULT_NUM_CALIBRATION_SAMPLES}; part of the recipe).",
                lower_bound=1,
            ),
            "seed": define(
                "seed",
                flags.DEFINE_integer,
                None,
                "Seed of the calibration/evaluation split (default 0; part of the recipe).",
            ),
        }
    )


# Blockwise int4 is a mode with its block size: --mode=int4-b32 (Recipe.parse), file <model>_int4-b32.tflite.
INT4_BLOCK_NAMES = recipe_lib.INT4_BLOCK_NAMES
VARIANT_NAMES = recipe_lib.VARIANT_NAMES
check_variants = recipe_lib.check_variants


def mode_flag(*, with_auto: bool, required: bool, help_text: str = "Conversion mode."):
    choices = list(VARIANT_NAMES) + ([AUTO] if with_auto else [])
    holder = define("mode", flags.DEFINE_enum, None, choices, help_text)
    if required:
        flags.mark_flag_as_required("mode")
    return holder


def generation_mode_flag():
    """`--mode` of the commands that run a generation model (default dynamic): its modes, int4 by block size too."""
    from converter.core import generation  # pylint: disable=import-outside-toplevel

    names = list(dict.fromkeys([m.value for m in generation.SUPPORTED_MODES] + list(INT4_BLOCK_NAMES)))
    return define("mode", flags.DEFINE_enum, "dynamic", names, "Mode of the generation model.")


def modes_flag(*, help_text: str, default=None):
    return define("modes", flags.DEFINE_list, list(default or modes.MODE_NAMES), help_text)


def recipe_flags() -> Group:
    """The recipe and its switches (`converter.Recipe`); None leaves a switch at the mode's default."""
    return Group(
        {
            "recipe": define(
                "recipe",
                flags.DEFINE_string,
                None,
                "A recipe .json (Recipe.save), or a conversion report to rebuild its model: decides the mode, the "
                "rewrites and the calibration settings at once.",
            ),
            "padding_mask": define(
                "padding_mask",
                flags.DEFINE_boolean,
                False,
                "Add a padding_mask input (default: token_ids only, mask all ones).",
            ),
            "measured_ranges": define(
                "measured_ranges",
                flags.DEFINE_boolean,
                None,
                "int8/int16x8 (default on): calibrate with ranges measured without in-place buffer sharing "
                "(TensorFlow's calibrator gives residual ADDs' first input the sum's range).",
            ),
            "float_residual_stream": define(
                "float_residual_stream",
                flags.DEFINE_boolean,
                None,
                "int8/int16x8 (default on): run the residual stream's ADDs and the norm statistics in float; every "
                "FULLY_CONNECTED and BATCH_MATMUL stays quantized.",
            ),
            "symmetric_matmul": define(
                "symmetric_matmul",
                flags.DEFINE_boolean,
                None,
                "int8 (default on): zero point 0 for the second operand of attention BATCH_MATMULs, so that XNNPACK "
                "runs them.",
            ),
            "keep_float": define(
                "keep_float",
                flags.DEFINE_list,
                None,
                "int8/int16x8 selective quantization: ops to run in float. Groups attention, mlp_down, mlp, logits; "
                "TFLite op types (SOFTMAX); name:<regex> on op output names. Comma-separated. Default: SOFTMAX for "
                "int8, nothing for int16x8; --keep_float= (empty) keeps nothing in float.",
            ),
            "target_runtime": define(
                "target_runtime",
                flags.DEFINE_string,
                None,
                "A runtime the model must load in, e.g. tflite-runtime==2.14: a mode it cannot load is refused "
                "before anything is written, naming the op (python -m converter.check).",
            ),
        }
    )


def generation_flags() -> Group:
    """The generation signatures (`converter.core.generation.GenerationSettings`)."""
    from converter.core import generation  # pylint: disable=import-outside-toplevel

    return Group(
        {
            "generate": define(
                "generate",
                flags.DEFINE_boolean,
                False,
                "Write generation signatures (prefill_<T>, decode, a per-layer KV cache) instead of the fixed window; "
                "the file is <model>_<mode>_generate.tflite.",
            ),
            "context_length": define(
                "context_length",
                flags.DEFINE_integer,
                generation.DEFAULT_CONTEXT_LENGTH,
                "--generate: positions of the KV cache (prompt plus reply).",
                lower_bound=2,
            ),
            "prefill_lengths": define(
                "prefill_lengths",
                flags.DEFINE_list,
                None,
                "--generate: prompt-chunk lengths, one prefill_<T> signature each (default: of "
                f"{','.join(map(str, generation.DEFAULT_PREFILL_LENGTHS))}, those that fit the context).",
            ),
            "smaller_contexts": define(
                "smaller_contexts",
                flags.DEFINE_list,
                None,
                "--generate: shorter caches with their own signatures (ctx<C>_prefill_<T>, ctx<C>_decode), for "
                "generations that need fewer positions (default: of "
                f"{','.join(map(str, generation.DEFAULT_SMALLER_CONTEXTS))}, those below the context); "
                "--smaller_contexts= for none.",
            ),
        }
    )


def generation_settings(group: Group):
    """The `GenerationSettings` the flags ask for, or None without --generate."""
    from converter.core import generation  # pylint: disable=import-outside-toplevel

    if not group.generate.value:
        for name in ("context_length", "prefill_lengths", "smaller_contexts"):
            if is_given(name):
                raise ValueError(f"--{name} sets up generation signatures; pass --generate too.")
        return None
    try:
        prefill, smaller = group.prefill_lengths.value, group.smaller_contexts.value
        return generation.GenerationSettings(
            context_length=group.context_length.value,
            prefill_lengths=None if prefill is None else tuple(int(v) for v in prefill),
            smaller_contexts=None if smaller is None else tuple(int(v) for v in smaller),
        )
    except ValueError as error:
        raise ValueError(f"{error} (--context_length, --prefill_lengths, --smaller_contexts take integers)") from None


def switches(group: Group) -> dict[str, Any]:
    """The recipe switches as `convert_keras` keywords (None where not given)."""
    return {
        name: group.holders[name].value
        for name in ("measured_ranges", "float_residual_stream", "symmetric_matmul", "keep_float")
    }


def threads_flag(*, default: int = 2, help_text: str = "CPU threads."):
    return define("threads", flags.DEFINE_integer, default, help_text, lower_bound=1)
