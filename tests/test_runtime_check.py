"""The compatibility preflight against the runtimes themselves, and the conversion's target runtime.

The preflight only reads the flatbuffer and the probe table; these tests load
the same models in tflite-runtime 2.14.0 (in its own venv with numpy < 2,
created under build/venvs on first use), ai-edge-litert 2.0.3 (likewise) and
ai-edge-litert 2.3.0 (this venv), and require the verdicts to agree.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import converter
from converter.compat import check, runtime_support
from converter.tflite_file import inspection
from converter.tools import probe_models, runtime_envs

from helpers import SEQ_LEN, random_windows, tiny_gpt2_causal_lm

REPO = pathlib.Path(__file__).resolve().parents[1]
VENVS = REPO / "build" / "venvs"
# The modes the stored support table covers (int4 is not probed yet: probe_models.PROBED_MODES says why).
MODES = list(probe_models.PROBED_MODES)
CHECKED_RUNTIMES = ("tflite-runtime==2.14.0", "ai-edge-litert==2.0.3", "ai-edge-litert==2.3.0")


def _tiny_llama():
    """A Llama unlike the probe's (2 layers, hidden 64, one KV head), weights perturbed like trained ones."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(1)
    backbone = keras_hub.models.LlamaBackbone(
        vocabulary_size=512,
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=1,
        hidden_dim=64,
        intermediate_dim=128,
        tie_word_embeddings=False,
    )
    model = keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)
    rng = np.random.default_rng(1)
    for variable in model.weights:
        value = np.asarray(variable.numpy())
        variable.assign(value + rng.normal(0, 0.05, value.shape).astype(value.dtype))
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, pathlib.Path]:
    """A GPT-2 (fresh, zero biases) and a Llama, each converted in every mode: `<arch>_<mode>` -> path."""
    folder = tmp_path_factory.mktemp("check")
    windows = random_windows(num_windows=8)
    paths = {}
    for architecture, model in (("gpt2", tiny_gpt2_causal_lm()), ("llama", _tiny_llama())):
        for mode in MODES:
            path = folder / f"{architecture}_{mode}.tflite"
            converter.convert_keras(model, mode, calibration=windows, seq_len=SEQ_LEN, output_path=path, progress=False)
            paths[f"{architecture}_{mode}"] = path
    return paths


@pytest.fixture(scope="module")
def actual(models, tmp_path_factory) -> dict[str, dict[str, runtime_envs.LoadOutcome]]:
    """Runtime label -> model key -> what that runtime did with the model (load, allocate, invoke)."""
    work = tmp_path_factory.mktemp("loads")
    jobs = []
    for key, path in models.items():
        inputs = work / f"{key}.npz"
        np.savez(inputs, **probe_models.model_inputs(path))
        jobs.append({"id": key, "model": str(path), "inputs": str(inputs)})
    outcomes = {}
    for spec in CHECKED_RUNTIMES:
        release = runtime_envs.release(spec)
        python = runtime_envs.runtime_python(release, venvs_dir=VENVS)
        environment, outcomes[release.label] = runtime_envs.load_models(python, release, jobs, work_dir=work)
        assert environment["version"] == release.version
    return outcomes


@pytest.mark.large
@pytest.mark.parametrize("spec", CHECKED_RUNTIMES)
def test_preflight_verdicts_agree_with_loading_in_the_runtime(models, actual, spec):
    release = runtime_envs.release(spec)
    for key, path in models.items():
        verdict = check.check_model(path, runtimes=[spec]).verdicts[0]
        outcome = actual[release.label][key]
        assert verdict.verdict is not check.Verdict.UNKNOWN, (key, verdict.findings)  # the probe covers our ops
        assert (verdict.verdict is check.Verdict.LOADS) == outcome.loads, (key, verdict.findings, outcome)


@pytest.mark.large
def test_tflite_runtime_2_14_refuses_dynamic_and_int16x8_and_loads_the_rest(models, actual):
    # The measured facts behind the table, stated plainly.
    loads = {key: outcome.loads for key, outcome in actual["tflite-runtime 2.14.0"].items()}
    assert loads == {f"{a}_{m}": m in ("fp32", "fp16", "int8") for a in ("gpt2", "llama") for m in MODES}
    assert "FULLY_CONNECTED' version '12'" in actual["tflite-runtime 2.14.0"]["gpt2_dynamic"].error
    # The norms' RSQRT runs in float (float_residual_stream); the first int16 kernel 2.14 refuses is then FC's.
    error = actual["tflite-runtime 2.14.0"]["gpt2_int16x8"].error
    assert "fully_connected.cc" in error and "INT16 != FLOAT32" in error
    assert all(outcome.loads for outcome in actual["ai-edge-litert 2.3.0"].values())


