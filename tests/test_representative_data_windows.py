"""Tests for representative_data.windows: cutting, splitting, saving and validating windows."""

import ast
import copy
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from representative_data import windows as windows_module
from representative_data.windows import (
    TokenWindows,
    load_windows,
    make_windows,
    save_windows,
    split_windows,
    validate_windows,
)


def _windows(num_windows=20, seq_len=4, metadata=None):
    stream = np.arange(num_windows * seq_len, dtype=np.int32)
    return make_windows(stream, seq_len=seq_len, metadata=metadata)


# --- TokenWindows -------------------------------------------------------------


def test_token_windows_reports_num_windows_and_seq_len():
    windows = _windows(num_windows=3, seq_len=5)

    assert windows.num_windows == 3
    assert windows.seq_len == 5


def test_token_windows_with_int64_ids_asks_for_int32():
    ids = np.zeros((2, 4), dtype=np.int64)

    with pytest.raises(ValueError, match=r"token_ids must have dtype int32; got int64"):
        TokenWindows(ids, np.ones((2, 4), dtype=np.int32))


def test_token_windows_with_1d_arrays_raises():
    with pytest.raises(ValueError, match=r"must be 2-D \[num_windows, seq_len\]"):
        TokenWindows(np.zeros(4, np.int32), np.ones(4, np.int32))


def test_token_windows_with_mismatched_shapes_raises():
    with pytest.raises(ValueError, match=r"shape \(2, 4\) and padding_mask shape \(2, 3\) differ"):
        TokenWindows(np.zeros((2, 4), np.int32), np.ones((2, 3), np.int32))


def test_token_windows_with_left_padding_raises():
    mask = np.array([[0, 1, 1, 1]], dtype=np.int32)

    with pytest.raises(ValueError, match="right-padded"):
        TokenWindows(np.zeros((1, 4), np.int32), mask)


def test_token_windows_with_mask_value_2_raises():
    mask = np.array([[1, 2, 0, 0]], dtype=np.int32)

    with pytest.raises(ValueError, match="only 0 .padding. and 1"):
        TokenWindows(np.zeros((1, 4), np.int32), mask)


def test_token_windows_with_non_json_metadata_raises():
    with pytest.raises(ValueError, match="JSON-serialisable"):
        _windows(metadata={"when": object()})


def test_token_windows_metadata_is_read_only():
    windows = _windows(metadata={"source": "x"})

    with pytest.raises(TypeError):
        windows.metadata["source"] = "y"  # type: ignore[index]


def test_token_windows_survive_pickle_and_deepcopy():
    windows = _windows(metadata={"source": "x"})

    for copied in (pickle.loads(pickle.dumps(windows)), copy.deepcopy(windows)):
        np.testing.assert_array_equal(copied.token_ids, windows.token_ids)
        assert dict(copied.metadata) == dict(windows.metadata)


# --- make_windows ---------------------------------------------------------------


def test_make_windows_cuts_consecutive_non_overlapping_windows():
    windows = make_windows(np.arange(8), seq_len=4)

    np.testing.assert_array_equal(windows.token_ids, [[0, 1, 2, 3], [4, 5, 6, 7]])
    np.testing.assert_array_equal(windows.padding_mask, np.ones((2, 4)))
    assert windows.token_ids.dtype == np.int32
    assert windows.metadata["padded_windows"] == 0
    assert windows.metadata["dropped_tokens"] == 0


def test_make_windows_keeps_final_partial_window_of_two_tokens_right_padded():
    windows = make_windows(np.arange(1, 7), seq_len=4)

    np.testing.assert_array_equal(windows.token_ids, [[1, 2, 3, 4], [5, 6, 0, 0]])
    np.testing.assert_array_equal(windows.padding_mask, [[1, 1, 1, 1], [1, 1, 0, 0]])
    assert windows.metadata["padded_windows"] == 1


def test_make_windows_drops_single_leftover_token():
    windows = make_windows(np.arange(1, 6), seq_len=4)

    np.testing.assert_array_equal(windows.token_ids, [[1, 2, 3, 4]])
    assert windows.metadata["dropped_tokens"] == 1
    assert windows.metadata["padded_windows"] == 0


def test_make_windows_stream_shorter_than_seq_len_gives_one_padded_window():
    windows = make_windows(np.array([7, 8, 9]), seq_len=8)

    assert windows.num_windows == 1
    assert windows.padding_mask.sum() == 3


def test_make_windows_records_facts_and_keeps_caller_metadata():
    windows = make_windows(np.arange(10), seq_len=4, metadata={"source": "builtin"})

    assert dict(windows.metadata) == {
        "source": "builtin",
        "seq_len": 4,
        "num_windows": 3,
        "num_tokens": 10,
        "padded_windows": 1,
        "dropped_tokens": 0,
    }


def test_make_windows_with_seq_len_1_raises():
    with pytest.raises(ValueError, match="seq_len must be at least 2; got 1"):
        make_windows(np.arange(10), seq_len=1)


def test_make_windows_with_one_token_says_corpus_too_small_for_seq_len():
    with pytest.raises(ValueError, match=r"corpus is too small for seq_len=16: it gave 1 token"):
        make_windows(np.array([5]), seq_len=16)


