"""`auto`: the smallest, then fastest, model within an accuracy budget.

Given a budget on perplexity (`max_ppl_increase=0.02`: at most 2 % above the
fp32 `.tflite` on the evaluation windows), `auto_convert` converts the model in
each base mode once, derives the selective-quantization variants of the
calibrated modes by graph rewriting (no second calibration), and measures
every candidate with the benchmark harness: size, median latency at the given
thread count, perplexity, top-1 agreement and KL against fp32, all on held-out
windows. It returns the chosen model and a table of everything it tried,
marking the Pareto-optimal ones (no other candidate is at least as small, as
fast and as accurate, and better in one).

Choice: among the candidates within the budget, the smallest; candidates
within `SIZE_TIE` of the smallest count as equally small and the fastest of
them wins. fp32 is always a candidate, so a budget that nothing quantized
meets still returns a model (and says so).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from converter.common import files
from converter.common import progress as progress_lib
from converter.core import conversion, modes, rewriting, wrapping
from converter.core.recipe import CalibrationSettings, Recipe
from converter.core.results import ConversionResult, artifact_paths, check_writable, now_utc, package_versions

# Sizes within 2 % of the smallest count as equally small: the float regions
# add a few hundred bytes, which should not beat a model that is 3x faster.
SIZE_TIE = 0.02
DEFAULT_EVAL_WINDOWS = 16
DEFAULT_THREADS = 2
_TAG = "auto"


def parse_candidate(text: str) -> Recipe:
    """`int8+attention` -> the int8 recipe with attention also in float (`Recipe.parse`).

    Raises:
      ValueError: an unknown mode or float choice, or float choices on a mode
        without quantized activations.
    """
    return Recipe.parse(text)


DEFAULT_CANDIDATES = tuple(
    parse_candidate(text)
    for text in (
        "fp16",
        "dynamic",
        "int8",
        "int8-strict",
        "int8+mlp_down",
        "int8+mlp",
        "int8+attention",
        "int8+attention+mlp_down",
        "int8+attention+mlp",
        "int16x8",
        "int4-b32",
        "int4-b32+attention",
    )
)


def parse_budget(value: str | float) -> float:
    """`"2%"` or `0.02` -> 0.02.

    Raises:
      ValueError: negative, not a number, or a bare number above 1 (ambiguous:
        write `2%` or `0.02`).
    """
    text = str(value).strip()
    try:
        budget = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"max_ppl_increase {value!r} is not a number: write e.g. 2% or 0.02.") from None
    if not text.endswith("%") and budget > 1:
        raise ValueError(f"max_ppl_increase {value!r} is ambiguous: write {text}% or {budget / 100:g}.")
    if not budget >= 0:
        raise ValueError(f"max_ppl_increase must be at least 0, got {value!r}.")
    return budget


@dataclasses.dataclass(frozen=True)
class Trial:
    """One candidate as measured. Figures are None when it failed (`error`).

    `recipe` is the candidate's `Recipe.to_dict()`: pass it to `convert_keras`
    (or save it and use `--recipe=`) to make that model again.
    """

    name: str
    mode: str
    keep_float: tuple[str, ...]
    recipe: Mapping[str, Any] | None = None
    size_bytes: int | None = None
    size_ratio: float | None = None
    latency_ms: float | None = None
    latency_ratio: float | None = None
    perplexity: float | None = None
    perplexity_increase: float | None = None
    top1_agreement: float | None = None
    mean_kl: float | None = None
    float_ops: Mapping[str, int] | None = None
    conversion_seconds: float | None = None
    within_budget: bool = False
    pareto: bool = False
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class AutoResult:
    """What `auto_convert` tried and chose, and the chosen model.

    Attributes:
      model: the chosen model's `ConversionResult` (its report records the
        recipe and, under `auto`, the search that chose it).
      recipe: the chosen `Recipe`.
      trials: every candidate as measured, in the order tried.
      chosen: the chosen candidate's name.
      path, search_report: where `save` wrote the model and the markdown
        table (None until saved).
    """

    model_name: str
    max_ppl_increase: float
    threads: int
    eval_windows: int
    positions: int
    reference_perplexity: float
    trials: tuple[Trial, ...]
    chosen: str
    chosen_within_budget: bool
    recipe: Recipe
    model: ConversionResult = dataclasses.field(repr=False)
    path: str | None
    search_report: str | None
    versions: Mapping[str, str]
    created: str

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model bytes (the chosen model's report is saved beside it)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("model", "recipe")}
        data["recipe"] = self.recipe.to_dict()
        return json.loads(
            json.dumps(data, default=lambda v: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else list(v))
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_markdown(self) -> str:
        """The Pareto table as markdown."""
        lines = [
            f"# auto: {self.model_name}, budget +{100 * self.max_ppl_increase:g} % perplexity",
            "",
            f"Chosen: **{self.chosen}**"
            + ("" if self.chosen_within_budget else " (no quantized candidate met the budget)")
            + f". Perplexity of fp32 {self.reference_perplexity:.3f} on {self.eval_windows} held-out windows "
            f"({self.positions} positions); latency is the median at {self.threads} thread(s). "
            "Pareto: no other candidate is at least as small, as fast and as accurate.",
            "",
            "| candidate | size (MiB) | size / fp32 | latency (ms) | latency / fp32 | perplexity | vs fp32 "
            "| top-1 vs fp32 | mean KL | within budget | Pareto | float ops |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for trial in self.trials:
            name = f"**{trial.name}**" if trial.name == self.chosen else trial.name
            if trial.error:
                lines.append(f"| {name} | failed: {trial.error} |  |  |  |  |  |  |  |  |  |  |")
                continue
            float_ops = ", ".join(f"{count} {op}" for op, count in (trial.float_ops or {}).items()) or "none"
            lines.append(
                f"| {name} | {trial.size_bytes / 2**20:.2f} | {trial.size_ratio:.3f} | {trial.latency_ms:.2f} "
                f"| {trial.latency_ratio:.2f} | {trial.perplexity:.3f} | {100 * trial.perplexity_increase:+.2f} % "
                f"| {100 * trial.top1_agreement:.1f} % | {trial.mean_kl:.4f} "
                f"| {'yes' if trial.within_budget else 'no'} "
                f"| {'yes' if trial.pareto else ''} | {float_ops} |"
            )
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> AutoResult:
        """Writes the chosen model (`path`, a `.tflite`), its report, and `<stem>_search.{json,md}`.

        Returns:
          A copy with `path`, `search_report` and the model's path set.

        Raises:
          FileExistsError: an output exists and `overwrite` is False.
        """
        check_outputs(path, overwrite=overwrite)
        json_path, markdown_path = search_paths(path)
        model = self.model.save(path, overwrite=overwrite)
        saved = dataclasses.replace(self, model=model, path=model.path, search_report=str(markdown_path))
        files.write_atomically(json_path, saved.to_json())
        files.write_atomically(markdown_path, saved.to_markdown())
        return saved


def search_paths(output_path: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
    """The search report's `.json` and `.md` beside the chosen model."""
    model_path = pathlib.Path(output_path)
    stem = model_path.with_suffix("")
    return stem.with_name(stem.name + "_search.json"), stem.with_name(stem.name + "_search.md")


