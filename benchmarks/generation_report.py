"""The generation section of the report: tokens per second in llama-bench's terms, beside the peers.

For each machine and model: every generation model (the latest run per
variant and thread count) with prefill and decode tokens per second, time to
first token, decode cost by cache fill, memory against what the model must
hold, the roofline efficiency of a decode step and the window-recompute
baseline; then the peers measured in the same run (llama.cpp, keras-hub's
`generate`) with our decode speed as a ratio to theirs; LiteRT-LM's own
benchmark on the same bundle beside the harness (`benchmarks.litertlm_bench`);
and a plot of decode
tokens per second against file size. A bench pack's results from a device
(`run_pi.py`) get a table of the spread over the sweep's repeats, beside the
host's decode speed for the same model, mode and thread count.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import statistics
from typing import Any

from benchmarks import generation_bench, litertlm_bench, plots

_LLAMA_CPP_REFERENCE = "llama.cpp-Q8_0"
_SCHEMAS = (generation_bench.SCHEMA, generation_bench.BASELINE_SCHEMA, litertlm_bench.SCHEMA)


def load_generation_results(results_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every generation result and baseline under a folder, oldest first (empty when there is none)."""
    folder = pathlib.Path(results_dir)
    found = []
    for path in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # report.load_results names broken files
        if isinstance(data, dict) and data.get("schema") in _SCHEMAS:
            data["_path"] = str(path)
            found.append(data)
    return sorted(found, key=lambda result: result["created"])


