"""Results folders: refused early when they cannot be written; broken result files named."""

import pytest

from benchmarks import results


def test_a_new_folder_is_created(tmp_path):
    assert results.check_results_dir(tmp_path / "a" / "b").is_dir()


def test_a_file_in_the_way_is_refused(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file"):
        results.check_results_dir(blocker)
    with pytest.raises(PermissionError, match="Cannot write results to .*RESULTS_DIR"):
        results.check_results_dir(blocker / "inside")


def test_a_read_only_folder_is_refused(tmp_path):
    # /proc is read-only for everyone, root included.
    with pytest.raises(PermissionError, match="Cannot write results"):
        results.check_results_dir("/proc/results")


def test_loading_skips_other_json_and_names_broken_files(tmp_path):
    (tmp_path / "other.json").write_text('{"not": "a result"}')
    assert results.load_results(tmp_path) == []
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json.* is not a valid result file"):
        results.load_results(tmp_path)
    with pytest.raises(FileNotFoundError, match="make bench"):
        results.load_results(tmp_path / "absent")
