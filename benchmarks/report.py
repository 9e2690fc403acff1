"""Turns result files into a markdown report and PNG plots that a person reads at a glance.

    python -m benchmarks.report [--results_dir=results] [--out=results/report.md]

For each machine and model it keeps the latest result of every variant,
runtime and thread count, and shows latency and size as ratios to fp32 TFLite
in the same run, accuracy against the fp32 model, and the peers (Keras on
TensorFlow, ONNX Runtime) beside their TFLite counterparts. Plots need
matplotlib (a host-side package); without it the report is written without them.
"""

from __future__ import annotations

import collections
import pathlib
import sys
from typing import Any

from absl import app, flags

from benchmarks import device_report, generation_report, plots
from benchmarks import results as results_lib
from converter.common import files

_ORDER = ("keras", "fp32", "fp16", "dynamic", "int8", "int16x8", "onnx-fp32", "onnx-dynamic")
# The TFLite variant each peer competes with.
PEER_PAIRS = (("fp32", "keras"), ("fp32", "onnx-fp32"), ("dynamic", "onnx-dynamic"))
REFERENCE = "fp32"
DYNAMIC_TARGET = 0.35
PLOT_PPL_LIMIT = 10.0


def _variant_key(variant: str) -> tuple[int, str]:
    return (_ORDER.index(variant) if variant in _ORDER else len(_ORDER), variant)


def _machine_key(result: dict[str, Any]) -> tuple[str, str, bool]:
    # A bench pack's run stays apart from the host's own, even on the same machine.
    return result["machine"]["hostname"], result["machine"]["cpu"], bool(result.get("device"))


class ModelRun:
    """The latest results of one model on one machine."""

    def __init__(self, model: str, machine: dict[str, Any], items: list[dict[str, Any]]):
        self.model = model
        self.machine = machine
        self.items = list(items)
        latest: dict[tuple[str, int], dict[str, Any]] = {}
        accuracy: dict[str, dict[str, Any]] = {}
        runtimes: dict[str, str] = {}
        for result in items:  # oldest first, so later runs replace earlier ones
            variant = result["model"]["variant"]
            latest[(variant, result["settings"]["threads"])] = result
            runtimes[result["runtime"]["name"]] = result["runtime"]["version"]
            if result.get("accuracy"):
                accuracy[variant] = result["accuracy"]
        self.latest = latest
        self.accuracy = accuracy
        self.runtimes = runtimes
        self.variants = sorted({variant for variant, _ in latest}, key=_variant_key)
        self.threads = sorted({threads for _, threads in latest})
        self.created = max(result["created"] for result in items)

    def result(self, variant: str, threads: int | None = None) -> dict[str, Any] | None:
        if threads is not None:
            return self.latest.get((variant, threads))
        for count in self.threads:
            if (variant, count) in self.latest:
                return self.latest[(variant, count)]
        return None

    def median(self, variant: str, threads: int) -> float | None:
        result = self.result(variant, threads)
        return None if result is None else result["latency"]["median_ms"]

    def size(self, variant: str) -> int | None:
        result = self.result(variant)
        return None if result is None else result["model"]["size_bytes"]

    def latency_ratio(self, variant: str, baseline: str, threads: int) -> float | None:
        mine, theirs = self.median(variant, threads), self.median(baseline, threads)
        return None if mine is None or not theirs else mine / theirs


def group_runs(results: list[dict[str, Any]]) -> list[ModelRun]:
    """Groups results by machine and model (results oldest first)."""
    grouped: dict[tuple, list[dict[str, Any]]] = collections.defaultdict(list)
    for result in results:
        grouped[(_machine_key(result), result["model"]["name"])].append(result)
    return [
        ModelRun(model, items[-1]["machine"], items)
        for (_, model), items in sorted(grouped.items(), key=lambda entry: (entry[0][1], entry[0][0]))
    ]


def _mib(value: int | None) -> str:
    return "–" if value is None else f"{value / 2**20:.2f} MiB"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f} %"


