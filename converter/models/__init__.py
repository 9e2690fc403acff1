"""Where models come from: the built-in ones (tiny-gpt2, SmolLM2-135M from GGUF, gpt2-6l) and the user's own.

`load_model` resolves a built-in name, a `.keras` file, a keras-hub preset
folder or a model object into a `LoadedModel` (the model and its tokenizer).
The builders train or read their model once and cache it as a keras-hub
preset under the build folder. They never import the benchmark harness.
"""

from converter.models.model_sources import (
    BUILTIN_MODELS,
    DEFAULT_MODEL,
    LoadedModel,
    build_builtin,
    check_model_path,
    default_name,
    find_tokenizer,
    load_model,
    load_tokenizer,
)

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_MODEL",
    "LoadedModel",
    "build_builtin",
    "check_model_path",
    "default_name",
    "find_tokenizer",
    "load_model",
    "load_tokenizer",
]