def test_make_windows_with_2d_stream_raises():
    with pytest.raises(ValueError, match="token_stream must be 1-D"):
        make_windows(np.zeros((2, 3), np.int32), seq_len=2)


def test_make_windows_with_float_stream_raises():
    with pytest.raises(ValueError, match="integer token ids; got dtype float64"):
        make_windows(np.array([1.0, 2.0, 3.0]), seq_len=2)


# --- split_windows --------------------------------------------------------------


def test_split_is_disjoint_and_covers_every_window():
    windows = _windows(num_windows=30)

    calibration, evaluation = split_windows(windows, evaluation_fraction=0.2, seed=3)

    calibration_rows = {tuple(row) for row in calibration.token_ids}
    evaluation_rows = {tuple(row) for row in evaluation.token_ids}
    assert calibration_rows.isdisjoint(evaluation_rows)
    assert len(calibration_rows | evaluation_rows) == 30
    assert evaluation.num_windows == 6
    assert calibration.num_windows == 24


def test_split_metadata_indices_point_at_the_source_rows():
    windows = _windows(num_windows=10)

    calibration, evaluation = split_windows(windows, seed=1)

    for split, name in ((calibration, "calibration"), (evaluation, "evaluation")):
        assert split.metadata["split"] == name
        assert split.metadata["seed"] == 1
        assert split.metadata["source_num_windows"] == 10
        assert split.metadata["num_windows"] == split.num_windows
        indices = split.metadata["window_indices"]
        np.testing.assert_array_equal(split.token_ids, windows.token_ids[indices])


def test_split_with_same_seed_is_deterministic():
    windows = _windows(num_windows=25)

    first = split_windows(windows, seed=7)
    second = split_windows(windows, seed=7)

    assert first[0].metadata["window_indices"] == second[0].metadata["window_indices"]
    assert first[1].metadata["window_indices"] == second[1].metadata["window_indices"]


def test_split_with_different_seed_changes_evaluation_set():
    windows = _windows(num_windows=50)

    _, evaluation_a = split_windows(windows, evaluation_fraction=0.2, seed=0)
    _, evaluation_b = split_windows(windows, evaluation_fraction=0.2, seed=1)

    assert set(evaluation_a.metadata["window_indices"]) != set(evaluation_b.metadata["window_indices"])


def test_split_caps_limit_each_set_and_keep_evaluation_independent_of_calibration_cap():
    windows = _windows(num_windows=40)

    _, uncapped_evaluation = split_windows(windows, evaluation_fraction=0.25)
    calibration, evaluation = split_windows(windows, evaluation_fraction=0.25, max_calibration=5, max_evaluation=3)

    assert calibration.num_windows == 5
    assert evaluation.num_windows == 3
    assert evaluation.metadata["window_indices"] == uncapped_evaluation.metadata["window_indices"][:3]


def test_split_of_two_windows_gives_one_each():
    calibration, evaluation = split_windows(_windows(num_windows=2), evaluation_fraction=0.01)

    assert (calibration.num_windows, evaluation.num_windows) == (1, 1)


def test_split_of_one_window_raises_with_advice():
    with pytest.raises(ValueError, match="need at least 2.*smaller seq_len"):
        split_windows(_windows(num_windows=1))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_with_fraction_outside_open_unit_interval_raises(fraction):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_windows(_windows(), evaluation_fraction=fraction)


def test_split_with_zero_cap_raises():
    with pytest.raises(ValueError, match="max_calibration must be at least 1; got 0"):
        split_windows(_windows(), max_calibration=0)


def test_split_of_an_already_split_set_raises():
    calibration, _ = split_windows(_windows())

    with pytest.raises(ValueError, match="already the 'calibration' split"):
        split_windows(calibration)


def test_check_window_options_rejects_bool_seq_len_before_any_data():
    with pytest.raises(TypeError, match="seq_len must be an int; got True"):
        windows_module.check_window_options(seq_len=True)


# --- save_windows / load_windows ------------------------------------------------


def test_save_then_load_round_trips_arrays_and_metadata(tmp_path):
    calibration, _ = split_windows(_windows(metadata={"source": "builtin"}), seed=2)

    path = save_windows(calibration, tmp_path / "calibration.npz")
    loaded = load_windows(path)

    np.testing.assert_array_equal(loaded.token_ids, calibration.token_ids)
    np.testing.assert_array_equal(loaded.padding_mask, calibration.padding_mask)
    assert loaded.token_ids.dtype == np.int32
    assert dict(loaded.metadata) == dict(calibration.metadata)


def test_saved_file_holds_documented_arrays_with_metadata_as_0d_unicode_json(tmp_path):
    path = save_windows(_windows(metadata={"source": "x"}), tmp_path / "w.npz")

    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["metadata", "padding_mask", "token_ids"]
        metadata = archive["metadata"]
    assert metadata.ndim == 0 and metadata.dtype.kind == "U"
    assert json.loads(metadata.item())["source"] == "x"


def test_save_creates_missing_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "w.npz"

    save_windows(_windows(), path)

    assert path.is_file()


