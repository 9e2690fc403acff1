"""Reading .tflite files without TensorFlow: ops, dtypes, signature, and bad files."""

from __future__ import annotations

import subprocess
import sys

import pytest

import converter
from converter.tflite_file import inspection

from helpers import SEQ_LEN, tiny_gpt2_causal_lm


@pytest.fixture(scope="module")
def fp32_model():
    return converter.convert_keras(tiny_gpt2_causal_lm(), "fp32", seq_len=SEQ_LEN, progress=False).model


def test_inspection_reads_signature_ops_and_metadata(fp32_model):
    graph = inspection.inspect_model(fp32_model)
    assert graph.size_bytes == len(fp32_model)
    assert graph.inputs["token_ids"].shape == (1, SEQ_LEN) and graph.inputs["token_ids"].dtype == "int32"
    assert graph.outputs["logits"].dtype == "float32"
    histogram = graph.op_histogram
    # 2 layers x (q, k, v, attention output, 2 feed-forward) + the logits layer.
    assert histogram["FULLY_CONNECTED"]["count"] == 13
    assert histogram["BATCH_MATMUL"]["count"] == 4
    assert "LESS" not in histogram  # the negative-index wrap was removed
    assert graph.min_runtime_version
    assert graph.flex_ops == () and graph.custom_ops == ()


def test_inspection_imports_no_tensorflow(fp32_model, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(fp32_model)
    code = (
        "import sys; from converter.tflite_file import inspection; "
        f"g = inspection.inspect_model({str(path)!r}); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, sorted(sys.modules); "
        "print(g.op_histogram['FULLY_CONNECTED']['count'])"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "13"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No TFLite model at"):
        inspection.inspect_model(tmp_path / "none.tflite")


def test_non_tflite_bytes_are_refused():
    with pytest.raises(ValueError, match="Not a TFLite model"):
        inspection.inspect_model(b"PK\x03\x04 this is a zip, not a model")


def test_truncated_model_is_refused(fp32_model):
    with pytest.raises(ValueError, match="truncated or corrupt"):
        inspection.inspect_model(fp32_model[: len(fp32_model) // 3])
