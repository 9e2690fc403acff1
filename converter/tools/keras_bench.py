"""The baseline a user had before converting: the Keras model itself, on TensorFlow.

    python -m converter.cli.keras_bench --model=tiny-gpt2 --threads=1 \
        --evaluation=build/tiny-gpt2/tiny-gpt2_seq128_evaluation.npz \
        --reference=build/tiny-gpt2/tiny-gpt2_fp32.tflite

Measured with the device harness (`benchmarks.measure`), so its figures sit
beside the LiteRT ones in the same result format (variant `keras`, runtime
`tensorflow`). TensorFlow fixes its thread pools when it starts, so each
thread count needs its own process: `--threads` takes one value.
"""

from __future__ import annotations

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
        from converter.core import wrapping  # pylint: disable=import-outside-toplevel

        self.runtime = runtimes.RuntimeInfo(name="tensorflow", version=tf.__version__)
        self.threads = threads
        self.seq_len = seq_len
        self._wrapped = wrapping.wrap_model(model, seq_len=seq_len)
        self.vocabulary_size = int(self._wrapped.outputs[0].shape[-1])
        self.input_names = (wrapping.TOKEN_IDS,)
        self._tf = tf
        spec = tf.TensorSpec((1, seq_len), tf.int32)
        self._call = tf.function(
            lambda ids: self._wrapped({wrapping.TOKEN_IDS: ids}, training=False)[wrapping.LOGITS],
            input_signature=[spec],
        )
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


def measure_keras(
    model,
    *,
    threads: int,
    evaluation=None,
    reference: str | None = None,
    runs: int = 50,
    max_windows: int | None = None,
    seq_len: int | None = None,
    build_dir: str = "build",
):
    """Benchmarks the Keras model on TensorFlow with the device harness; returns a `BenchmarkResult`.

    Call `set_threads` first, before TensorFlow runs anything in the process.

    Args:
      model: anything `converter.load_model` accepts.
      threads: TensorFlow intra-op threads (recorded in the result).
      evaluation: held-out windows (`.npz` or `TokenWindows`) for accuracy, or None.
      reference: the fp32 `.tflite` of the same model, for agreement and KL.
      runs: timed runs (at least).
      max_windows: score at most this many windows.
      seq_len: as `convert_keras`.
      build_dir: where built-in models are cached.
    """
    import dataclasses  # pylint: disable=import-outside-toplevel

    # pylint: disable=import-outside-toplevel
    from benchmarks import harness, runtimes
    from converter import tflite_file
    from converter.core import conversion
    from converter.models import model_sources

    if reference:
        tflite_file.check_model_file(reference)
    windows = harness.read_evaluation_windows(evaluation)
    loaded = model_sources.load_model(model, build_dir=build_dir)
    seq_len = conversion.resolve_seq_len(loaded.model, seq_len)
    holder = {}

    def open_model():
        holder["runner"] = KerasRunner(loaded.model, seq_len=seq_len, threads=threads)
        return holder["runner"]

    open_reference = None
    if reference:
        open_reference = lambda: runtimes.open_runner(reference, threads=threads)  # noqa: E731
    result = harness.measure(
        open_model,
        model={
            "name": loaded.name,
            "variant": KERAS_VARIANT,
            "path": loaded.source,
            "format": "keras",
            "sha256": None,
            "size_bytes": 0,
        },
        evaluation=windows,
        open_reference=open_reference,
        runs=runs,
        max_windows=max_windows,
        settings={
            "call": "tf.function(model)",
            "evaluation": None if evaluation is None else str(evaluation),
            "reference": reference,
        },
    )
    # The weights' bytes are known only once the model is built inside measure().
    return dataclasses.replace(
        result, model=dataclasses.replace(result.model, size_bytes=holder["runner"].weight_bytes)
    )
