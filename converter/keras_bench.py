"""The baseline a user had before converting: the Keras model itself, on TensorFlow.

    python -m converter.keras_bench --model=tiny-gpt2 --threads=1 \
        --evaluation=build/tiny-gpt2/tiny-gpt2_seq128_evaluation.npz \
        --reference=build/tiny-gpt2/tiny-gpt2_fp32.tflite

Measured with the device harness (`benchmarks.measure`), so its figures sit
beside the LiteRT ones in the same result format (variant `keras`, runtime
`tensorflow`). TensorFlow fixes its thread pools when it starts, so each
thread count needs its own process: `--threads` takes one value.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

KERAS_VARIANT = "keras"


class KerasRunner:
    """Runs the fixed-shape wrapper of a Keras LM through one `tf.function`.

    A traced `tf.function` is the fastest way a TensorFlow user runs a Keras
    model without XLA; eager `model(x)` and `model.predict` are slower, so this
    baseline flatters Keras rather than LiteRT.
    """

    def __init__(self, model, *, seq_len: int, threads: int):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        from benchmarks import runtimes  # pylint: disable=import-outside-toplevel
        from converter import wrapping  # pylint: disable=import-outside-toplevel

        self.runtime = runtimes.RuntimeInfo(name="tensorflow", version=tf.__version__)
        self.threads = threads
        self.seq_len = seq_len
        self._wrapped = wrapping.wrap_model(model, seq_len=seq_len)
        self.vocabulary_size = int(self._wrapped.outputs[0].shape[-1])
        self.input_names = (wrapping.TOKEN_IDS,)
        self._tf = tf
        spec = tf.TensorSpec((1, seq_len), tf.int32)
        self._call = tf.function(lambda ids: self._wrapped({wrapping.TOKEN_IDS: ids}, training=False)[wrapping.LOGITS],
                                 input_signature=[spec])
        self._ids = None
        self._out = None

    @property
    def weight_bytes(self) -> int:
        return int(sum(w.numpy().nbytes for w in self._wrapped.weights))

    def prepare(self, inputs) -> None:
        self._ids = self._tf.constant(inputs["token_ids"], dtype=self._tf.int32)

    def invoke(self) -> None:
        self._out = self._call(self._ids)

    def logits(self):
        return self._out.numpy()


def set_threads(threads: int) -> None:
    """Caps TensorFlow's thread pools; must run before TensorFlow executes anything."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


_MODEL = None
_THREADS = None
_SEQ_LEN = None
_EVALUATION = None
_REFERENCE = None
_RESULTS_DIR = None
_BUILD_DIR = None
_RUNS = None
_MAX_WINDOWS = None


def _define_flags() -> None:
    """Defines the flags only when run as a program, so importing this module defines none."""
    global _MODEL, _THREADS, _SEQ_LEN, _EVALUATION, _REFERENCE, _RESULTS_DIR, _BUILD_DIR, _RUNS, _MAX_WINDOWS  # pylint: disable=global-statement
    _MODEL = flags.DEFINE_string("model", "tiny-gpt2", "Built-in model name, .keras file or preset folder.")
    _THREADS = flags.DEFINE_integer("threads", 1, "TensorFlow intra-op threads.", lower_bound=1)
    _SEQ_LEN = flags.DEFINE_integer("seq_len", None, "Fixed sequence length (default: as the converter).", lower_bound=2)
    _EVALUATION = flags.DEFINE_string("evaluation", None, "Evaluation windows (.npz) for accuracy.")
    _REFERENCE = flags.DEFINE_string("reference", None, "The fp32 .tflite of the same model, for agreement and KL.")
    _RESULTS_DIR = flags.DEFINE_string("results_dir", "results", "Folder for result files.")
    _BUILD_DIR = flags.DEFINE_string("build_dir", "build", "Build folder (built-in models are cached there).")
    _RUNS = flags.DEFINE_integer("runs", 50, "Timed runs (at least).", lower_bound=1)
    _MAX_WINDOWS = flags.DEFINE_integer("max_windows", None, "Score at most this many windows.", lower_bound=1)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from benchmarks import harness, model_file, results, runtimes  # pylint: disable=import-outside-toplevel

    try:
        folder = results.check_results_dir(_RESULTS_DIR.value)
        if _REFERENCE.value:
            model_file.check_model_file(_REFERENCE.value)
        windows = harness.read_evaluation_windows(_EVALUATION.value)
        set_threads(_THREADS.value)
        from converter import conversion, model_sources  # pylint: disable=import-outside-toplevel

        loaded = model_sources.load_model(_MODEL.value, build_dir=_BUILD_DIR.value)
        seq_len = conversion.resolve_seq_len(loaded.model, _SEQ_LEN.value)
        holder = {}

        def open_model():
            holder["runner"] = KerasRunner(loaded.model, seq_len=seq_len, threads=_THREADS.value)
            return holder["runner"]

        open_reference = None
        if _REFERENCE.value:
            open_reference = lambda: runtimes.open_runner(_REFERENCE.value, threads=_THREADS.value)  # noqa: E731
        result = harness.measure(
            open_model,
            model={"name": loaded.name, "variant": KERAS_VARIANT, "path": loaded.source, "format": "keras",
                   "sha256": None, "size_bytes": 0},
            evaluation=windows,
            open_reference=open_reference,
            runs=_RUNS.value,
            max_windows=_MAX_WINDOWS.value,
            settings={"call": "tf.function(model)", "evaluation": _EVALUATION.value, "reference": _REFERENCE.value},
        )
        # The weights' bytes are known only once the model is built inside measure().
        import dataclasses  # pylint: disable=import-outside-toplevel

        result = dataclasses.replace(
            result, model=dataclasses.replace(result.model, size_bytes=holder["runner"].weight_bytes)
        )
        path = result.save(folder)
    except (OSError, ValueError, TypeError, runtimes.ModelLoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.summary())
    print(f"[bench] wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    _define_flags()
    app.run(main)
