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
import datetime
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
from typing import Any, Iterable, Mapping, Sequence

from converter import conversion, modes, selective, symmetric_operands, wrapping

# Sizes within 2 % of the smallest count as equally small: the float regions
# add a few hundred bytes, which should not beat a model that is 3x faster.
SIZE_TIE = 0.02
DEFAULT_EVAL_WINDOWS = 16
DEFAULT_THREADS = 2


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One recipe auto tries: a mode and, for calibrated modes, what stays in float.

    Attributes:
      mode: the conversion mode.
      keep_float: selective-quantization choices (`converter.selective`) on
        top of the mode's default ones (`modes.DEFAULT_KEEP_FLOAT`).
      float_residual_stream: calibrated modes: residual stream and norm
        statistics in float. False (`-strict`) also drops the default
        choices: nothing runs in float.
    """

    mode: modes.Mode
    keep_float: tuple[str, ...] = ()
    float_residual_stream: bool = True

    @property
    def float_choices(self) -> tuple[str, ...]:
        """Every selective-quantization choice of the recipe, the mode's defaults first."""
        if not self.float_residual_stream:
            return self.keep_float
        return tuple(dict.fromkeys(modes.DEFAULT_KEEP_FLOAT.get(self.mode, ()) + self.keep_float))

    @property
    def name(self) -> str:
        """`int8`, `int8+attention+mlp_down`, `int8-strict` (nothing in float)."""
        if not self.mode.needs_calibration:
            return self.mode.value
        name = self.mode.value + ("" if self.float_residual_stream else "-strict")
        return "+".join([name, *self.keep_float])


def parse_candidate(text: str) -> Candidate:
    """`int8+attention` -> Candidate(int8, keep_float=("attention",)).

    Raises:
      ValueError: an unknown mode or float choice, or float choices on a mode
        without quantized activations.
    """
    head, *choices = [part.strip() for part in str(text).split("+")]
    strict = head.endswith("-strict")
    mode = modes.parse_mode(head[: -len("-strict")] if strict else head)
    keep_float = selective.parse_choices(choices)
    if (keep_float or strict) and not mode.needs_calibration:
        raise ValueError(f"Candidate {text!r}: only int8 and int16x8 have ops to keep in float.")
    return Candidate(mode, keep_float, not strict)


DEFAULT_CANDIDATES = tuple(parse_candidate(text) for text in (
    "fp16", "dynamic", "int8", "int8-strict", "int8+mlp_down", "int8+mlp", "int8+attention",
    "int8+attention+mlp_down", "int8+attention+mlp", "int16x8",
))


def parse_budget(value: "str | float") -> float:
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
    """One candidate as measured. Figures are None when it failed (`error`)."""

    name: str
    mode: str
    keep_float: tuple[str, ...]
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
    """What `auto_convert` tried and chose."""

    model_name: str
    max_ppl_increase: float
    threads: int
    eval_windows: int
    positions: int
    reference_perplexity: float
    trials: tuple[Trial, ...]
    chosen: str
    chosen_within_budget: bool
    path: str | None
    search_report: str | None
    versions: Mapping[str, str]
    created: str

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_markdown(self) -> str:
        """The Pareto table as markdown."""
        lines = [
            f"# auto: {self.model_name}, budget +{100 * self.max_ppl_increase:g} % perplexity",
            "",
            f"Chosen: **{self.chosen}**" + ("" if self.chosen_within_budget else
                                           " (no quantized candidate met the budget)")
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
                f"| {100 * trial.top1_agreement:.1f} % | {trial.mean_kl:.4f} | {'yes' if trial.within_budget else 'no'} "
                f"| {'yes' if trial.pareto else ''} | {float_ops} |"
            )
        return "\n".join(lines) + "\n"


def _log(message: str, progress: bool) -> None:
    if progress:
        print(f"[auto] {message}", file=sys.stderr, flush=True)


def search_paths(output_path: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
    """The search report's `.json` and `.md` beside the chosen model."""
    model_path = pathlib.Path(output_path)
    stem = model_path.with_suffix("")
    return stem.with_name(stem.name + "_search.json"), stem.with_name(stem.name + "_search.md")


def check_outputs(output_path: str | os.PathLike, *, overwrite: bool) -> None:
    """Refuses existing outputs (the model, its report, the search report) unless `overwrite`."""
    conversion.check_writable(conversion.artifact_paths(output_path)[0], overwrite=overwrite)
    for path in search_paths(output_path):
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"{str(path)!r} exists. Pass overwrite=True (--overwrite, OVERWRITE=1 with make) to replace it.")


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


def _mark(trials: Sequence[Trial], budget: float) -> list[Trial]:
    measured = [t for t in trials if t.error is None]
    marked = []
    for trial in trials:
        if trial.error is not None:
            marked.append(trial)
            continue
        marked.append(dataclasses.replace(
            trial,
            # A hair of slack for float rounding of the ratio.
            within_budget=trial.perplexity_increase <= budget + 1e-9,
            pareto=not any(_dominates(other, trial) for other in measured if other is not trial),
        ))
    return marked