def test_dynamic_refusal_names_the_op_and_version(models):
    verdict = check.check_model(models["gpt2_dynamic"], runtimes=["tflite-runtime==2.14"]).verdicts[0]
    assert verdict.verdict is check.Verdict.REFUSES
    assert (verdict.findings[0].op, verdict.findings[0].version) == ("FULLY_CONNECTED", 12)
    assert "FULLY_CONNECTED version 12" in verdict.findings[0].reason


def test_min_runtime_version_metadata_alone_would_be_wrong(models):
    # The converter says 2.9.0 for int16x8, which tflite-runtime 2.14 cannot run.
    report = check.check_model(models["gpt2_int16x8"], runtimes=["tflite-runtime==2.14"])
    assert report.min_runtime_version == "2.9.0"
    assert report.verdicts[0].verdict is check.Verdict.REFUSES
    reasons = "\n".join(f.reason for f in report.verdicts[0].findings)
    assert (
        "FULLY_CONNECTED version 5 (int16,int16,- -> int16) is registered but its kernel refuses these tensors"
        in reasons
    )


def _edited(path: pathlib.Path, out: pathlib.Path, edit) -> pathlib.Path:
    import flatbuffers

    model = inspection.load_model_object(path.read_bytes())
    edit(model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out.write_bytes(bytes(builder.Output()))
    return out


def _set_version(op: str, version: int):
    from ai_edge_litert import schema_py_generated as schema

    code = getattr(schema.BuiltinOperator, op)

    def edit(model):
        for entry in model.operatorCodes:
            if max(entry.builtinCode, entry.deprecatedBuiltinCode) == code:
                entry.version = version

    return edit


def test_unregistered_version_is_refused_and_unprobed_one_is_unknown(models, tmp_path):
    eleven = _edited(models["gpt2_fp32"], tmp_path / "fc11.tflite", _set_version("FULLY_CONNECTED", 11))
    verdict = check.check_model(eleven, runtimes=["tflite-runtime==2.14"]).verdicts[0]
    assert verdict.verdict is check.Verdict.REFUSES
    assert "FULLY_CONNECTED version 11 is not registered (it has versions 1-10)" in verdict.findings[0].reason
    release = runtime_envs.release("tflite-runtime==2.14.0")
    _, outcome = runtime_envs.load_models(
        runtime_envs.runtime_python(release, venvs_dir=VENVS),
        release,
        [{"id": "fc11", "model": str(eleven), "inputs": None}],
        work_dir=tmp_path,
    )
    assert not outcome["fc11"].loads and "'FULLY_CONNECTED' version '11'" in outcome["fc11"].error

    future = _edited(models["gpt2_fp32"], tmp_path / "fc99.tflite", _set_version("FULLY_CONNECTED", 99))
    verdict = check.check_model(future, runtimes=["ai-edge-litert==2.3.0"]).verdicts[0]
    assert verdict.verdict is check.Verdict.UNKNOWN
    assert verdict.findings[0].reason.endswith("unknown, not probed")


def test_flex_op_is_refused_by_every_probed_runtime(models, tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    def to_flex(model):
        for entry in model.operatorCodes:
            if max(entry.builtinCode, entry.deprecatedBuiltinCode) == schema.BuiltinOperator.ADD:
                entry.builtinCode = entry.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
                entry.customCode = b"FlexAddV2"
                entry.version = 1

    flex = _edited(models["gpt2_fp32"], tmp_path / "flex.tflite", to_flex)
    report = check.check_model(flex)
    assert report.flex_ops == ("FlexAddV2",)
    assert all(v.verdict is check.Verdict.REFUSES for v in report.verdicts)
    assert all("Flex ops (FlexAddV2) do not run" in v.findings[0].reason for v in report.verdicts)


def _cli(*arguments):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "converter.check", *arguments],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_exit_status_says_whether_every_runtime_loads_the_model(models):
    fine = _cli(str(models["gpt2_fp32"]), "--runtime", "tflite-runtime==2.14")  # the spelling
    assert fine.returncode == 0, fine.stderr
    assert "tflite-runtime 2.14.0: loads" in fine.stdout
    refused = _cli(str(models["gpt2_dynamic"]), "--runtime=tflite-runtime==2.14", "--runtime=ai-edge-litert")
    assert refused.returncode == 1
    assert "tflite-runtime 2.14.0: refuses" in refused.stdout and "FULLY_CONNECTED version 12" in refused.stdout
    assert "ai-edge-litert 2.3.0: loads" in refused.stdout and "ai-edge-litert 2.0.3: loads" in refused.stdout
    assert "modes whose probe models load there: fp32, fp16, int8" in refused.stdout
    as_json = json.loads(_cli(str(models["gpt2_int16x8"]), "--json").stdout)
    assert as_json[0]["verdicts"]["ai-edge-litert 2.0.3"]["verdict"] == "refuses"


def test_cli_bad_input_exits_2_with_one_error_line(tmp_path):
    missing = _cli(str(tmp_path / "none.tflite"))
    assert missing.returncode == 2 and "error: No TFLite model at" in missing.stderr
    (tmp_path / "text.tflite").write_text("not a model")
    wrong = _cli(str(tmp_path / "text.tflite"))
    assert wrong.returncode == 2 and "Not a TFLite model" in wrong.stderr
    unknown = _cli(str(tmp_path / "text.tflite"), "--runtime=tflite-runtime==2.13")
    assert unknown.returncode == 2
    assert "tflite-runtime==2.13 was never probed" in unknown.stderr and "make runtime-probe" in unknown.stderr
    nothing = _cli()
    assert nothing.returncode == 2 and "name at least one .tflite file" in nothing.stderr


def test_target_runtime_refuses_a_mode_it_cannot_load_before_writing(tmp_path):
    model = tiny_gpt2_causal_lm()
    out = tmp_path / "m_dynamic.tflite"
    with pytest.raises(check.IncompatibleModelError) as error:
        converter.convert_keras(
            model, "dynamic", seq_len=SEQ_LEN, output_path=out, target_runtime="tflite-runtime==2.14", progress=False
        )
    message = str(error.value)
    assert "tflite-runtime 2.14.0 cannot load this dynamic model: FULLY_CONNECTED version 12" in message
    assert "Convert with --mode=int8 or --mode=fp16" in message and "pip install ai-edge-litert==2.3.0" in message
    assert (error.value.op, error.value.version) == ("FULLY_CONNECTED", 12)
    assert not out.exists() and not out.with_suffix(".json").exists()

    fp16 = converter.convert_keras(
        model,
        "fp16",
        seq_len=SEQ_LEN,
        output_path=tmp_path / "m_fp16.tflite",
        target_runtime="tflite-runtime==2.14",
        progress=False,
    )
    report = json.loads(pathlib.Path(fp16.path).with_suffix(".json").read_text())
    assert report["compatibility"]["verdicts"]["tflite-runtime 2.14.0"] == "loads"


def test_target_runtime_never_probed_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="tflite-runtime==2.13 was never probed"):
        converter.convert_keras(
            "tiny-gpt2", "fp32", target_runtime="tflite-runtime==2.13", output_path=tmp_path / "m_fp32.tflite"
        )


def test_cli_target_runtime_refusal_exits_2_and_writes_nothing(tmp_path):
    import keras

    ids = keras.Input((None,), dtype="int32")
    plain = keras.Model(ids, keras.layers.Dense(2048)(keras.layers.Embedding(2048, 16)(ids)))
    plain.save(tmp_path / "plain.keras")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "converter",
            f"--model={tmp_path / 'plain.keras'}",
            "--mode=dynamic",
            "--seq_len=8",
            f"--build_dir={tmp_path / 'build'}",
            "--target_runtime=tflite-runtime==2.14",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "error: tflite-runtime 2.14.0 cannot load this dynamic model: FULLY_CONNECTED version 12" in completed.stderr
    assert not (tmp_path / "build" / "plain" / "plain_dynamic.tflite").exists()


def test_conversion_report_holds_every_probed_runtimes_verdict(models):
    report = json.loads(models["llama_int16x8"].with_suffix(".json").read_text())
    table = runtime_support.load_table()
    assert set(report["compatibility"]["verdicts"]) == {r.label for r in table.runtimes}
    assert report["compatibility"]["verdicts"]["ai-edge-litert 2.0.3"] == "refuses"
    assert report["compatibility"]["details"]["table"]["created"] == table.created
