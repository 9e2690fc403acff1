"""The report: ratios against fp32 TFLite and the peers, latest result wins, plots are PNGs."""

import pytest

from benchmarks import report, results
from benchmarks.accuracy import AccuracyResult
from benchmarks.machine import MachineInfo
from benchmarks.runtimes import RuntimeInfo
from benchmarks.timing import LatencyStats

MACHINE = MachineInfo(
    hostname="bench-host",
    cpu="Test CPU",
    architecture="x86_64",
    logical_cores=2,
    usable_cores=2,
    os="Linux",
    python="3.11.7",
)


def _result(
    variant, threads, median, size, *, perplexity=None, created="2026-11-25T10:00:00+00:00", runtime="ai-edge-litert"
):
    accuracy = None
    if perplexity is not None:
        accuracy = AccuracyResult(
            windows=4,
            positions=400,
            perplexity=perplexity,
            next_token_accuracy=0.3,
            reference_perplexity=10.0,
            top1_agreement=0.95,
            mean_kl=0.01,
            max_kl=0.2,
        )
    return results.BenchmarkResult(
        machine=MACHINE,
        runtime=RuntimeInfo(runtime, "1.0"),
        model=results.ModelInfo(
            name="lm",
            variant=variant,
            path=f"lm_{variant}",
            format="tflite",
            sha256="0" * 64,
            size_bytes=size,
            seq_len=128,
            vocabulary_size=4096,
        ),
        settings={"threads": threads},
        latency=LatencyStats(
            init_ms=5,
            first_ms=9,
            warmup_runs=5,
            runs=50,
            min_ms=median * 0.9,
            median_ms=median,
            p90_ms=median * 1.1,
            max_ms=median * 1.5,
            mean_ms=median,
            std_ms=0.1,
        ),
        memory=results.MemoryStats(
            baseline_rss_bytes=50 * 2**20, peak_rss_bytes=100 * 2**20, peak_covers_load_only=True
        ),
        accuracy=accuracy,
        created=created,
    )


@pytest.fixture
def results_dir(tmp_path):
    folder = tmp_path / "results"
    entries = [
        _result("fp32", 1, 10.0, 16 * 2**20, perplexity=10.0),
        _result("fp32", 2, 6.0, 16 * 2**20),
        _result("dynamic", 1, 2.5, 4 * 2**20, perplexity=10.2),
        _result("dynamic", 2, 2.0, 4 * 2**20),
        # An older dynamic 2-thread result that the newer one replaces.
        _result("dynamic", 2, 99.0, 4 * 2**20, created="2026-11-24T10:00:00+00:00"),
        _result("onnx-dynamic", 1, 5.0, 4 * 2**20, perplexity=10.1, runtime="onnxruntime"),
        _result("onnx-dynamic", 2, 4.0, 4 * 2**20, runtime="onnxruntime"),
        _result("keras", 1, 12.0, 16 * 2**20, perplexity=10.0, runtime="tensorflow"),
    ]
    for entry in entries:
        entry.save(folder)
    return folder


def test_table_shows_ratios_to_fp32_and_accuracy(results_dir, tmp_path):
    text = report.render_report(results.load_results(results_dir), out=tmp_path / "report.md")
    assert "## lm on bench-host" in text and "Test CPU" in text
    dynamic_row = next(line for line in text.splitlines() if line.startswith("| `dynamic`"))
    assert "4.00 MiB | 0.25x | 2.50 ms (0.25x) | 2.00 ms (0.33x)" in dynamic_row
    assert "10.200 | +2.00 % | 95.0 % | 0.0100" in dynamic_row
    assert "99.00" not in text  # the older result was replaced
    assert text.index("| `keras`") < text.index("| `fp32`") < text.index("| `dynamic`") < text.index("| `onnx-dynamic`")


def test_peers_and_targets_are_stated_with_their_figures(results_dir, tmp_path):
    text = report.render_report(results.load_results(results_dir), out=tmp_path / "report.md")
    assert "| `dynamic` | `onnx-dynamic` | 1 | 2.50 ms | 5.00 ms | 2.00x |" in text
    assert "| `fp32` | `keras` | 1 | 10.00 ms | 12.00 ms | 1.20x |" in text
    assert "dynamic int8 / fp32 TFLite latency at 1 thread(s): 0.25x (target ≤ 0.35x: met)" in text
    assert "dynamic int8 / fp32 TFLite latency at 2 thread(s): 0.33x (target ≤ 0.35x: met)" in text


def test_plot_is_a_png_beside_the_report(results_dir, tmp_path):
    out = tmp_path / "report.md"
    text = report.render_report(results.load_results(results_dir), out=out)
    image = tmp_path / "lm_bench-host.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"![lm latency and size]({image.name})" in text
    assert out.read_text() == text


def test_no_results_is_an_error_that_says_what_to_run(tmp_path):
    with pytest.raises(ValueError, match="make bench"):
        report.render_report([], out=tmp_path / "report.md")