def _latest(items: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    latest = {}
    for item in items:
        latest[(item["model"]["variant"], item["threads"])] = item
    return latest


def _rate(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def _decode(item: dict[str, Any]) -> float | None:
    value = item.get("decode_tokens_per_second")
    return value["median"] if isinstance(value, dict) else value


def _prefill(item: dict[str, Any], length: str) -> float | None:
    value = (item.get("prefill_tokens_per_second") or {}).get(length)
    return value["median"] if isinstance(value, dict) else value


def generation_section(
    items: list[dict[str, Any]], *, out: pathlib.Path, host: str, model: str, plot: bool = True
) -> str:
    """The markdown for one machine and model (and its plot beside `out`)."""
    latest = _latest([item for item in items if item["schema"] != litertlm_bench.SCHEMA])
    ours = {key: item for key, item in latest.items() if item["schema"] == generation_bench.SCHEMA}
    peers = {key: item for key, item in latest.items() if item["schema"] == generation_bench.BASELINE_SCHEMA}
    fidelity = _latest([item for item in items if item["schema"] == litertlm_bench.SCHEMA])
    if not ours and not peers and not fidelity:
        return ""
    lengths = sorted({length for item in ours.values() for length in item["prefill_tokens_per_second"]}, key=int)
    reference = {
        threads: _decode(item) for (variant, threads), item in peers.items() if variant == _LLAMA_CPP_REFERENCE
    }
    lines = [
        f"### Generation: {model}\n",
        "Prefill `pp<N>` and decode `tg<N>` in tokens per second (median of the repeats), as llama-bench "
        "counts them; decode runs on the shortest cache that holds the reply. Memory is the peak RSS over "
        "the model file plus its KV cache, and the same for the growth above the process's RSS before "
        "loading; efficiency is the memory-roofline bound of a decode step "
        "(its weights and cache over the measured bandwidth) over the measured step.\n",
        "| variant | size | threads | "
        + " | ".join(f"pp{n}" for n in lengths)
        + " | tg (context) | vs llama.cpp Q8_0 | TTFT | decode ms at fill | step / window | RSS / (file + cache) "
        "| roofline |",
        "| --- | ---: | ---: | "
        + " | ".join("---:" for _ in lengths)
        + " | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for (variant, threads), item in sorted(ours.items()):
        decode = _decode(item)
        versus = reference.get(threads)
        fills = ", ".join(f"{fill}: {ms:.1f}" for fill, ms in item["decode_ms_by_fill"].items())
        full_step = item["roofline"]["measured_ms"]
        window = item.get("window_forward_ms")
        held = item["file_bytes"] + item["cache_bytes"]
        rss = item["peak_rss_bytes"] / held
        # Above the process's own footprint before the model was loaded (Python, numpy, the runtime's code).
        above = (item["peak_rss_bytes"] - item.get("baseline_rss_bytes", 0)) / held
        lines.append(
            f"| {variant} | {item['file_bytes'] / 2**20:.1f} MiB | {threads} | "
            + " | ".join(_rate(_prefill(item, n)) for n in lengths)
            + f" | {_rate(decode)} ({item['decode_context']}) | "
            + ("–" if not versus else f"{decode / versus:.2f}x")
            + f" | {item['time_to_first_token_ms']['median']:.1f} ms | {fills} | "
            + ("–" if not window or not full_step else f"{full_step / window:.3f}")
            + f" | {rss:.2f}x ({above:.2f}x above start) | {100 * item['roofline']['efficiency']:.0f} % |"
        )
    if not ours:
        lines = lines[:1]  # no model of ours measured: the peers' and LiteRT-LM's tables only
    baseline_rows = []
    for (variant, threads), item in sorted(ours.items()):
        if item.get("window_forward_ms"):
            baseline_rows.append(
                f"| window recompute ({variant}) | {threads} | – | {1000 / item['window_forward_ms']:.1f} "
                "| one full-window forward per token, the fixed-window model of the same mode |"
            )
    for (variant, threads), item in sorted(peers.items()):
        prefill = ", ".join(f"pp{n} {v:.0f}" for n, v in (item.get("prefill_tokens_per_second") or {}).items())
        baseline_rows.append(f"| {variant} | {threads} | {prefill or '–'} | {_rate(_decode(item))} | {item['note']} |")
    if baseline_rows:
        lines += [
            "",
            "Baselines and peers, same machine and run:",
            "",
            "| baseline | threads | prefill tok/s | decode tok/s | how |",
            "| --- | ---: | --- | ---: | --- |",
            *baseline_rows,
        ]
    if fidelity:
        lines += ["", *_fidelity_table(fidelity)]
    text = "\n".join(lines) + "\n"
    if plot and ours:
        image = out.with_name(f"{model}_{host}_generation.png")
        if _plot(ours, peers, image, title=f"{model} on {host}"):
            text += f"\n![{model} decode tokens per second against size]({image.name})\n"
    return text


def _plot(ours, peers, path: pathlib.Path, *, title: str) -> bool:
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel

        matplotlib.use("Agg")
        from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
    except ImportError:
        return False
    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    by_threads = collections.defaultdict(list)
    for (variant, threads), item in ours.items():
        by_threads[threads].append((item["file_bytes"] / 2**20, _decode(item), variant))
    for (variant, threads), item in peers.items():
        size = item["model"].get("size_bytes")
        if size and _decode(item):
            by_threads[threads].append((size / 2**20, _decode(item), variant))
    for threads, points in sorted(by_threads.items()):
        axes.scatter([p[0] for p in points], [p[1] for p in points], label=f"{threads} thread(s)", s=40)
        for size, rate, variant in points:
            axes.annotate(variant, (size, rate), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel("file size [MiB]")
    axes.set_ylabel("decode tokens per second")
    axes.set_title(f"decode speed against size: {title}")
    axes.grid(alpha=0.3)
    axes.legend()
    plots.save_figure(figure, path)
    return True


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def device_generation_table(device_items: list[dict[str, Any]], host_items: list[dict[str, Any]]) -> str:
    """The latest device sweep: median, fastest and slowest repeat per mode and threads, beside the host."""
    on_device = [i for i in device_items if i.get("device") and i["schema"] == generation_bench.SCHEMA]
    if not on_device:
        return ""
    sweep = max(on_device, key=lambda i: i["created"])["device"]["sweep"]["id"]
    runs = collections.defaultdict(list)
    for item in on_device:
        if item["device"]["sweep"]["id"] == sweep:
            runs[(item["model"]["variant"], item["threads"])].append(item)
    host = {
        key: item
        for key, item in _latest([i for i in host_items if i["schema"] == generation_bench.SCHEMA]).items()
        if not item.get("device")
    }
    lengths = sorted({n for items in runs.values() for i in items for n in i["prefill_tokens_per_second"]}, key=int)
    lines = [
        f"Device sweep {sweep}, tokens per second (median of the repeats, fastest–slowest), beside the host:\n",
        "| variant | threads | repeats | tg (context) | "
        + " | ".join(f"pp{n}" for n in lengths)
        + " | TTFT | host tg | device / host |",
        "| --- | ---: | ---: | --- | " + " | ".join("---" for _ in lengths) + " | ---: | ---: | ---: |",
    ]

    def spread(values: list[float]) -> str:
        return f"{_median(values):.1f} ({min(values):.1f}–{max(values):.1f})"

    for (variant, threads), items in sorted(runs.items()):
        decode = [_decode(i) for i in items]
        prefill = [
            spread([_prefill(i, n) for i in items]) if all(_prefill(i, n) for i in items) else "–" for n in lengths
        ]
        host_decode = _decode(host[(variant, threads)]) if (variant, threads) in host else None
        lines.append(
            f"| {variant} | {threads} | {len(items)} | {spread(decode)} ({items[0]['decode_context']}) | "
            + " | ".join(prefill)
            + f" | {_median([i['time_to_first_token_ms']['median'] for i in items]):.1f} ms | {_rate(host_decode)} | "
            + ("–" if not host_decode else f"{_median(decode) / host_decode:.2f}x")
            + " |"
        )
    return "\n".join(lines) + "\n"


def _fidelity_table(fidelity: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    rows = [
        f"LiteRT-LM's own benchmark (`litert_lm.Benchmark`) on each `.litertlm` bundle, and the harness on the model "
        f"inside it with the same signatures (context of `decode`), prompt and decode lengths, runs alternating; "
        f"the harness's decode speed should be within {100 * litertlm_bench.AGREEMENT:.0f} % of LiteRT-LM's:",
        "",
        "| bundle | threads | context | LiteRT-LM pp / tg | harness pp / tg | harness / LiteRT-LM tg | pp |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (variant, threads), item in sorted(fidelity.items()):
        speeds = [
            f"{run['prefill_tokens_per_second']['median']:.0f} / {run['decode_tokens_per_second']['median']:.1f}"
            for run in (item["litert_lm"], item["harness"])
        ]
        outside = "" if item["decode_within"] else " (outside)"
        rows.append(
            f"| {variant} | {threads} | {item['model']['context']} | {speeds[0]} | {speeds[1]} | "
            f"{item['decode_ratio']:.2f}{outside} | {item['prefill_ratio']:.2f} |"
        )
    return rows


def generation_sections(results: list[dict[str, Any]], *, out: pathlib.Path, plot: bool = True) -> list[str]:
    """One section per machine and model; a device's also compares with the host's results of that model."""
    grouped = collections.defaultdict(list)
    for item in results:
        grouped[(item["machine"]["hostname"], item["model"]["name"])].append(item)
    sections = []
    for (host, model), items in sorted(grouped.items()):
        section = generation_section(items, out=out, host=host or "machine", model=model, plot=plot)
        if any(i.get("device") for i in items):
            others = [i for (h, m), group in grouped.items() if m == model and h != host for i in group]
            title = f"### Generation: {model}\n"
            section = section.replace(title, f"### Generation: {model} on {host} (bench pack)\n", 1)
            section += "\n" + device_generation_table(items, others)
        sections.append(section)
    return sections
