"""The baseline a Keras user has for generation: keras-hub's own `CausalLM.generate`, on TensorFlow.

    python -m converter.cli.keras_generate --model=smollm2-135m --threads=2

Greedy, `new_tokens` tokens after a short prompt, the first (compiling) call
untimed; the result goes into the same results folder as the LiteRT
generation benchmarks (`benchmarks.generation_bench.GenerationBaseline`).
TensorFlow fixes its thread pools when it starts: one thread count per process.
"""

from __future__ import annotations

import time
from typing import Any

KERAS_GENERATE = "keras-generate"


def keras_generate(model: Any, prompt: list[int], *, new_tokens: int) -> tuple[list[int], float]:
    """Greedy `CausalLM.generate` of `new_tokens` tokens after `prompt`; returns (tokens, seconds) of a warm call.

    Raises:
      ValueError: the model is not a keras-hub CausalLM.
    """
    import keras_hub  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    if not isinstance(model, keras_hub.models.CausalLM):
        raise ValueError(f"keras-hub's generate needs a CausalLM, got {type(model).__name__}.")
    model.compile(sampler="greedy")
    length = len(prompt) + new_tokens
    token_ids = np.zeros((1, length), np.int32)
    token_ids[0, : len(prompt)] = prompt
    padding_mask = np.zeros((1, length), bool)
    padding_mask[0, : len(prompt)] = True
    inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
    model.generate(inputs, max_length=length, stop_token_ids=None)  # compiles
    start = time.perf_counter()
    output = model.generate(inputs, max_length=length, stop_token_ids=None)
    seconds = time.perf_counter() - start
    return [int(t) for t in np.asarray(output["token_ids"])[0, len(prompt) :]], seconds


def measure_keras_generate(model: str, *, threads: int, new_tokens: int, build_dir: str = "build"):
    """keras-hub's generate as a `GenerationBaseline` (call `keras_bench.set_threads` first)."""
    # pylint: disable=import-outside-toplevel
    import tensorflow as tf

    from benchmarks import generation_bench, runtimes
    from converter.models import model_sources

    loaded = model_sources.load_model(model, build_dir=build_dir)
    vocabulary = int(loaded.model.backbone.vocabulary_size)
    prompt = generation_bench.short_prompt(vocabulary)
    _, seconds = keras_generate(loaded.model, prompt, new_tokens=new_tokens)
    weights = int(sum(w.numpy().nbytes for w in loaded.model.weights))
    return generation_bench.GenerationBaseline.create(
        model={"name": loaded.name, "variant": KERAS_GENERATE, "path": loaded.source, "size_bytes": weights},
        runtime=runtimes.RuntimeInfo(name="tensorflow", version=tf.__version__),
        threads=threads,
        new_tokens=new_tokens,
        decode_tokens_per_second=new_tokens / seconds,
        note="keras-hub CausalLM.generate, greedy, a warm call: prefill of the prompt included, XLA as keras-hub "
        "compiles it",
    )