def check_outputs(output_path: str | os.PathLike, *, overwrite: bool) -> None:
    """Refuses existing outputs (the model, its report, the search report) unless `overwrite`."""
    check_writable(artifact_paths(output_path)[0], overwrite=overwrite)
    files.refuse_existing(search_paths(output_path), overwrite=overwrite)


def _dominates(a: Trial, b: Trial) -> bool:
    keys = lambda t: (t.size_bytes, t.latency_ms, t.perplexity)  # noqa: E731
    return all(x <= y for x, y in zip(keys(a), keys(b))) and keys(a) != keys(b)


def choose(trials: Sequence[Trial], *, size_tie: float = SIZE_TIE) -> Trial:
    """The smallest trial within budget; among those within `size_tie` of it, the fastest.

    Falls back to the most accurate trial when none is within budget.
    """
    measured = [t for t in trials if t.error is None]
    within = [t for t in measured if t.within_budget]
    if not within:
        return min(measured, key=lambda t: (t.perplexity, t.size_bytes))
    smallest = min(t.size_bytes for t in within)
    tied = [t for t in within if t.size_bytes <= smallest * (1 + size_tie)]
    return min(tied, key=lambda t: (t.latency_ms, t.size_bytes))


def mark(trials: Sequence[Trial], budget: float) -> list[Trial]:
    """The trials with `within_budget` and `pareto` set."""
    measured = [t for t in trials if t.error is None]
    marked = []
    for trial in trials:
        if trial.error is not None:
            marked.append(trial)
            continue
        marked.append(
            dataclasses.replace(
                trial,
                # A hair of slack for float rounding of the ratio.
                within_budget=trial.perplexity_increase <= budget + 1e-9,
                pareto=not any(_dominates(other, trial) for other in measured if other is not trial),
            )
        )
    return marked