def model_table(run: ModelRun) -> str:
    """The main table: every variant with size, latency per thread count and accuracy."""
    reference_size = run.size(REFERENCE)
    header = ["variant", "runtime", "size", "size vs fp32"]
    for threads in run.threads:
        header.append(f"median {threads} thr (vs fp32)")
    header += ["p90 (max thr)", "init", "peak RSS", "perplexity", "vs fp32", "top-1 vs fp32", "KL vs fp32"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * 2 + " ---: |" * (len(header) - 2)]
    for variant in run.variants:
        first = run.result(variant)
        size = run.size(variant)
        row = [
            f"`{variant}`",
            first["runtime"]["name"],
            _mib(size),
            _ratio(size / reference_size if size and reference_size else None),
        ]
        for threads in run.threads:
            median = run.median(variant, threads)
            ratio = run.latency_ratio(variant, REFERENCE, threads)
            row.append("–" if median is None else f"{median:.2f} ms ({_ratio(ratio)})")
        last = run.result(variant, max(t for v, t in run.latest if v == variant))
        accuracy = run.accuracy.get(variant)
        row += [
            f"{last['latency']['p90_ms']:.2f} ms",
            f"{first['latency']['init_ms']:.0f} ms",
            f"{first['memory']['peak_rss_bytes'] / 2**20:.0f} MiB",
            "–" if accuracy is None else f"{accuracy['perplexity']:.3f}",
            "–" if accuracy is None else _signed_percent(accuracy.get("perplexity_increase")),
            "–" if accuracy is None else _percent(accuracy.get("top1_agreement")),
            "–" if accuracy is None or accuracy.get("mean_kl") is None else f"{accuracy['mean_kl']:.4f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _signed_percent(value: float | None) -> str:
    if value is None:
        return "–"
    if abs(value) >= 10:  # a wrecked model: a factor reads better than millions of percent
        return f"×{value + 1:.3g}"
    return f"{100 * value:+.2f} %"


def peer_table(run: ModelRun) -> str:
    """TFLite against each peer, per thread count: how many times faster TFLite is."""
    lines = [
        "| TFLite | peer | threads | TFLite median | peer median | TFLite is faster by |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for ours, peer in PEER_PAIRS:
        for threads in run.threads:
            mine, theirs = run.median(ours, threads), run.median(peer, threads)
            if mine is None or theirs is None:
                continue
            lines.append(
                f"| `{ours}` | `{peer}` | {threads} | {mine:.2f} ms | {theirs:.2f} ms | {theirs / mine:.2f}x |"
            )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def target_lines(run: ModelRun) -> list[str]:
    """The issue's latency targets, stated with the measured figures."""
    lines = []
    for threads in run.threads:
        ratio = run.latency_ratio("dynamic", REFERENCE, threads)
        if ratio is not None:
            verdict = "met" if ratio <= DYNAMIC_TARGET else "not met"
            lines.append(
                f"- dynamic int8 / fp32 TFLite latency at {threads} thread(s): {ratio:.2f}x "
                f"(target ≤ {DYNAMIC_TARGET}x: {verdict})"
            )
    for ours, peer in PEER_PAIRS[1:]:
        for threads in run.threads:
            mine, theirs = run.median(ours, threads), run.median(peer, threads)
            if mine is not None and theirs is not None:
                verdict = "met" if mine <= theirs else "not met"
                lines.append(
                    f"- `{ours}` vs ONNX Runtime `{peer}` at {threads} thread(s): {mine:.2f} ms vs "
                    f"{theirs:.2f} ms (target: at least as fast: {verdict})"
                )
    return lines


def machine_line(run: ModelRun) -> str:
    machine = run.machine
    runtimes = ", ".join(f"{name} {version}" for name, version in sorted(run.runtimes.items()))
    return (
        f"Measured on {machine['cpu']} ({machine['architecture']}, {machine['usable_cores']} usable of "
        f"{machine['logical_cores']} cores), {machine['os']}, Python {machine['python']}; {runtimes}; "
        f"latest result {run.created}."
    )


def plot_run(run: ModelRun, path: pathlib.Path) -> bool:
    """Latency against size, coloured by perplexity increase; returns False without matplotlib."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel

        matplotlib.use("Agg")
        from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
    except ImportError:
        return False
    threads = max(run.threads)
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(12, 4.8))
    points = [(v, run.median(v, threads), run.size(v), run.accuracy.get(v)) for v in run.variants]
    points = [p for p in points if p[1] is not None and p[2]]
    increases = [(p[3] or {}).get("perplexity_increase") for p in points]
    # Clipped at ±PLOT_PPL_LIMIT %: a wrecked mode shows as saturated red, not as a scale that hides the rest.
    colours = [max(-PLOT_PPL_LIMIT, min(PLOT_PPL_LIMIT, 100 * (value or 0.0))) for value in increases]
    scatter = left.scatter(
        [p[1] for p in points],
        [p[2] / 2**20 for p in points],
        c=colours,
        cmap="RdYlGn_r",
        vmin=-PLOT_PPL_LIMIT,
        vmax=PLOT_PPL_LIMIT,
        s=90,
        edgecolors="black",
    )
    for position, ((variant, median, size, _), increase) in enumerate(zip(points, increases)):
        # Stagger labels so that variants of equal size do not print over each other.
        offset = ((8, 6), (8, -14), (8, 18))[position % 3]
        left.annotate(
            f"{variant} ({_signed_percent(increase)} ppl)",
            (median, size / 2**20),
            textcoords="offset points",
            xytext=offset,
            fontsize=7,
        )
    left.set_xscale("log")
    left.set_xlabel(f"median latency, {threads} thread(s) [ms, log scale]")
    left.set_ylabel("model size [MiB]")
    left.set_title(f"{run.model}: latency vs size", fontsize=10)
    left.grid(alpha=0.3, which="both")
    left.margins(x=0.25, y=0.12)
    figure.colorbar(scatter, ax=left, label=f"perplexity change vs fp32 [%], clipped at ±{PLOT_PPL_LIMIT:g}")
    width = 0.8 / max(len(run.threads), 1)
    for offset, count in enumerate(run.threads):
        values = [run.median(v, count) or 0.0 for v in run.variants]
        positions = [i + offset * width for i in range(len(run.variants))]
        right.bar(positions, values, width=width, label=f"{count} thread(s)")
    right.set_xticks([i + width * (len(run.threads) - 1) / 2 for i in range(len(run.variants))])
    right.set_xticklabels(run.variants, rotation=30, ha="right")
    right.set_yscale("log")
    right.set_ylabel("median latency [ms, log scale]")
    right.set_title("latency per variant and thread count")
    right.legend()
    right.grid(axis="y", alpha=0.3)
    plots.save_figure(figure, path)
    return True


def render_report(
    results: list[dict[str, Any]], *, out: pathlib.Path, plots: bool = True, generation: list[dict[str, Any]] = ()
) -> str:
    """Writes `out` (markdown) and one PNG per machine and model beside it; returns the markdown.

    Args:
      results: window benchmark results (`results.load_results`).
      out: the markdown file.
      plots: draw the PNG plots (needs matplotlib).
      generation: generation results and baselines (`generation_report.load_generation_results`).
    """
    if not results and not generation:
        raise ValueError("No benchmark results to report; run `make bench` (or `make bench-generation`) first.")
    sections = ["# Benchmark report\n"]
    for run in group_runs(results):
        host = title = run.machine["hostname"] or "machine"
        if device_report.device_items(run.items):
            host, title = f"{host}-pack", f"{host} (bench pack)"
        sections.append(f"## {run.model} on {title}\n\n{machine_line(run)}\n")
        sections.append(model_table(run))
        peers = peer_table(run)
        if peers:
            sections.append("Peers, same machine and run:\n\n" + peers)
        targets = target_lines(run)
        if targets:
            sections.append("\n".join(targets) + "\n")
        device = device_report.device_section(run, out=out, host=host, plots=plots, order=_variant_key)
        if device:
            sections.append(device)
        if plots:
            image = out.with_name(f"{run.model}_{host}.png")
            if plot_run(run, image):
                sections.append(f"![{run.model} latency and size]({image.name})\n")
            else:
                sections.append("(plots need matplotlib: pip install matplotlib)\n")
    sections += [s for s in generation_report.generation_sections(list(generation), out=out, plot=plots) if s]
    text = "\n".join(sections)
    files.write_atomically(out, text)
    return text


_RESULTS_DIR = None
_OUT = None


def _define_flags() -> None:
    """Defines the flags only when run as a program, so importing this module defines none."""
    global _RESULTS_DIR, _OUT  # pylint: disable=global-statement
    _RESULTS_DIR = flags.DEFINE_string("results_dir", "results", "Folder holding result files.")
    _OUT = flags.DEFINE_string("out", None, "Markdown report path (default: <results_dir>/report.md).")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        results = results_lib.load_results(_RESULTS_DIR.value)
        generation = generation_report.load_generation_results(_RESULTS_DIR.value)
        out = pathlib.Path(_OUT.value or pathlib.Path(_RESULTS_DIR.value) / "report.md")
        results_lib.check_results_dir(out.parent)
        text = render_report(results, out=out, generation=generation)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    print(f"[report] written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(main)