def auto_convert(
    model: Any,
    *,
    max_ppl_increase: "float | str",
    calibration: Any,
    evaluation: Any,
    candidates: Iterable["Candidate | str"] = DEFAULT_CANDIDATES,
    threads: int = DEFAULT_THREADS,
    eval_windows: int = DEFAULT_EVAL_WINDOWS,
    seq_len: int | None = None,
    num_calibration_samples: int = conversion.DEFAULT_NUM_CALIBRATION_SAMPLES,
    output_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    name: str | None = None,
    seed: int = 0,
    build_dir: str | os.PathLike = "build",
    progress: bool = True,
) -> tuple[AutoResult, conversion.ConversionResult]:
    """Searches modes and selective-quantization choices; returns the best model within the budget.

    Args:
      model: as `conversion.convert_keras`.
      max_ppl_increase: the budget: largest relative perplexity increase over
        the fp32 `.tflite` (`0.02` or `"2%"`).
      calibration: calibration windows or source, as `convert_keras`.
      evaluation: held-out windows (`representative_data.TokenWindows` or a
        `.npz`) that calibration never saw.
      candidates: recipes to try (`Candidate` or text such as
        `int8+attention`); fp32 is always measured as the reference.
      threads: CPU threads for the latency figure.
      eval_windows: evaluation windows scored per candidate.
      seq_len, num_calibration_samples, name, seed, build_dir: as `convert_keras`.
      output_path: where the chosen `.tflite` goes (with its `.json` report and
        `<stem>_search.{json,md}`); None keeps everything in memory.
      overwrite: replace existing outputs.
      progress: print progress to stderr.

    Returns:
      (the search result, the chosen model's `ConversionResult`).

    Raises:
      ValueError: a bad budget, candidate, thread count or window count, or
        evaluation windows that do not fit the model.
      FileExistsError: an output exists and `overwrite` is False.
    """
    # pylint: disable=import-outside-toplevel
    import representative_data
    from benchmarks import harness, runtimes

    budget = parse_budget(max_ppl_increase)
    candidates = [c if isinstance(c, Candidate) else parse_candidate(c) for c in candidates]
    candidates = [c for c in dict.fromkeys(candidates) if c.mode is not modes.Mode.FP32]
    runtimes.check_threads(threads)
    if eval_windows < 1:
        raise ValueError(f"eval_windows must be at least 1, got {eval_windows}.")
    if evaluation is None:
        raise ValueError("auto needs held-out evaluation windows (a .npz or TokenWindows) to measure perplexity.")
    if not isinstance(evaluation, representative_data.TokenWindows):
        evaluation = representative_data.load_windows(evaluation)
    for mode in {c.mode for c in candidates} | {modes.Mode.FP32}:
        conversion.preflight(model, mode, calibration=calibration, seq_len=seq_len,
                             num_calibration_samples=num_calibration_samples)
    if output_path is not None:
        check_outputs(output_path, overwrite=overwrite)

    from converter import model_sources

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    loaded = model_sources.load_model(model, name=name, build_dir=build_dir)
    seq_len = conversion.resolve_seq_len(loaded.model, seq_len)
    # Checked before hours of conversion, not when the first candidate is measured.
    vocabulary_size = wrapping.model_facts(loaded.model).vocabulary_size
    if vocabulary_size is not None:
        representative_data.validate_windows(evaluation, vocabulary_size=vocabulary_size, seq_len=seq_len)
    common = dict(calibration=calibration, seq_len=seq_len, num_calibration_samples=num_calibration_samples,
                  seed=seed, build_dir=build_dir, progress=progress)

    work = pathlib.Path(tempfile.mkdtemp(prefix="auto-"))
    try:
        _log(f"{loaded.name}: fp32 reference", progress)
        reference = conversion.convert_keras(loaded, modes.Mode.FP32, **common)
        reference_path = work / "fp32.tflite"
        reference_path.write_bytes(reference.model)
        results: dict[str, conversion.ConversionResult] = {"fp32": reference}
        errors: dict[str, str] = {}
        bases: dict[modes.Mode, conversion.ConversionResult] = {}
        for candidate in candidates:
            base = candidate.mode
            if base not in bases and base.value not in errors:
                _log(f"converting {base.value}", progress)
                try:
                    # Calibrated modes are converted bare once; each variant is a rewrite of it.
                    bases[base] = conversion.convert_keras(
                        loaded, base, float_residual_stream=False, symmetric_matmul=False, keep_float=(), **common)
                except (RuntimeError, ValueError) as error:
                    errors[base.value] = str(error).splitlines()[0][:200]
            if base.value in errors:
                errors[candidate.name] = errors[base.value]
                continue
            results[candidate.name] = _variant(bases[base], candidate)

        trials = []
        names = ["fp32"] + [c.name for c in candidates]
        fp32_latency = None
        for index, trial_name in enumerate(names, 1):
            candidate = parse_candidate(trial_name) if trial_name != "fp32" else Candidate(modes.Mode.FP32)
            if trial_name in errors:
                trials.append(Trial(trial_name, candidate.mode.value, candidate.float_choices, error=errors[trial_name]))
                continue
            result = results[trial_name]
            path = reference_path if trial_name == "fp32" else work / f"{index:02d}.tflite"
            path.write_bytes(result.model)
            _log(f"[{index}/{len(names)}] measuring {trial_name}", progress)
            measured = harness.benchmark_file(
                path, threads=threads, evaluation=evaluation, reference=reference_path,
                warmup_runs=2, runs=10, min_seconds=0.5, max_seconds=15.0, max_windows=eval_windows,
                progress=None,
            )
            accuracy = measured.accuracy
            fp32_latency = fp32_latency or measured.latency.median_ms
            trials.append(Trial(
                name=trial_name, mode=candidate.mode.value, keep_float=candidate.float_choices,
                size_bytes=result.size_bytes, size_ratio=round(result.size_bytes / reference.size_bytes, 4),
                latency_ms=round(measured.latency.median_ms, 3),
                latency_ratio=round(measured.latency.median_ms / fp32_latency, 4),
                perplexity=round(accuracy.perplexity, 4),
                perplexity_increase=round(accuracy.perplexity_increase, 6),
                top1_agreement=round(accuracy.top1_agreement, 6), mean_kl=round(accuracy.mean_kl, 6),
                float_ops=dict(result.float_ops) if candidate.mode.needs_calibration else None,
                conversion_seconds=result.conversion_seconds,
            ))
            if trial_name != "fp32":
                path.unlink()  # a large model's candidates would otherwise pile up on disk
            _log(f"    {trial_name}: {result.size_bytes / 2**20:.2f} MiB, {measured.latency.median_ms:.2f} ms, "
                 f"perplexity {100 * accuracy.perplexity_increase:+.2f} %, top-1 {100 * accuracy.top1_agreement:.1f} %",
                 progress)
            if trial_name == "fp32":
                reference_accuracy = accuracy
            if result.check.get("against") != "keras model":
                # A rewritten variant: its check is the measurement just made.
                results[trial_name] = dataclasses.replace(result, check={
                    "against": "fp32 .tflite", "inputs": "evaluation windows", "windows": accuracy.windows,
                    "top1_agreement": round(accuracy.top1_agreement, 6),
                    "perplexity_increase": round(accuracy.perplexity_increase, 6),
                })
    finally:
        shutil.rmtree(work, ignore_errors=True)

    trials = _mark(trials, budget)
    best = choose(trials)
    chosen = results[best.name]
    chosen = dataclasses.replace(chosen, recipe={
        **(chosen.recipe or {}), "auto": {"candidate": best.name, "max_ppl_increase": budget,
                                          "perplexity_increase": best.perplexity_increase},
    })
    search = AutoResult(
        model_name=loaded.name, max_ppl_increase=budget, threads=threads,
        eval_windows=reference_accuracy.windows, positions=reference_accuracy.positions,
        reference_perplexity=round(reference_accuracy.perplexity, 4), trials=tuple(trials), chosen=best.name,
        chosen_within_budget=best.within_budget, path=None, search_report=None,
        versions=conversion.package_versions(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    if output_path is not None:
        chosen = chosen.save(output_path, overwrite=overwrite)
        json_path, markdown_path = search_paths(output_path)
        search = dataclasses.replace(search, path=chosen.path, search_report=str(markdown_path))
        conversion._atomic_write(json_path, (json.dumps(search.to_dict(), indent=2) + "\n").encode())  # pylint: disable=protected-access
        conversion._atomic_write(markdown_path, search.to_markdown().encode())  # pylint: disable=protected-access
        _log(f"chose {best.name}: wrote {chosen.path} and {markdown_path}", progress)
    return search, chosen


def _variant(base: conversion.ConversionResult, candidate: Candidate) -> conversion.ConversionResult:
    """The candidate's model, rewritten from the bare conversion of its mode."""
    if not candidate.mode.needs_calibration:
        return base
    # The same rewrites, in the same order, as convert_keras applies after calibration.
    rewritten = selective.keep_in_float(
        base.model, candidate.float_choices, residual_stream=candidate.float_residual_stream)
    changes = list(rewritten.changes)
    model = rewritten.model
    symmetric = candidate.mode is modes.Mode.INT8
    if symmetric:
        made_symmetric = symmetric_operands.symmetric_matmul_operands(model)
        model = made_symmetric.model
        changes.extend(made_symmetric.changes)
    recipe = {**(base.recipe or {}), "float_residual_stream": candidate.float_residual_stream,
              "keep_float": list(candidate.float_choices), "symmetric_matmul": symmetric}
    if not changes:
        return dataclasses.replace(base, recipe=recipe)
    # Measured against fp32 on the evaluation windows once the candidate has run.
    pending = {"against": "pending"}
    return conversion.replace_model(base, model, changes=changes, recipe=recipe, check=pending)