def auto_convert(
    model: Any,
    *,
    max_ppl_increase: float | str,
    calibration: Any,
    evaluation: Any,
    candidates: Iterable[Recipe | str] = DEFAULT_CANDIDATES,
    threads: int = DEFAULT_THREADS,
    eval_windows: int = DEFAULT_EVAL_WINDOWS,
    seq_len: int | None = None,
    calibration_settings: CalibrationSettings | None = None,
    output_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    name: str | None = None,
    build_dir: str | os.PathLike = "build",
    progress: bool = True,
) -> AutoResult:
    """Searches recipes (modes and selective-quantization choices); returns the best model within the budget.

    Args:
      model: as `convert_keras`.
      max_ppl_increase: the budget: largest relative perplexity increase over
        the fp32 `.tflite` (`0.02` or `"2%"`).
      calibration: calibration data, in any form `convert_keras` takes.
      evaluation: held-out windows (`representative_data.TokenWindows` or a
        `.npz`) that calibration never saw.
      candidates: recipes to try (`Recipe`, or names such as
        `int8+attention`); fp32 is always measured as the reference.
      threads: CPU threads for the latency figure.
      eval_windows: evaluation windows scored per candidate.
      seq_len, name, build_dir: as `convert_keras`.
      calibration_settings: calibration sample count and seed, for every
        candidate (default: the recipe defaults).
      output_path: where the chosen `.tflite` goes (with its `.json` report and
        `<stem>_search.{json,md}`); None keeps everything in memory.
      overwrite: replace existing outputs.
      progress: show progress on stderr.

    Returns:
      An `AutoResult`: the table of every candidate, the chosen recipe and the
      chosen model (saved when `output_path` is given).

    Raises:
      ValueError: a bad budget, candidate, thread count or window count, or
        evaluation windows that do not fit the model.
      FileExistsError: an output exists and `overwrite` is False.
    """
    # pylint: disable=import-outside-toplevel
    import representative_data
    from benchmarks import harness, runtimes

    budget = parse_budget(max_ppl_increase)
    settings = calibration_settings or CalibrationSettings()
    recipes = [c if isinstance(c, Recipe) else Recipe.parse(c) for c in candidates]
    recipes = [dataclasses.replace(r, calibration=settings) for r in recipes]
    recipes = [r for r in dict.fromkeys(recipes) if r.mode is not modes.Mode.FP32]
    runtimes.check_threads(threads)
    if eval_windows < 1:
        raise ValueError(f"eval_windows must be at least 1, got {eval_windows}.")
    if evaluation is None:
        raise ValueError("auto needs held-out evaluation windows (a .npz or TokenWindows) to measure perplexity.")
    if not isinstance(evaluation, representative_data.TokenWindows):
        evaluation = representative_data.load_windows(evaluation)
    reference_recipe = Recipe(modes.Mode.FP32, calibration=settings)
    for recipe in [reference_recipe, *recipes]:
        conversion.preflight(model, recipe, calibration=calibration, seq_len=seq_len)
    if output_path is not None:
        check_outputs(output_path, overwrite=overwrite)

    from converter.models import model_sources

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    loaded = model_sources.load_model(model, name=name, build_dir=build_dir)
    seq_len = conversion.resolve_seq_len(loaded.model, seq_len)
    # Checked before hours of conversion, not when the first candidate is measured.
    vocabulary_size = wrapping.model_facts(loaded.model).vocabulary_size
    if vocabulary_size is not None:
        representative_data.validate_windows(evaluation, vocabulary_size=vocabulary_size, seq_len=seq_len)
    common = dict(calibration=calibration, seq_len=seq_len, build_dir=build_dir, progress=progress)

    work = pathlib.Path(tempfile.mkdtemp(prefix="auto-"))
    try:
        progress_lib.log(_TAG, f"{loaded.name}: fp32 reference", enabled=progress)
        reference = conversion.convert_keras(loaded, recipe=reference_recipe, **common)
        reference_path = work / "fp32.tflite"
        reference_path.write_bytes(reference.model)
        results: dict[str, ConversionResult] = {"fp32": reference}
        errors: dict[str, str] = {}
        bases: dict[tuple, ConversionResult] = {}
        for recipe in recipes:
            key = recipe.calibration_key()
            if key not in bases and key not in errors:
                progress_lib.log(_TAG, f"converting {recipe.mode.value}", enabled=progress)
                try:
                    # Calibrated modes are converted bare once; each candidate is a rewrite of it.
                    bases[key] = conversion.convert_keras(loaded, recipe=recipe.bare(), **common)
                except (RuntimeError, ValueError) as error:
                    errors[key] = str(error).splitlines()[0][:200]
            if key in errors:
                errors[recipe.name] = errors[key]
                continue
            results[recipe.name] = _variant(bases[key], recipe)

        trials = []
        by_name = {"fp32": reference_recipe, **{r.name: r for r in recipes}}
        fp32_latency = None
        measuring = progress_lib.progress_bar(
            list(by_name.items()), tag=_TAG, description="measuring candidates", enabled=progress, unit="candidate"
        )
        for index, (trial_name, recipe) in enumerate(measuring, 1):
            if trial_name in errors:
                trials.append(
                    Trial(
                        trial_name,
                        recipe.mode.value,
                        recipe.keep_float,
                        recipe=recipe.to_dict(),
                        error=errors[trial_name],
                    )
                )
                continue
            result = results[trial_name]
            path = reference_path if trial_name == "fp32" else work / f"{index:02d}.tflite"
            path.write_bytes(result.model)
            measured = harness.benchmark_file(
                path,
                threads=threads,
                evaluation=evaluation,
                reference=reference_path,
                warmup_runs=2,
                runs=10,
                min_seconds=0.5,
                max_seconds=15.0,
                max_windows=eval_windows,
                progress=None,
            )
            accuracy = measured.accuracy
            fp32_latency = fp32_latency or measured.latency.median_ms
            trials.append(
                Trial(
                    name=trial_name,
                    mode=recipe.mode.value,
                    keep_float=recipe.keep_float,
                    recipe=recipe.to_dict(),
                    size_bytes=result.size_bytes,
                    size_ratio=round(result.size_bytes / reference.size_bytes, 4),
                    latency_ms=round(measured.latency.median_ms, 3),
                    latency_ratio=round(measured.latency.median_ms / fp32_latency, 4),
                    perplexity=round(accuracy.perplexity, 4),
                    perplexity_increase=round(accuracy.perplexity_increase, 6),
                    top1_agreement=round(accuracy.top1_agreement, 6),
                    mean_kl=round(accuracy.mean_kl, 6),
                    float_ops=dict(result.float_ops) if recipe.mode.needs_calibration else None,
                    conversion_seconds=result.conversion_seconds,
                )
            )
            if trial_name != "fp32":
                path.unlink()  # a large model's candidates would otherwise pile up on disk
            progress_lib.log(
                _TAG,
                f"{trial_name}: {result.size_bytes / 2**20:.2f} MiB, {measured.latency.median_ms:.2f} ms, "
                f"perplexity {100 * accuracy.perplexity_increase:+.2f} %, top-1 {100 * accuracy.top1_agreement:.1f} %",
                enabled=progress,
            )
            if trial_name == "fp32":
                reference_accuracy = accuracy
            if result.check.get("against") != "keras model":
                # A rewritten candidate: its check is the measurement just made.
                results[trial_name] = dataclasses.replace(
                    result,
                    check={
                        "against": "fp32 .tflite",
                        "inputs": "evaluation windows",
                        "windows": accuracy.windows,
                        "top1_agreement": round(accuracy.top1_agreement, 6),
                        "perplexity_increase": round(accuracy.perplexity_increase, 6),
                    },
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    trials = mark(trials, budget)
    best = choose(trials)
    chosen = dataclasses.replace(
        results[best.name],
        auto={
            "candidate": best.name,
            "max_ppl_increase": budget,
            "perplexity_increase": best.perplexity_increase,
        },
    )
    search = AutoResult(
        model_name=loaded.name,
        max_ppl_increase=budget,
        threads=threads,
        eval_windows=reference_accuracy.windows,
        positions=reference_accuracy.positions,
        reference_perplexity=round(reference_accuracy.perplexity, 4),
        trials=tuple(trials),
        chosen=best.name,
        chosen_within_budget=best.within_budget,
        recipe=by_name[best.name],
        model=chosen,
        path=None,
        search_report=None,
        versions=package_versions(),
        created=now_utc(),
    )
    if output_path is not None:
        search = search.save(output_path, overwrite=overwrite)
        progress_lib.log(_TAG, f"chose {best.name}: wrote {search.path} and {search.search_report}", enabled=progress)
    return search


def _variant(base: ConversionResult, recipe: Recipe) -> ConversionResult:
    """The candidate's model, rewritten from the bare conversion of its mode."""
    if not recipe.mode.needs_calibration:
        return base
    rewritten = rewriting.apply_post_calibration(base.model, recipe)
    new_changes = [c for c in rewritten.changes if c not in base.graph_changes]
    if rewritten.model == base.model:
        return dataclasses.replace(base, recipe=recipe.to_dict())
    # Measured against fp32 on the evaluation windows once the candidate has run.
    pending = {"against": "pending"}
    return base.with_model(rewritten.model, changes=new_changes, recipe=recipe.to_dict(), check=pending)
