"""Device runs in the report: the board's state and the spread over repeats (Pis throttle).

`make pi-report RESULTS=<folder>` (`python -m benchmarks.pi_report`) merges the results a bench
pack wrote on a device with the host's results and renders them with
`benchmarks.report`, one section per machine and model. A device's section
gets, beside the usual table, its board facts (model, governor, clocks,
temperatures before and after, throttling flags), a table of the median
latency over the repeats with the fastest and slowest repeat, and a plot of
latency against threads with that spread.
"""

from __future__ import annotations

import collections
import pathlib
import statistics
from typing import Any

from benchmarks import generation_report, plots
from benchmarks import results as results_lib


def device_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results of the latest sweep among those that a device runner wrote."""
    on_device = [r for r in items if r.get("device")]
    if not on_device:
        return []
    latest = max(on_device, key=lambda r: r["created"])["device"]["sweep"]["id"]
    return [r for r in on_device if r["device"]["sweep"]["id"] == latest]


def spread(items: list[dict[str, Any]]) -> dict[tuple[str, int], list[float]]:
    """(variant, threads) -> median latency of each repeat, in ms."""
    medians: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
    for result in sorted(items, key=lambda r: r["device"]["sweep"]["repeat"]):
        medians[(result["model"]["variant"], result["settings"]["threads"])].append(result["latency"]["median_ms"])
    return dict(medians)


def spread_table(items: list[dict[str, Any]], *, order) -> str:
    """Median over the repeats, fastest and slowest repeat, and the spread between them."""
    lines = [
        "| variant | threads | repeats | median of repeats | fastest | slowest | spread |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (variant, threads), values in sorted(spread(items).items(), key=lambda e: (order(e[0][0]), e[0][1])):
        middle = statistics.median(values)
        lines.append(
            f"| `{variant}` | {threads} | {len(values)} | {middle:.2f} ms | {min(values):.2f} ms | "
            f"{max(values):.2f} ms | {100 * (max(values) - min(values)) / middle:.1f} % |"
        )
    return "\n".join(lines) + "\n"


def _range(values: list[float], unit: str, digits: int = 1) -> str:
    if not values:
        return "not available"
    low, high = min(values), max(values)
    return f"{low:.{digits}f} {unit}" if low == high else f"{low:.{digits}f}–{high:.{digits}f} {unit}"


def facts_lines(items: list[dict[str, Any]]) -> list[str]:
    """The board, its clocks, temperatures and throttling over the sweep, in words."""
    ordered = sorted(items, key=lambda r: r["created"])
    device = ordered[-1]["device"]
    states = [r["device"][moment] for r in ordered for moment in ("before", "after")]
    cpu = states[-1]["cpu"]
    governors = sorted({s["cpu"]["governor"] for s in states if s["cpu"].get("governor")})
    clocks = [mhz for s in states for mhz in s["cpu"].get("current_mhz", {}).values()]
    limits = (
        f" (limits {cpu['min_mhz']:.0f}–{cpu['max_mhz']:.0f} MHz)"
        if cpu.get("min_mhz") is not None and cpu.get("max_mhz") is not None
        else ""
    )
    before = [
        r["device"]["before"]["soc_temperature_c"]
        for r in ordered
        if r["device"]["before"].get("soc_temperature_c") is not None
    ]
    after = [
        r["device"]["after"]["soc_temperature_c"]
        for r in ordered
        if r["device"]["after"].get("soc_temperature_c") is not None
    ]
    lines = [
        f"- Board: {device.get('board') or 'not reported (no /proc/device-tree/model)'}",
        f"- CPU governor: {', '.join(governors) or 'not available'}; clock seen before/after runs: "
        f"{_range(clocks, 'MHz', 0)}{limits}",
    ]
    if before:
        lines.append(
            f"- SoC temperature: {before[0]:.1f} °C before the first run, {after[-1]:.1f} °C after the last, "
            f"hottest {max(before + after):.1f} °C"
        )
    else:
        lines.append("- SoC temperature: not available (no thermal zone)")
    if not device.get("vcgencmd"):
        lines.append("- Throttling: not available (no vcgencmd)")
    else:
        flags = sorted({flag for s in states if s.get("throttled") for flag in s["throttled"]["flags"]})
        lines.append(f"- Throttling (vcgencmd get_throttled): {'; '.join(flags) if flags else 'none seen'}")
    sweep = device["sweep"]
    lines.append(
        f"- Sweep {sweep['id']}: threads {', '.join(map(str, sweep['threads']))}, "
        f"{sweep['repeats']} repeat(s); pack {device['pack']['name']} built {device['pack']['created']}"
    )
    return lines


def plot_threads(items: list[dict[str, Any]], path: pathlib.Path, *, order, title: str) -> bool:
    """Median latency against threads per variant, with bars from the fastest to the slowest repeat."""
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel

        matplotlib.use("Agg")
        from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
    except ImportError:
        return False
    by_variant: dict[str, list[tuple[int, list[float]]]] = collections.defaultdict(list)
    for (variant, threads), values in spread(items).items():
        by_variant[variant].append((threads, values))
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    for variant in sorted(by_variant, key=order):
        points = sorted(by_variant[variant])
        middles = [statistics.median(v) for _, v in points]
        axes.errorbar(
            [t for t, _ in points],
            middles,
            yerr=[
                [m - min(v) for m, (_, v) in zip(middles, points)],
                [max(v) - m for m, (_, v) in zip(middles, points)],
            ],
            marker="o",
            capsize=4,
            label=variant,
        )
    axes.set_xlabel("threads")
    axes.set_ylabel("median latency [ms] (bars: fastest to slowest repeat)")
    axes.set_yscale("log")
    axes.set_xticks(sorted({t for points in by_variant.values() for t, _ in points}))
    axes.set_title(title)
    axes.grid(alpha=0.3, which="both")
    axes.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    plots.save_figure(figure, path)
    return True


def device_section(run, *, out: pathlib.Path, host: str, plots: bool = True, order=lambda variant: (0, variant)) -> str:
    """Markdown for a device run (empty for a host run); its plot is `<model>_<host>_threads.png` beside `out`."""
    items = device_items(run.items)
    if not items:
        return ""
    parts = [
        "Device:\n",
        "\n".join(facts_lines(items)) + "\n",
        "Latency over the repeats of the latest sweep (the table above shows the last repeat):\n",
        spread_table(items, order=order),
    ]
    if plots:
        image = out.with_name(f"{run.model}_{host}_threads.png")
        if plot_threads(items, image, order=order, title=f"{run.model} on {host}: latency vs threads"):
            parts.append(f"![{run.model} latency vs threads on {host}]({image.name})\n")
    return "\n".join(parts)


def _host_folder(folder: pathlib.Path, host_results_dir) -> pathlib.Path | None:
    if (
        host_results_dir is not None
        and pathlib.Path(host_results_dir).is_dir()
        and pathlib.Path(host_results_dir).resolve() != folder.resolve()
    ):
        return pathlib.Path(host_results_dir)
    return None


def merged_generation_results(results_dir: str | pathlib.Path, host_results_dir) -> list[dict]:
    """The device's generation results and the host's (`generation_report.load_generation_results`)."""
    folder = pathlib.Path(results_dir)
    host = _host_folder(folder, host_results_dir)
    found = generation_report.load_generation_results(folder)
    if host is not None:
        found += generation_report.load_generation_results(host)
    return sorted(found, key=lambda result: result["created"])


def merged_results(results_dir: str | pathlib.Path, host_results_dir: str | pathlib.Path | None) -> list[dict]:
    """The device's results and the host's, oldest first.

    Raises:
      FileNotFoundError: the device folder does not exist.
      ValueError: it holds no results written by a bench pack.
    """
    folder = pathlib.Path(results_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"No results folder at {str(folder)!r}. Copy the results back from the device first "
            '(scp -r "$PI:pi-pack-<model>/results" ./pi-results, as the pack\'s README says).'
        )
    device = results_lib.load_results(folder)
    if not any(result.get("device") for result in device):
        raise ValueError(
            f"{str(folder)!r} holds no results from a bench pack's runner (run_pi.py); pass the results "
            "folder that the pack wrote on the device."
        )
    host_folder = _host_folder(folder, host_results_dir)
    host = results_lib.load_results(host_folder) if host_folder is not None else []
    return sorted(device + host, key=lambda result: result["created"])
