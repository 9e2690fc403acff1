"""Recipe: one frozen value per conversion, round-tripping through JSON and rebuilding a model from its report."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

import converter
from converter.core import recipe as recipe_lib

from helpers import SEQ_LEN, random_windows, tiny_gpt2_causal_lm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_mode_states_its_defaults_explicitly():
    int8 = converter.Recipe("int8")
    assert (
        int8.keep_float,
        int8.measured_ranges,
        int8.bound_mask_fill,
        int8.float_residual_stream,
        int8.symmetric_matmul,
    ) == (("SOFTMAX",), True, True, True, True)
    int16x8 = converter.Recipe("int16x8")
    assert int16x8.keep_float == () and int16x8.measured_ranges and not int16x8.symmetric_matmul
    for mode in ("fp32", "fp16", "dynamic"):
        plain = converter.Recipe(mode)
        assert plain.keep_float == () and not any(
            (plain.measured_ranges, plain.bound_mask_fill, plain.float_residual_stream, plain.symmetric_matmul)
        )
    assert int8.calibration == converter.CalibrationSettings(num_samples=64, seed=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        int8.mode = converter.Mode.FP32


def test_a_step_that_does_not_apply_to_the_mode_is_refused_naming_step_and_reason():
    with pytest.raises(ValueError, match=r"step 'keep_float'.*does not apply to mode dynamic: it has no quantized"):
        converter.Recipe("dynamic", keep_float="attention")
    with pytest.raises(ValueError, match=r"step 'symmetric_matmul'.*does not apply to mode int16x8"):
        converter.Recipe("int16x8", symmetric_matmul=True)
    with pytest.raises(ValueError, match="step 'measured_ranges'.*mode fp16"):
        converter.Recipe("fp16", measured_ranges=True)
    with pytest.raises(ValueError, match="Unknown float choice 'nope'"):
        converter.Recipe("int8", keep_float=("nope",))
    with pytest.raises(ValueError, match="Unknown mode 'int3'"):
        converter.Recipe("int3")
    with pytest.raises(ValueError, match="num_calibration_samples must be at least 1"):
        converter.Recipe("int8", calibration=converter.CalibrationSettings(num_samples=0))


def test_json_round_trip_and_save_refuses_to_overwrite(tmp_path):
    recipe = converter.Recipe(
        "int8",
        keep_float="attention,mlp_down",
        measured_ranges=False,
        calibration=converter.CalibrationSettings(num_samples=16, seed=3),
    )
    assert converter.Recipe.from_dict(json.loads(recipe.to_json())) == recipe
    path = recipe.save(tmp_path / "r.json")
    assert converter.Recipe.load(path) == recipe
    assert json.loads(path.read_text())["name"] == "int8+attention+mlp_down"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        recipe.save(path)
    recipe.save(path, overwrite=True)
    with pytest.raises(ValueError, match=r"Unknown recipe field\(s\) \['keep_floats'\]; a recipe has"):
        converter.Recipe.from_dict({"mode": "int8", "keep_floats": []})
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a recipe object"):
        converter.Recipe.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="No recipe at"):
        converter.Recipe.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "name",
    [
        "fp16",
        "dynamic",
        "int8",
        "int8-strict",
        "int8+attention+mlp",
        "int16x8+logits",
        "int4",
        "int4-b32",
        "int4-b64-rtn",
        "int4-b32+attention+logits",
    ],
)
def test_names_parse_back_to_the_same_recipe(name):
    recipe = converter.Recipe.parse(name)
    assert recipe.name == name and converter.Recipe.parse(recipe.name) == recipe


def test_switches_and_a_recipe_together_are_refused():
    recipe = converter.Recipe("int8")
    with pytest.raises(ValueError, match="either a recipe or keep_float, not both"):
        recipe_lib.resolve_recipe(None, recipe, keep_float="attention")
    with pytest.raises(ValueError, match="Mode fp16 disagrees with the recipe's mode int8"):
        recipe_lib.resolve_recipe("fp16", recipe)
    with pytest.raises(ValueError, match="Pass a mode"):
        recipe_lib.resolve_recipe(None, None)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny GPT-2 converted int8 with a recipe that differs from the defaults, saved with its report."""
    folder = tmp_path_factory.mktemp("recipe")
    model, windows = tiny_gpt2_causal_lm(), random_windows()
    recipe = converter.Recipe(
        "int8", keep_float="attention", symmetric_matmul=False, calibration=converter.CalibrationSettings(num_samples=8)
    )
    path = folder / "tiny_int8.tflite"
    result = converter.convert_keras(
        model, recipe=recipe, calibration=windows, seq_len=SEQ_LEN, output_path=path, progress=False
    )
    return {"model": model, "windows": windows, "recipe": recipe, "result": result, "path": path}


def test_the_report_records_the_recipe_and_rebuilds_the_same_model(converted, tmp_path):
    report = converted["path"].with_suffix(".json")
    assert json.loads(report.read_text())["recipe"] == converted["recipe"].to_dict()
    rebuilt_recipe = converter.Recipe.load(report)
    assert rebuilt_recipe == converted["recipe"]
    again = converter.convert_keras(
        converted["model"], recipe=report, calibration=converted["windows"], seq_len=SEQ_LEN, progress=False
    )
    assert again.model == converted["result"].model
    # The defaults give another model: the recipe is what made this one.
    default = converter.convert_keras(
        converted["model"],
        "int8",
        num_calibration_samples=8,
        calibration=converted["windows"],
        seq_len=SEQ_LEN,
        progress=False,
    )
    assert default.model != converted["result"].model
    assert converter.ConversionResult.load(converted["path"]).recipe == converted["recipe"].to_dict()


def test_a_report_of_an_uncalibrated_mode_rebuilds_too(tmp_path):
    result = converter.convert_keras(
        tiny_gpt2_causal_lm(), "fp16", seq_len=SEQ_LEN, progress=False, output_path=tmp_path / "m_fp16.tflite"
    )
    assert converter.Recipe.load(tmp_path / "m_fp16.json") == converter.Recipe("fp16")
    assert result.recipe["mode"] == "fp16"


def _cli(*arguments):
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "converter", *arguments], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )


def test_cli_takes_a_recipe_file_and_refuses_it_beside_a_switch(converted, tmp_path):
    recipe_path = converted["recipe"].save(tmp_path / "recipe.json")
    completed = _cli(f"--recipe={recipe_path}", "--keep_float=mlp", f"--build_dir={tmp_path}")
    assert completed.returncode == 2 and "either a recipe or keep_float" in completed.stderr
    completed = _cli(f"--recipe={recipe_path}", "--mode=fp16", f"--build_dir={tmp_path}")
    assert completed.returncode == 2 and "disagrees with the recipe's mode int8" in completed.stderr
    completed = _cli(f"--build_dir={tmp_path}")
    assert completed.returncode != 0 and "Pass --mode" in completed.stderr
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".json"]
