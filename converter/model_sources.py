"""Where a model comes from: a built-in name, a `.keras` file, a preset folder, or an object."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings
import zipfile
from typing import Any

from converter import tiny_gpt2

BUILTIN_MODELS = (tiny_gpt2.TINY_GPT2,)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A Keras LM ready to wrap, with what we know about it.

    Attributes:
      name: short name used in artifact paths (`build/<name>/<name>_<mode>`).
      source: where it came from, for the report.
      model: a keras-hub CausalLM, a keras-hub Backbone, or a `keras.Model`.
      tokenizer: its keras-hub tokenizer, or None when the source has none.
    """

    name: str
    source: str
    model: Any
    tokenizer: Any = None


def _safe_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-.")
    return cleaned or "model"


def check_model_path(path: str | os.PathLike) -> pathlib.Path:
    """Validates a model path cheaply, before anything heavy is imported.

    Raises:
      FileNotFoundError: nothing at the path.
      ValueError: a `.keras` file that is not a Keras archive, a folder that is
        not a keras-hub preset, or an unsupported file type.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"No model at {str(path)!r}. Pass a built-in name "
            f"({', '.join(BUILTIN_MODELS)}), a .keras file or a keras-hub preset folder."
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{str(path)!r} is not a keras-hub preset folder: it has no config.json. "
                "Write one with backbone.save_to_preset(folder) (and "
                "tokenizer.save_to_preset(folder) for the tokenizer)."
            )
        return path
    if path.suffix != ".keras":
        raise ValueError(
            f"{str(path)!r}: unsupported model file type {path.suffix!r}. Pass a .keras "
            "file (model.save('model.keras')) or a keras-hub preset folder."
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{str(path)!r} is not a Keras model file: a .keras file is a zip archive "
            "written by model.save('model.keras'). Save the model again."
        )
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise ValueError(
                f"{str(path)!r} is a zip archive but not a Keras model (no config.json "
                "inside). Save the model with model.save('model.keras')."
            )
    return path


def load_model(model: Any, *, name: str | None = None, build_dir: str | os.PathLike = "build") -> LoadedModel:
    """Resolves `model` into a `LoadedModel`.

    Args:
      model: a built-in model name (`tiny-gpt2`), a path to a `.keras` file or
        a local keras-hub preset folder, a keras-hub CausalLM or Backbone, or a
        `keras.Model` mapping int32 token ids to logits.
      name: artifact name; defaults to the built-in name, the file or folder
        name, or the model's own name.
      build_dir: where built-in models are built and cached.

    Returns:
      The loaded model and its tokenizer, if it has one.

    Raises:
      FileNotFoundError, ValueError: see `check_model_path`.
    """
    if isinstance(model, LoadedModel):
        return dataclasses.replace(model, name=_safe_name(name)) if name else model
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if text in BUILTIN_MODELS:
            preset = tiny_gpt2.build_tiny_gpt2(build_dir=build_dir)
            loaded = _load_preset(preset)
            return dataclasses.replace(loaded, name=name or text, source=f"built-in {text} ({preset})")
        path = check_model_path(text)
        if path.is_dir():
            loaded = _load_preset(path)
        else:
            loaded = _load_keras_file(path)
        return dataclasses.replace(loaded, name=_safe_name(name or default_name(path)))
    import keras  # pylint: disable=import-outside-toplevel

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Cannot convert a {type(model).__name__}: pass a keras.Model, a keras-hub "
            "CausalLM or Backbone, a .keras file, a preset folder or a built-in name "
            f"({', '.join(BUILTIN_MODELS)})."
        )
    return LoadedModel(
        name=_safe_name(name or model.name),
        source=f"in-memory {type(model).__name__}",
        model=model,
        tokenizer=find_tokenizer(model),
    )


def default_name(model: str | os.PathLike) -> str:
    """The artifact name a model path or built-in name gets, known before loading."""
    text = os.fspath(model)
    if text in BUILTIN_MODELS:
        return text
    path = pathlib.Path(text)
    return _safe_name(path.stem if path.suffix == ".keras" else path.name)


def find_tokenizer(model: Any):
    """The tokenizer attached to a keras-hub task's preprocessor, if any."""
    preprocessor = getattr(model, "preprocessor", None)
    return getattr(preprocessor, "tokenizer", None)


def _load_preset(path: pathlib.Path) -> LoadedModel:
    import keras_hub  # pylint: disable=import-outside-toplevel

    try:
        if (path / "task.json").is_file():
            model = keras_hub.models.CausalLM.from_preset(str(path))
        else:
            model = keras_hub.models.Backbone.from_preset(str(path))
    except Exception as error:
        raise ValueError(f"Could not load the keras-hub preset at {str(path)!r}: {error}") from error
    tokenizer = find_tokenizer(model)
    if tokenizer is None and (path / "tokenizer.json").is_file():
        with warnings.catch_warnings():
            # keras-hub 0.32 leaves the SentencePiece vocabulary file open.
            warnings.simplefilter("ignore", ResourceWarning)
            tokenizer = keras_hub.tokenizers.Tokenizer.from_preset(str(path))
    return LoadedModel(name=path.name, source=f"keras-hub preset {path}", model=model, tokenizer=tokenizer)


def _load_keras_file(path: pathlib.Path) -> LoadedModel:
    import keras  # pylint: disable=import-outside-toplevel
    import keras_hub  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import  (registers its layers)

    try:
        model = keras.saving.load_model(str(path))
    except Exception as error:
        raise ValueError(
            f"{str(path)!r} could not be loaded as a Keras model ({error}). If it uses "
            "custom layers, load it yourself and pass the model object."
        ) from error
    if not isinstance(model, keras.Model):
        raise ValueError(f"{str(path)!r} holds a {type(model).__name__}, not a keras.Model.")
    return LoadedModel(name=path.stem, source=f".keras file {path}", model=model, tokenizer=find_tokenizer(model))
