"""What every rewrite of a `.tflite` model returns."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SurgeryResult:
    """A rewritten model and one line per change made to it (empty, with the same bytes, when none was)."""

    model: bytes
    changes: tuple[str, ...]