def test_save_refuses_existing_file_without_overwrite(tmp_path):
    path = save_windows(_windows(num_windows=3), tmp_path / "w.npz")

    with pytest.raises(FileExistsError, match=r"overwrite=True \(--overwrite"):
        save_windows(_windows(num_windows=5), path)
    assert load_windows(path).num_windows == 3


def test_save_with_overwrite_replaces_file(tmp_path):
    path = save_windows(_windows(num_windows=3), tmp_path / "w.npz")

    save_windows(_windows(num_windows=5), path, overwrite=True)

    assert load_windows(path).num_windows == 5


def test_save_leaves_no_temporary_files(tmp_path):
    save_windows(_windows(), tmp_path / "w.npz")

    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


def test_failed_save_keeps_old_file_and_removes_temporary(tmp_path, monkeypatch):
    path = save_windows(_windows(num_windows=3), tmp_path / "w.npz")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(windows_module.np, "savez_compressed", fail)
    with pytest.raises(OSError, match="disk full"):
        save_windows(_windows(num_windows=5), path, overwrite=True)
    monkeypatch.undo()

    assert load_windows(path).num_windows == 3
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


def test_save_to_path_without_npz_suffix_raises(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.npz"):
        save_windows(_windows(), tmp_path / "w.npy")


def test_load_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.npz does not exist"):
        load_windows(tmp_path / "nothing.npz")


def test_load_non_npz_file_says_not_an_npz_archive(tmp_path):
    path = tmp_path / "text.npz"
    path.write_text("not a zip", encoding="utf-8")

    with pytest.raises(ValueError, match=r"is not an \.npz archive"):
        load_windows(path)


def test_load_npz_without_token_ids_names_what_it_has(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, ids=np.zeros((1, 4), np.int32), padding_mask=np.ones((1, 4), np.int32))

    with pytest.raises(ValueError, match=r"partial\.npz has no token_ids array \(it has: ids, padding_mask\)"):
        load_windows(path)


def test_load_npz_with_only_token_ids_reads_unpadded_windows_of_any_integer_dtype(tmp_path):
    path = tmp_path / "mine.npz"
    ids = np.arange(12, dtype=np.int64).reshape(3, 4)
    np.savez(path, token_ids=ids)

    windows = load_windows(path)

    assert windows.token_ids.dtype == np.int32 and np.array_equal(windows.token_ids, ids)
    assert np.array_equal(windows.padding_mask, np.ones((3, 4), np.int32))
    assert dict(windows.metadata) == {"source": str(path)}


def test_load_npz_with_wrong_dtype_names_file_and_problem(tmp_path):
    path = tmp_path / "float.npz"
    np.savez(path, token_ids=np.zeros((1, 4), np.float32), metadata=np.array("{}"))
    with pytest.raises(ValueError, match=r"float\.npz: token_ids must hold integer token ids; got dtype float32"):
        load_windows(path)
    too_large = tmp_path / "int64.npz"
    np.savez(too_large, token_ids=np.full((1, 4), 2**40, np.int64))
    with pytest.raises(ValueError, match=r"int64\.npz: token_ids holds ids that do not fit int32"):
        load_windows(too_large)


# --- validate_windows -----------------------------------------------------------


def test_validate_accepts_windows_that_fit():
    windows = _windows(num_windows=2, seq_len=4)  # ids 0..7

    assert validate_windows(windows, vocabulary_size=8, seq_len=4) is None


def test_validate_with_other_seq_len_says_both_numbers():
    with pytest.raises(ValueError, match="seq_len 4 but 128 is expected"):
        validate_windows(_windows(seq_len=4), seq_len=128)


def test_validate_with_id_beyond_vocabulary_names_id_window_and_tokenizer():
    windows = make_windows(
        np.array([1, 2, 3, 4, 5, 99, 7, 8]),
        seq_len=4,
        metadata={"tokenizer": "BytePairTokenizer", "vocabulary_size": 50257},
    )

    with pytest.raises(ValueError) as raised:
        validate_windows(windows, vocabulary_size=64)

    message = str(raised.value)
    assert "Token id 99" in message
    assert "window 1" in message
    assert "vocabulary size 64" in message
    assert "another tokenizer" in message
    assert "BytePairTokenizer" in message


def test_validate_with_negative_id_raises():
    windows = make_windows(np.array([1, -3, 2, 4]), seq_len=2)

    with pytest.raises(ValueError, match="Token id -3 in window 0 is negative"):
        validate_windows(windows)


# --- device side ----------------------------------------------------------------


@pytest.mark.parametrize("module_name", ["windows", "calibration"])
def test_device_side_module_imports_only_numpy_and_standard_library(module_name):
    source = Path(windows_module.__file__).with_name(f"{module_name}.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    # The converter's bottom layer (atomic writes) ships with the windows reader; import-linter holds it to
    # the standard library and numpy (setup.cfg).
    imported = {name.split(".")[0] for name in imported if not name.startswith("converter.common")}

    allowed = set(sys.stdlib_module_names) | {"__future__", "numpy", "representative_data"}
    assert imported <= allowed, imported - allowed
