"""Checks that a model file is whole before a runtime is asked to load it.

A runtime handed a truncated flatbuffer may reject it with a terse message or,
in older builds, read past the end. These checks need the standard library
only (the device may have no flatbuffers package and no schema), and read the
few flatbuffer fields that say where the weights lie.
"""

from __future__ import annotations

import mmap
import os
import pathlib
import struct

TFLITE_SUFFIX = ".tflite"
ONNX_SUFFIX = ".onnx"
_TFLITE_IDENTIFIER = b"TFL3"
# Field slots in the TFLite schema (schema.fbs): Model.buffers is field 4,
# Buffer.data / offset / size are fields 0 / 1 / 2.
_MODEL_BUFFERS_FIELD = 4
_BUFFER_DATA_FIELD = 0
_BUFFER_OFFSET_FIELD = 1
_BUFFER_SIZE_FIELD = 2


class ModelFileError(ValueError):
    """A model file that is missing, truncated or of the wrong kind."""


def check_model_file(path: str | os.PathLike) -> pathlib.Path:
    """Validates a `.tflite` or `.onnx` file cheaply.

    Args:
      path: the model file.

    Returns:
      The path.

    Raises:
      FileNotFoundError: nothing at the path.
      ModelFileError: a folder, an empty file, a file that is not a TFLite
        flatbuffer, or one whose weights extend past its end (truncated).
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"No model at {str(path)!r}. Convert one first (make convert MODE=...) or pass the path of a .tflite file."
        )
    if path.is_dir():
        raise ModelFileError(f"{str(path)!r} is a folder; pass a .tflite (or .onnx) file.")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{str(path)!r} is empty. Convert the model again.")
    if path.suffix == ONNX_SUFFIX:
        return path
    # A memory map: the checks read the flatbuffer's tables and each buffer's bounds, never the weights.
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if len(data) < 8 or data[4:8] != _TFLITE_IDENTIFIER:
            raise ModelFileError(
                f"{str(path)!r} is not a TFLite model: the flatbuffer identifier 'TFL3' is "
                "missing. Pass a .tflite file written by the TFLite converter."
            )
        try:
            _check_buffers(data)
        except (struct.error, _Truncated) as error:
            raise ModelFileError(
                f"{str(path)!r} is truncated or corrupt ({error}); {size} bytes on disk. Copy or convert it again."
            ) from None
    return path


class _Truncated(Exception):
    pass


def _u32(data: bytes, position: int) -> int:
    if position < 0 or position + 4 > len(data):
        raise _Truncated(f"offset {position} lies past the end of the file")
    return struct.unpack_from("<I", data, position)[0]


def _field_position(data: bytes, table: int, field: int) -> int | None:
    """Absolute position of a table field, or None when the field is absent."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    if vtable < 0 or vtable + 4 > len(data):
        raise _Truncated(f"vtable at {vtable} lies outside the file")
    vtable_size = struct.unpack_from("<H", data, vtable)[0]
    slot = 4 + 2 * field
    if slot + 2 > vtable_size:
        return None
    relative = struct.unpack_from("<H", data, vtable + slot)[0]
    return table + relative if relative else None


def _check_buffers(data: bytes) -> None:
    root = _u32(data, 0)
    buffers_field = _field_position(data, root, _MODEL_BUFFERS_FIELD)
    if buffers_field is None:
        return
    vector = buffers_field + _u32(data, buffers_field)
    count = _u32(data, vector)
    for index in range(count):
        entry = vector + 4 + 4 * index
        table = entry + _u32(data, entry)
        data_field = _field_position(data, table, _BUFFER_DATA_FIELD)
        if data_field is not None:
            bytes_vector = data_field + _u32(data, data_field)
            end = bytes_vector + 4 + _u32(data, bytes_vector)
            if end > len(data):
                raise _Truncated(f"buffer {index} ends at byte {end}")
        offset_field = _field_position(data, table, _BUFFER_OFFSET_FIELD)
        size_field = _field_position(data, table, _BUFFER_SIZE_FIELD)
        if offset_field is not None and size_field is not None:
            # Models over 2 GB keep weights after the flatbuffer, addressed by offset.
            offset = struct.unpack_from("<Q", data, offset_field)[0]
            length = struct.unpack_from("<Q", data, size_field)[0]
            if offset > 1 and offset + length > len(data):
                raise _Truncated(f"buffer {index} ends at byte {offset + length}")
