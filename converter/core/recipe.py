"""`Recipe`: everything that decides how a model is converted, in one frozen, JSON-round-tripping value.

A recipe holds the mode, the ops kept in float (selective quantization), the
rewrites the converter applies with their switches, and the calibration
settings. `convert_keras(..., recipe=...)` and `--recipe=file.json` take one,
`auto` produces one, and every conversion report records the one it used, so
any reported model can be rebuilt from its report (`Recipe.load(report.json)`).

Fields left as None take the mode's default when the recipe is made, so a
recipe always states every decision explicitly; a switch that does not apply
to the mode (a rewrite of quantized activations on fp16, say) is refused with
the reason, before any conversion starts.

Names (`Recipe.name`, `Recipe.parse`), as `auto` and the CLI write them:
`int8` (the mode's defaults), `int8-strict` (nothing runs in float),
`int8+attention+mlp_down` (the defaults plus these choices in float). Int4
names carry the block size and method: `int4` (per-channel scales, GPTQ),
`int4-b32` (blocks of 32 input channels), `int4-b32-rtn` (round to nearest),
`int4-b32+attention+logits` (these groups' weights int8).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from converter.common import files
from converter.core import modes
from converter.passes import int4, selective

DEFAULT_NUM_CALIBRATION_SAMPLES = 64
STRICT_SUFFIX = "-strict"
RECIPE_FORMAT = "keras-lm-litert/recipe/1"

# What each switch does, for error messages and the README's recipe table.
STEPS = {
    "measured_ranges": "calibrate with ranges measured without in-place buffer sharing (passes.calibration_ranges)",
    "bound_mask_fill": "bound the attention mask's -1e9 fill by the scores measured on calibration windows "
    "(passes.graph_surgery.bound_mask_fill)",
    "float_residual_stream": "run the residual stream's ADDs and the norm statistics in float (passes.float_regions)",
    "keep_float": "run chosen ops in float: groups, op types, name:<regex> (passes.selective)",
    "symmetric_matmul": "zero point 0 for attention BATCH_MATMUL operand B, so XNNPACK runs it in int8 "
    "(passes.symmetric_operands)",
}
_CALIBRATED_ONLY = ("measured_ranges", "bound_mask_fill", "float_residual_stream", "keep_float")
_INT8_ONLY = ("symmetric_matmul",)
# Int4 settings (passes.int4.Int4Options); None on other modes.
_INT4_FIELDS = ("int4_block_size", "int4_method", "keep_int8")
_INT4_NAME = re.compile(r"^int4(?:-b(?P<block>\d+))?(?P<rtn>-rtn)?$")


@dataclasses.dataclass(frozen=True)
class CalibrationSettings:
    """How calibration samples are drawn: how many windows, and the seed of the calibration/evaluation split."""

    num_samples: int = DEFAULT_NUM_CALIBRATION_SAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_samples", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"calibration {name} must be an int, got {value!r}.")
        if self.num_samples < 1:
            raise ValueError(f"num_calibration_samples must be at least 1, got {self.num_samples}.")


def _mode_default(mode: modes.Mode, step: str) -> Any:
    if step == "keep_float":
        return tuple(modes.DEFAULT_KEEP_FLOAT.get(mode, ()))
    if step in _INT8_ONLY:
        return mode is modes.Mode.INT8
    return mode.needs_calibration


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to convert a model.

    Attributes:
      mode: the precision (`modes.Mode`).
      keep_float: selective quantization: ops that run in float (groups
        `attention`, `mlp_down`, `mlp`, `logits`, TFLite op types, or
        `name:<regex>`); calibrated modes only. None: the mode's default
        (`SOFTMAX` for int8).
      measured_ranges: calibrated modes: ranges measured without in-place
        buffer sharing (TensorFlow's calibrator widens residual ADD inputs).
      bound_mask_fill: calibrated modes: the attention mask's -1e9 fill
        becomes min(score) - 30, so it does not take the integer range.
      float_residual_stream: calibrated modes: the residual stream's ADDs and
        the norms' statistics run in float.
      symmetric_matmul: int8: attention BATCH_MATMUL operand B gets zero
        point 0, so XNNPACK runs it.
      int4_block_size: int4: input channels per scale (32, 64, 128, 256),
        or 0 (default) for one scale per output channel.
      int4_method: int4: `gptq` (default; error-compensated values from
        calibration windows) or `rtn` (round to nearest, no calibration).
      keep_int8: int4: groups whose weights stay int8 (`attention`, `mlp`,
        `mlp_down`, `logits`, `embedding`).
      calibration: calibration sample count and split seed.
    """

    mode: modes.Mode
    keep_float: tuple[str, ...] | None = None
    measured_ranges: bool | None = None
    bound_mask_fill: bool | None = None
    float_residual_stream: bool | None = None
    symmetric_matmul: bool | None = None
    int4_block_size: int | None = None
    int4_method: str | None = None
    keep_int8: tuple[str, ...] | None = None
    calibration: CalibrationSettings = CalibrationSettings()

    def __post_init__(self) -> None:
        mode = modes.parse_mode(self.mode)
        object.__setattr__(self, "mode", mode)
        if isinstance(self.calibration, Mapping):
            object.__setattr__(self, "calibration", CalibrationSettings(**self.calibration))
        if not isinstance(self.calibration, CalibrationSettings):
            raise TypeError(f"calibration must be CalibrationSettings, got {type(self.calibration).__name__}.")
        for step in STEPS:
            value = getattr(self, step)
            if value is None:
                object.__setattr__(self, step, _mode_default(mode, step))
                continue
            if step == "keep_float":
                object.__setattr__(self, step, selective.parse_choices(value))
            elif not isinstance(value, bool):
                raise TypeError(f"Recipe {step} must be True, False or None (the mode's default), got {value!r}.")
        for step in _CALIBRATED_ONLY:
            if getattr(self, step) and not mode.needs_calibration:
                raise ValueError(
                    f"Recipe step {step!r} ({STEPS[step]}) does not apply to mode {mode.value}: it has no "
                    "quantized activations. Use it with int8 or int16x8, or leave it unset."
                )
        for step in _INT8_ONLY:
            if getattr(self, step) and mode is not modes.Mode.INT8:
                raise ValueError(
                    f"Recipe step {step!r} ({STEPS[step]}) does not apply to mode {mode.value}: only int8 "
                    "activations need a zero point of 0 there (int16 ones have it already). Leave it unset."
                )
        self._settle_int4(mode)

    def _settle_int4(self, mode: modes.Mode) -> None:
        if mode is not modes.Mode.INT4:
            given = [f for f in _INT4_FIELDS if getattr(self, f) not in (None, ())]
            if given:
                raise ValueError(
                    f"Recipe field(s) {given} apply to mode int4 only, not {mode.value}. Leave them unset, or "
                    "use mode int4."
                )
            for name in _INT4_FIELDS:
                object.__setattr__(self, name, None)
            return
        keep = self.keep_int8
        keep = tuple(keep.split(",")) if isinstance(keep, str) else tuple(keep or ())
        options = int4.Int4Options(
            block_size=0 if self.int4_block_size is None else self.int4_block_size,
            method=self.int4_method or "gptq",
            int8=tuple(dict.fromkeys(c.strip().lower() for c in keep if c.strip())),
        )
        object.__setattr__(self, "int4_block_size", options.block_size)
        object.__setattr__(self, "int4_method", options.method)
        object.__setattr__(self, "keep_int8", options.int8)

    @property
    def int4_options(self) -> int4.Int4Options | None:
        """What `passes.int4` needs, for mode int4; None otherwise."""
        if self.mode is not modes.Mode.INT4:
            return None
        return int4.Int4Options(block_size=self.int4_block_size, method=self.int4_method, int8=self.keep_int8)

    @property
    def uses_calibration(self) -> bool:
        """Whether conversion reads calibration windows: calibrated activations, or GPTQ int4 values."""
        options = self.int4_options
        return self.mode.needs_calibration or (options is not None and options.needs_calibration)

    @classmethod
    def for_mode(cls, mode: str | modes.Mode, **overrides: Any) -> Recipe:
        """The mode's default recipe, with `overrides` (keyword-only fields, None keeps a default)."""
        return cls(modes.parse_mode(mode), **overrides)

    @property
    def float_region(self) -> bool:
        """Whether anything of a calibrated model runs in float after calibration."""
        return bool(self.float_residual_stream or self.keep_float)

    @property
    def name(self) -> str:
        """`int8`, `int8-strict` or `int8+attention+mlp_down`: the mode, then how it differs in float."""
        if self.mode is modes.Mode.INT4:
            head = "int4" + (f"-b{self.int4_block_size}" if self.int4_block_size else "")
            head += "-rtn" if self.int4_method == "rtn" else ""
            return "+".join([head, *self.keep_int8])
        if not self.mode.needs_calibration:
            return self.mode.value
        default = _mode_default(self.mode, "keep_float")
        if not self.float_residual_stream and not self.keep_float:
            return self.mode.value + STRICT_SUFFIX
        base = self.mode.value if self.float_residual_stream else self.mode.value + STRICT_SUFFIX
        extra = (
            [c for c in self.keep_float if c not in default] if self.float_residual_stream else list(self.keep_float)
        )
        return "+".join([base, *extra])

    @classmethod
    def parse(cls, text: str, *, calibration: CalibrationSettings | None = None) -> Recipe:
        """`int8+attention` -> the int8 defaults plus attention in float; see the module docstring.

        Raises:
          ValueError: an unknown mode or float choice, or float choices on a
            mode without quantized activations.
        """
        head, *choices = [part.strip() for part in str(text).split("+")]
        int4_name = _INT4_NAME.match(head.lower())
        if int4_name:
            return cls(
                modes.Mode.INT4,
                int4_block_size=int(int4_name["block"] or 0),
                int4_method="rtn" if int4_name["rtn"] else "gptq",
                keep_int8=tuple(choices),
                calibration=calibration or CalibrationSettings(),
            )
        strict = head.endswith(STRICT_SUFFIX)
        mode = modes.parse_mode(head[: -len(STRICT_SUFFIX)] if strict else head)
        extra = selective.parse_choices(choices)
        if (extra or strict) and not mode.needs_calibration:
            raise ValueError(f"Recipe {text!r}: only int8 and int16x8 have ops to keep in float.")
        keep_float = extra if strict else tuple(dict.fromkeys(_mode_default(mode, "keep_float") + extra))
        return cls(
            mode,
            keep_float=keep_float,
            float_residual_stream=False if strict else None,
            calibration=calibration or CalibrationSettings(),
        )

    def calibration_key(self) -> tuple:
        """What the calibration itself depends on: recipes with equal keys share one calibrated model."""
        int4_settings = (self.int4_block_size, self.int4_method, self.keep_int8)
        return (self.mode, self.measured_ranges, self.bound_mask_fill, *int4_settings, self.calibration)

    def bare(self) -> Recipe:
        """This recipe without its post-calibration rewrites (what `auto` converts once per mode)."""
        if not self.mode.needs_calibration:
            return self
        return dataclasses.replace(self, keep_float=(), float_residual_stream=False, symmetric_matmul=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, the mode as its name, plus `name` and `format` for readers."""
        return {
            "format": RECIPE_FORMAT,
            "name": self.name,
            "mode": self.mode.value,
            "keep_float": list(self.keep_float),
            "measured_ranges": self.measured_ranges,
            "bound_mask_fill": self.bound_mask_fill,
            "float_residual_stream": self.float_residual_stream,
            "symmetric_matmul": self.symmetric_matmul,
            **{name: _listed(getattr(self, name)) for name in _INT4_FIELDS if getattr(self, name) is not None},
            "calibration": dataclasses.asdict(self.calibration),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """The recipe `to_dict` wrote.

        Raises:
          ValueError: a key no recipe has (the known ones are listed), or a
            missing mode.
        """
        known = {f.name for f in dataclasses.fields(cls)} | {"format", "name"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown recipe field(s) {unknown}; a recipe has {sorted(known)}.")
        if "mode" not in data:
            raise ValueError("A recipe needs a mode (fp32, fp16, dynamic, int8 or int16x8).")
        values = {k: v for k, v in data.items() if k not in ("format", "name")}
        for name in ("keep_float", "keep_int8"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        if values.get("calibration") is not None:
            values["calibration"] = CalibrationSettings(**values["calibration"])
        else:
            values.pop("calibration", None)
        return cls(**values)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        """Reads a recipe file, or the recipe a conversion report recorded.

        Args:
          path: a `.json` written by `Recipe.save`, or the `<model>_<mode>.json`
            report beside a converted model.

        Raises:
          FileNotFoundError: nothing at the path.
          ValueError: not JSON, or neither a recipe nor a report with one.
        """
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No recipe at {str(path)!r}: pass a recipe .json or a conversion report.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{str(path)!r} is not a JSON recipe ({error}).") from None
        if not isinstance(data, Mapping):
            raise ValueError(f"{str(path)!r} holds a JSON {type(data).__name__}, not a recipe object.")
        if "model_name" in data and "mode" in data:
            # A conversion report: its recipe, or (reports of uncalibrated modes
            # from before recipes were recorded for every mode) its mode alone.
            recorded = dict(data.get("recipe") or {})
            recorded.pop("auto", None)
            recorded.setdefault("mode", data["mode"])
            calibration = data.get("calibration") or {}
            if "calibration" not in recorded and "num_samples" in calibration:
                recorded["calibration"] = {
                    "num_samples": calibration["num_samples"],
                    "seed": calibration.get("seed", 0),
                }
            data = recorded
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{str(path)!r}: {error}") from None

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> pathlib.Path:
        """Writes the recipe as JSON, atomically.

        Raises:
          FileExistsError: the file exists and `overwrite` is False.
        """
        files.refuse_existing([path], overwrite=overwrite)
        return files.write_atomically(path, self.to_json())


# What names a model file (`<model>_<variant>.tflite`) and a `--mode`/`--modes` value: the modes, and int4 by
# block size.
INT4_BLOCK_NAMES = tuple(
    f"int4{block}{method}"
    for block in ("", *(f"-b{size}" for size in int4.BLOCK_SIZES if size))
    for method in ("", "-rtn")
    if block or method
)
VARIANT_NAMES = (*modes.MODE_NAMES, *INT4_BLOCK_NAMES)


def check_variants(names) -> list[str]:
    """Mode names as commands take them (`int8`, `int4-b32`), checked; they name the files too.

    Raises:
      ValueError: a name that is neither a mode nor an int4 block size.
    """
    names = [str(n).strip().lower() for n in names]
    unknown = [n for n in names if n not in VARIANT_NAMES]
    if unknown:
        raise ValueError(f"Unknown mode(s) {', '.join(unknown)}. Valid modes: {', '.join(VARIANT_NAMES)}.")
    return names


def _listed(value):
    return list(value) if isinstance(value, tuple) else value


def resolve_recipe(
    mode: str | modes.Mode | None,
    recipe: Recipe | str | os.PathLike | Mapping | None,
    *,
    keep_float: str | Iterable[str] | None = None,
    measured_ranges: bool | None = None,
    float_residual_stream: bool | None = None,
    symmetric_matmul: bool | None = None,
    num_calibration_samples: int | None = None,
    seed: int | None = None,
) -> Recipe:
    """The recipe a conversion uses: `recipe` as given, or one made from the mode and switches.

    Args:
      mode: the mode; with a recipe, None or the recipe's own mode.
      recipe: a `Recipe`, a mapping (`Recipe.to_dict`), a recipe or report
        `.json` path, or None.
      keep_float, measured_ranges, float_residual_stream, symmetric_matmul,
        num_calibration_samples, seed: the same decisions one by one; with a
        recipe they must be left None.

    Raises:
      ValueError: neither a mode nor a recipe; a recipe together with a
        switch or another mode.
    """
    switches = {
        "keep_float": keep_float,
        "measured_ranges": measured_ranges,
        "float_residual_stream": float_residual_stream,
        "symmetric_matmul": symmetric_matmul,
        "num_calibration_samples": num_calibration_samples,
        "seed": seed,
    }
    if recipe is None:
        if mode is None:
            raise ValueError(f"Pass a mode ({', '.join(modes.MODE_NAMES)}) or a recipe.")
        calibration = CalibrationSettings(
            num_samples=DEFAULT_NUM_CALIBRATION_SAMPLES if num_calibration_samples is None else num_calibration_samples,
            seed=0 if seed is None else seed,
        )
        if isinstance(mode, str) and _INT4_NAME.match(mode.strip().lower().split("+")[0]):
            # An int4 recipe name (`int4-b32`, `int4-b32+attention`) is a mode with its settings.
            named = Recipe.parse(mode, calibration=calibration)
            if keep_float is not None or measured_ranges or float_residual_stream or symmetric_matmul:
                raise ValueError(f"{mode}: int4 has no quantized activations; the float/range switches do not apply.")
            return named
        parsed = modes.parse_mode(mode)
        return Recipe(
            parsed,
            keep_float=None if keep_float is None else selective.parse_choices(keep_float),
            measured_ranges=measured_ranges,
            float_residual_stream=float_residual_stream,
            symmetric_matmul=symmetric_matmul,
            calibration=calibration,
        )
    if isinstance(recipe, (str, os.PathLike)):
        recipe = Recipe.load(recipe)
    elif isinstance(recipe, Mapping):
        recipe = Recipe.from_dict(recipe)
    elif not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, a mapping or a .json path, got {type(recipe).__name__}.")
    given = sorted(name for name, value in switches.items() if value is not None)
    if given:
        raise ValueError(
            f"Pass either a recipe or {', '.join(given)}, not both: the recipe already decides "
            f"them ({recipe.name}). Change the recipe instead (dataclasses.replace(recipe, ...))."
        )
    if mode is not None and modes.parse_mode(mode) is not recipe.mode:
        raise ValueError(
            f"Mode {modes.parse_mode(mode).value} disagrees with the recipe's mode "
            f"{recipe.mode.value}; pass one of them."
        )
    return recipe
