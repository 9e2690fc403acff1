"""The peer a user would pick instead of LiteRT: the same model in ONNX, fp32 and dynamic int8.

    python -m converter.cli.onnx_export [--model=tiny-gpt2] [--seq_len=128]

writes `build/<model>/<model>_onnx-fp32.onnx` (Keras' own ONNX export of the
same fixed-shape wrapper the TFLite converter traces) and
`<model>_onnx-dynamic.onnx` (`onnxruntime.quantization.quantize_dynamic`, int8
weights, the peer of our `dynamic` mode).
"""

from __future__ import annotations

import os
import pathlib
import warnings

from converter.common import files, progress

ONNX_FP32 = "onnx-fp32"
ONNX_DYNAMIC = "onnx-dynamic"
_INSTALL_HINT = "Install the peer packages: make bench (or pip install -e '.[bench]')."


def onnx_paths(model_name: str, *, build_dir: str | os.PathLike = "build") -> dict[str, pathlib.Path]:
    """Where the ONNX peers of a model are written, keyed by variant."""
    folder = pathlib.Path(build_dir) / model_name
    return {variant: folder / f"{model_name}_{variant}.onnx" for variant in (ONNX_FP32, ONNX_DYNAMIC)}


def check_peer_packages() -> None:
    """Raises ImportError naming what to install when the ONNX tools are missing."""
    for module in ("onnx", "onnxruntime", "tf2onnx"):
        try:
            __import__(module)
        except ImportError as error:
            raise ImportError(f"The ONNX peer needs {module!r} ({error}). {_INSTALL_HINT}") from error


def export_onnx(
    model,
    *,
    seq_len: int,
    model_name: str,
    build_dir: str | os.PathLike = "build",
    overwrite: bool = False,
) -> dict[str, pathlib.Path]:
    """Exports the fp32 ONNX model and its dynamic int8 quantization.

    Args:
      model: anything `converter.load_model` accepts, or a `LoadedModel`.
      seq_len: the fixed sequence length (the same as the TFLite models').
      model_name: artifact name.
      build_dir: build folder.
      overwrite: replace existing files; otherwise existing ones are kept.

    Returns:
      The two paths, keyed by variant.

    Raises:
      ImportError: onnx / onnxruntime / tf2onnx are not installed.
    """
    check_peer_packages()
    import numpy as np  # pylint: disable=import-outside-toplevel
    from onnxruntime.quantization import QuantType, quantize_dynamic  # pylint: disable=import-outside-toplevel

    from converter.core import wrapping
    from converter.models import model_sources  # pylint: disable=import-outside-toplevel

    paths = onnx_paths(model_name, build_dir=build_dir)
    paths[ONNX_FP32].parent.mkdir(parents=True, exist_ok=True)
    if overwrite or not paths[ONNX_FP32].exists():
        loaded = model_sources.load_model(model, build_dir=build_dir)
        wrapped = wrapping.wrap_model(loaded.model, seq_len=seq_len)
        # Keras exports only models that have been called once.
        wrapped({wrapping.TOKEN_IDS: np.zeros((1, seq_len), np.int32)})
        progress.log("onnx", f"exporting {paths[ONNX_FP32]}")
        with files.atomic_output(paths[ONNX_FP32]) as temporary, warnings.catch_warnings():
            # tf2onnx probes numpy attributes that numpy 2 deprecates.
            warnings.simplefilter("ignore", FutureWarning)
            wrapped.export(str(temporary), format="onnx", verbose=False)
    if overwrite or not paths[ONNX_DYNAMIC].exists():
        progress.log("onnx", f"quantize_dynamic -> {paths[ONNX_DYNAMIC]}")
        with files.atomic_output(paths[ONNX_DYNAMIC]) as temporary:
            quantize_dynamic(str(paths[ONNX_FP32]), str(temporary), weight_type=QuantType.QInt8)
    return paths
