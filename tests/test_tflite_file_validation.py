"""Broken model files are refused with a clear error before any runtime sees them."""

import hashlib

import pytest

from benchmarks import runtimes
from converter.common import files
from converter.tflite_file import validation as model_file


def test_a_whole_model_passes_and_its_sha256_is_the_files(converted_tiny_lm):
    path = converted_tiny_lm["fp32"]
    assert model_file.check_model_file(path) == path
    assert files.sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_file_names_the_path_and_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model at .*make convert"):
        model_file.check_model_file(tmp_path / "absent.tflite")


def test_empty_file_and_folder_are_refused(tmp_path):
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(model_file.ModelFileError, match="is empty"):
        model_file.check_model_file(empty)
    with pytest.raises(model_file.ModelFileError, match="is a folder"):
        model_file.check_model_file(tmp_path)


def test_a_file_that_is_not_tflite_is_refused(tmp_path):
    text = tmp_path / "notes.tflite"
    text.write_text("this is not a flatbuffer at all")
    with pytest.raises(model_file.ModelFileError, match="identifier 'TFL3' is missing"):
        model_file.check_model_file(text)


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.05])
def test_truncated_models_are_refused_by_the_check_and_by_open_runner(converted_tiny_lm, tmp_path, keep):
    data = converted_tiny_lm["dynamic"].read_bytes()
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(model_file.ModelFileError, match="truncated or corrupt"):
        model_file.check_model_file(truncated)
    with pytest.raises(model_file.ModelFileError):
        runtimes.open_runner(truncated)
