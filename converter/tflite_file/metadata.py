"""Named metadata entries of a `.tflite` model: written as one buffer each, read back as text."""

from __future__ import annotations

import os

from converter.tflite_file import inspection, writing


def embed_metadata(model: bytes, name: str, payload: bytes) -> bytes:
    """Returns the model with `payload` stored as the metadata entry `name`.

    An existing entry of that name is replaced in its own buffer, so embedding
    again does not grow the file; everything else is kept.
    """
    import numpy as np  # pylint: disable=import-outside-toplevel

    fb = inspection.schema()
    model_object = inspection.load_model_object(model)
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    entries = list(model_object.metadata or [])
    existing = [e for e in entries if inspection.decode_name(e.name) == name]
    if existing:
        model_object.buffers[existing[0].buffer] = buffer
    else:
        model_object.buffers.append(buffer)
        entry = fb.MetadataT()
        entry.name = name
        entry.buffer = len(model_object.buffers) - 1
        model_object.metadata = entries + [entry]
    return writing.pack(model_object)


def read_metadata(model: bytes | str | os.PathLike, name: str) -> str | None:
    """The text of metadata entry `name`, or None when the model has none."""
    return inspection.inspect_model(model).metadata.get(name)
