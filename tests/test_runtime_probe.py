"""The probe behind the support table: faithful single-op cuts, edited op codes, the stored table."""

from __future__ import annotations

import collections
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from ai_edge_litert import interpreter as litert

import converter
from converter.compat import runtime_support
from converter.tflite_file import inspection
from converter.tools import probe_models, runtime_probe

from helpers import SEQ_LEN, random_windows, tiny_gpt2_causal_lm

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp("probe")
    model = tiny_gpt2_causal_lm()
    paths = {}
    for mode in ("fp16", "int8"):
        paths[mode] = folder / f"tiny_{mode}.tflite"
        converter.convert_keras(
            model,
            mode,
            calibration=random_windows(num_windows=8),
            seq_len=SEQ_LEN,
            output_path=paths[mode],
            progress=False,
        )
    return paths


def _run(model: bytes, inputs: dict[str, np.ndarray], *, delegates: bool) -> list[np.ndarray]:
    resolver = litert.OpResolverType.AUTO if delegates else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = litert.Interpreter(model_content=model, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    for position, detail in enumerate(interpreter.get_input_details()):
        interpreter.set_tensor(detail["index"], inputs[str(position)])
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


@pytest.mark.parametrize("mode", ["fp16", "int8"])
def test_single_op_probes_compute_exactly_what_the_op_computed_in_the_whole_model(converted, mode):
    probes = probe_models.single_op_probes(converted[mode])
    signatures = runtime_support.op_signatures(inspection.inspect_model(converted[mode]))
    assert sorted(p.signature.key for p in probes) == sorted(s.key for s in signatures)
    for probe in probes:
        graph = inspection.inspect_model(probe.model)
        assert [(op.op, op.version) for op in graph.ops] == [(probe.signature.op, probe.signature.version)]
        # Same kernels as the capture (no delegate): bit for bit the same result.
        for got, expected in zip(_run(probe.model, probe.inputs, delegates=False), probe.expected_outputs, strict=True):
            np.testing.assert_array_equal(got, expected, err_msg=probe.signature.key)
        _run(probe.model, probe.inputs, delegates=True)  # and it runs as the probe loads it


def test_an_op_on_constants_alone_gets_its_input_fed(converted):
    dequantize = next(
        p
        for p in probe_models.single_op_probes(converted["fp16"])
        if p.signature.key == "DEQUANTIZE/v3 float16 -> float32"
    )
    assert list(dequantize.inputs) == ["0"] and dequantize.inputs["0"].dtype == np.float16


def test_edited_op_codes_are_refused_as_the_runtime_refuses_them(converted):
    probe = next(p for p in probe_models.single_op_probes(converted["fp16"]) if p.signature.op == "ADD")
    with pytest.raises((ValueError, RuntimeError), match="Didn't find op for builtin opcode 'ADD' version '99'"):
        _run(probe_models.with_op_version(probe.model, 99), probe.inputs, delegates=True)
    with pytest.raises((ValueError, RuntimeError), match="Select TensorFlow op"):
        _run(probe_models.as_custom_op(probe.model, "FlexAddV2"), probe.inputs, delegates=True)
    with pytest.raises((ValueError, RuntimeError), match="unresolved custom op: KerasLmLitertProbeOp"):
        _run(probe_models.as_custom_op(probe.model, probe_models.PROBE_CUSTOM_OP), probe.inputs, delegates=True)


def test_stored_table_says_where_it_came_from_and_is_current():
    table = runtime_support.load_table()
    data = json.loads(runtime_support.TABLE_PATH.read_text())
    assert table.generated_by.startswith("python -m converter.cli.runtime_probe")
    assert "single-op model" in table.method and table.created[:4].isdigit()
    labels = [r.label for r in table.runtimes]
    assert "tflite-runtime 2.14.0" in labels and "ai-edge-litert 2.3.0" in labels
    assert all(r.environment["version"] == r.version for r in table.runtimes)
    # Probed with the converter this project pins: its op signatures are the ones in the table.
    assert table.converter_versions["tensorflow"] == importlib.metadata.version("tensorflow")
    assert set(data["probe_models"]["configs"]) == set(probe_models.PROBE_CONFIGS)
    assert data["probe_models"]["modes"] == list(probe_models.PROBED_MODES)
    # Every mode but int4, which is not probed yet (probe_models.PROBED_MODES says why).
    assert set(converter.MODE_NAMES) - set(probe_models.PROBED_MODES) == {"int4"}


def test_stored_table_whole_models_agree_with_their_op_signatures():
    data = json.loads(runtime_support.TABLE_PATH.read_text())
    signatures_of = collections.defaultdict(list)
    for key, seen in data["signatures_seen_in"].items():
        for where in seen:
            signatures_of[where].append(key)
    for entry in data["runtimes"]:
        for config, by_mode in entry["modes"].items():
            for mode, outcome in by_mode.items():
                parts = all(entry["op_signatures"][key]["loads"] for key in signatures_of[f"{config}/{mode}"])
                assert outcome["loads"] == parts, (entry["name"], entry["version"], config, mode)


def test_inconsistent_verdicts_are_caught():
    plan = {"whole": {"m": {"architecture": "gpt2", "mode": "fp32", "signatures": ["A/v1 float32 -> float32"]}}}
    entry = {
        "name": "rt",
        "version": "1.0.0",
        "modes": {"gpt2": {"fp32": {"loads": True}}},
        "op_signatures": {"A/v1 float32 -> float32": {"loads": False, "error": "no"}},
    }
    assert runtime_probe.inconsistencies(entry, plan) == [
        "rt 1.0.0: the gpt2 fp32 model loads but its op signatures say it should not"
    ]


def _probe_cli(*arguments):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "converter.cli.runtime_probe", *arguments],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.large
def test_probe_cli_writes_a_table_for_the_runtimes_asked_for(tmp_path):
    out = tmp_path / "support.json"
    completed = _probe_cli(
        "--runtimes=ai-edge-litert==2.3.0",
        "--probe_models=gpt2-fresh",
        "--modes=fp32,dynamic",
        f"--out={out}",
        f"--work_dir={tmp_path / 'work'}",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    table = runtime_support.load_table(out)
    assert [r.label for r in table.runtimes] == ["ai-edge-litert 2.3.0"]
    assert table.runtimes[0].modes == {"gpt2-fresh": {"fp32": {"loads": True}, "dynamic": {"loads": True}}}
    assert "FULLY_CONNECTED/v12 float32,int8,- -> float32" in table.runtimes[0].op_signatures
    assert table.runtimes[0].registered_versions["FULLY_CONNECTED"]["registered"][-1] >= 12
    assert "--probe_models=gpt2-fresh --modes=fp32,dynamic" in table.generated_by
    dry = subprocess.run(
        ["make", "-n", "runtime-probe", "RUNTIMES=tflite-runtime==2.14.0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "-m converter.cli.runtime_probe" in dry.stdout and "--runtimes=tflite-runtime==2.14.0" in dry.stdout


@pytest.mark.parametrize(
    "runtime, message",
    [
        ("onnxruntime==1.32.0", "Unknown runtime 'onnxruntime'"),
        ("tflite-runtime==2.14", "Name an exact release to install, e.g. tflite-runtime==2.14.0"),
    ],
)
def test_probe_cli_refuses_runtimes_it_cannot_install(tmp_path, runtime, message):
    completed = _probe_cli(f"--runtimes={runtime}", f"--out={tmp_path / 'x.json'}")
    assert completed.returncode == 2 and message in completed.stderr
    assert not (tmp_path / "x.json").exists()
