"""SmoothQuant: move activation outliers into the weights before full-integer conversion.

Per-tensor int8 activations cannot hold a tensor whose few outlier channels are
hundreds of times larger than the rest (SmolLM2's MLP down-projection input has
max/RMS about 320; README "Full int8: where it stands"). SmoothQuant (Xiao et al., 2023)
divides activation channel `j` by a factor `s_j` and multiplies row `j` of the
weight that reads it by the same `s_j`:

    s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)

The float function is unchanged. The division is folded into the op that
produces the activation (a norm's scale, a projection's output columns), so the
converted graph gets no extra op; the int8 weights, quantized per output
channel, absorb the outliers more easily than per-tensor int8 activations do.

`smoothed(model, feeds)` rescales a keras-hub model's weights in place for the
duration of a `with` block (typically around `conversion.convert_keras`) and
restores the exact original values on exit.

Sites (`sites=`), by family:

- `down` (Llama): the MLP down-projection input `silu(gate) * up`; 1/s goes
  into the up-projection's output columns.
- `norm`: the inputs of q/k/v and of the MLP's first projection(s), which a
  norm produces; 1/s goes into the norm's scale (RMSNorm) or gamma and beta
  (LayerNorm). One s per norm, shared by all of its readers.
- `attention_output`: the attention output projection's input, softmax·V;
  1/s goes into V's output channels. With grouped-query attention one V
  channel feeds several query heads, so they share its s.

GPT-2's MLP output projection reads gelu(x), which no scale passes through, so
it has no `down` site; the report says so.

For Llama the TFLite converter folds the RMSNorm scale into the q/k/v and
gate/up weights: the int8 tensor those FCs read is x·rsqrt(mean(x²)), before
the scale. The `norm` site therefore leaves a converted Llama unchanged (the
tiny Llama's int8 logits came out identical); the report notes it. GPT-2's
LayerNorm keeps gamma in the graph, so there it does change the int8 input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from converter.common import progress as progress_lib

SITE_FAMILIES = ("down", "norm", "attention_output")
# Measured on SmolLM2-135M and tiny-gpt2 (README "Full int8: where it stands"):
# only the down-projection site helps full int8.
DEFAULT_SITES = ("down",)
SUPPORTED = (
    "keras-hub Llama-family models (LlamaBackbone, Llama3Backbone and their CausalLMs, "
    "made of LlamaTransformerDecoder layers) and keras-hub GPT-2 (GPT2Backbone / GPT2CausalLM)"
)
# Bounds on s: a channel that is (nearly) never active, or a weight row that is
# (nearly) zero, would otherwise get an extreme factor that only moves the
# problem to the other side.
SCALE_MIN = 1e-3
SCALE_MAX = 1e3


@dataclasses.dataclass(frozen=True)
class SiteReport:
    """One smoothed activation (the input of one or more linear layers).

    Attributes:
      layer: the reading layer's path, e.g. `transformer_layer_3/feedforward_output_dense`
        (for a norm site, the first of its readers).
      family: `down`, `norm` or `attention_output`.
      producer: the weights that absorbed 1/s.
      consumers: the weights whose input rows absorbed s.
      channels: activation channels.
      scales: distinct factors (fewer than `channels` under grouped-query attention).
      max_before, rms_before: max |x| and RMS of the whole tensor on the feeds.
      max_after, rms_after: the same after smoothing.
      scale_min, scale_max: range of s.
    """

    layer: str
    family: str
    producer: tuple[str, ...]
    consumers: tuple[str, ...]
    channels: int
    scales: int
    max_before: float
    rms_before: float
    max_after: float
    rms_after: float
    scale_min: float
    scale_max: float

    @property
    def peak_to_rms_before(self) -> float:
        return self.max_before / self.rms_before if self.rms_before else math.inf

    @property
    def peak_to_rms_after(self) -> float:
        return self.max_after / self.rms_after if self.rms_after else math.inf


@dataclasses.dataclass(frozen=True)
class SmoothingReport:
    """What `smoothed` did.

    Attributes:
      architecture: `llama` or `gpt2`.
      alpha: migration strength (0: nothing moves to the weights, 1: all).
      sites: site families asked for.
      smoothed: one entry per smoothed activation.
      skipped: families asked for that the architecture cannot take, and why.
      notes: sites that were smoothed but do not change a converted model, and why.
      windows: calibration windows measured.
      seconds: time spent measuring and rescaling.
    """

    architecture: str
    alpha: float
    sites: tuple[str, ...]
    smoothed: tuple[SiteReport, ...]
    skipped: tuple[str, ...]
    notes: tuple[str, ...]
    windows: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values, with each site's peak-to-RMS ratios added."""
        data = dataclasses.asdict(self)
        for site, entry in zip(self.smoothed, data["smoothed"]):
            entry["peak_to_rms_before"] = site.peak_to_rms_before
            entry["peak_to_rms_after"] = site.peak_to_rms_after
        return _jsonable(data)

    def summary(self) -> str:
        """One line: sites and the worst peak-to-RMS ratio before and after, per family."""
        parts = []
        for family in self.sites:
            entries = [s for s in self.smoothed if s.family == family]
            if entries:
                parts.append(
                    f"{family}: {len(entries)} sites, worst max/RMS "
                    f"{max(s.peak_to_rms_before for s in entries):.0f} -> "
                    f"{max(s.peak_to_rms_after for s in entries):.0f}"
                )
        parts.extend(self.skipped)
        return f"SmoothQuant alpha {self.alpha} ({self.architecture}, {self.windows} windows): " + "; ".join(parts)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclasses.dataclass
class _Stats:
    """Per-channel running max |x| and sum of squares of one activation."""

    channels: int
    amax: np.ndarray = None
    sumsq: np.ndarray = None
    rows: int = 0

    def __post_init__(self):
        self.amax = np.zeros(self.channels, np.float64)
        self.sumsq = np.zeros(self.channels, np.float64)

    def add(self, x) -> None:
        x = np.asarray(x, np.float64).reshape(-1, self.channels)
        np.maximum(self.amax, np.abs(x).max(axis=0), out=self.amax)
        self.sumsq += np.square(x).sum(axis=0)
        self.rows += x.shape[0]

    def tensor_view(self, divisor: np.ndarray) -> tuple[float, float]:
        """Max |x| and RMS of the whole tensor with channel j divided by divisor[j]."""
        peak = float(np.max(self.amax / divisor))
        rms = math.sqrt(float(np.sum(self.sumsq / np.square(divisor))) / max(self.rows * self.channels, 1))
        return peak, rms


@dataclasses.dataclass
class _Scaled:
    """A weight variable and how a site's s scales it: new = old * factor(s)."""

    variable: Any
    factor: Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class _Site:
    """An activation to smooth: where it is measured, who produces it, who reads it.

    `expand` maps one s per scale group to one per activation channel (identity
    except under grouped-query attention). `consumer_rows` gives each consumer
    kernel as [activation channels, outputs] for its per-row max.
    """

    layer: str
    family: str
    capture: Any  # the layer whose input is the activation
    channels: int
    groups: int  # scale values
    expand: Callable[[np.ndarray], np.ndarray]
    reduce: Callable[[np.ndarray], np.ndarray]  # per-channel values -> per-group max
    producers: list[_Scaled]
    consumers: list[_Scaled]
    consumer_rows: list[Callable[[], np.ndarray]]


def _path(variable) -> str:
    return getattr(variable, "path", None) or variable.name


def _backbone(model):
    import keras_hub  # pylint: disable=import-outside-toplevel

    if isinstance(model, keras_hub.models.Backbone):
        return model
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, keras_hub.models.Backbone):
        return backbone
    raise ValueError(
        f"SmoothQuant cannot smooth a {type(model).__name__}: it has no keras-hub backbone. Supported: {SUPPORTED}."
    )


def _architecture(backbone) -> str:
    """`llama` or `gpt2`; anything else is refused before any work is done."""
    import keras_hub  # pylint: disable=import-outside-toplevel
    from keras_hub.src.layers.modeling.transformer_decoder import TransformerDecoder  # pylint: disable=import-outside-toplevel
    from keras_hub.src.models.llama.llama_decoder import LlamaTransformerDecoder  # pylint: disable=import-outside-toplevel

    layers = list(getattr(backbone, "transformer_layers", []) or [])
    # Exact types: a subclass may compute something else in `call`, which the
    # folding below would then silently break.
    if (
        isinstance(backbone, keras_hub.models.LlamaBackbone)
        and layers
        and all(
            type(layer) is LlamaTransformerDecoder
            for layer in layers  # pylint: disable=unidiomatic-typecheck
        )
    ):
        return "llama"
    if (
        isinstance(backbone, keras_hub.models.GPT2Backbone)
        and layers
        and all(
            type(layer) is TransformerDecoder
            and layer.normalize_first  # pylint: disable=unidiomatic-typecheck
            and layer._cross_attention_layer is None  # pylint: disable=protected-access
            for layer in layers
        )
    ):
        return "gpt2"
    raise ValueError(f"SmoothQuant does not support {type(backbone).__name__}. Supported: {SUPPORTED}.")


def _rows(variable, channel_axes: int = 1, *, transpose_from: int | None = None) -> Callable[[], np.ndarray]:
    """Current value of a consumer kernel as [input channels, outputs]."""

    def read():
        value = np.asarray(variable.numpy(), np.float64)
        if transpose_from is not None:  # input channels on axis `transpose_from`
            value = np.moveaxis(value, transpose_from, 0)
        return value.reshape(int(np.prod(value.shape[:channel_axes])), -1)

    return read


def _along(axis: int, ndim: int) -> Callable[[np.ndarray], np.ndarray]:
    """s shaped to broadcast along one axis of an ndim-dimensional weight."""

    def shape(s):
        return s.reshape([-1 if i == axis else 1 for i in range(ndim)])

    return shape


def _inverse(shape: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda s: 1.0 / shape(s)


def _identity(values: np.ndarray) -> np.ndarray:
    return values


def _norm_site(family_layer: str, norm_variables, readers) -> _Site:
    """A norm whose output feeds `readers` (Dense or EinsumDense with input channels on axis 0)."""
    channels = int(norm_variables[0].shape[0])
    return _Site(
        layer=family_layer,
        family="norm",
        capture=readers[0],
        channels=channels,
        groups=channels,
        expand=_identity,
        reduce=_identity,
        producers=[_Scaled(v, _inverse(_along(0, 1))) for v in norm_variables],
        consumers=[_Scaled(r.kernel, _along(0, len(r.kernel.shape))) for r in readers],
        consumer_rows=[_rows(r.kernel) for r in readers],
    )


def _v_to_output_site(decoder, attention, *, query_heads: int, kv_heads: int) -> _Site:
    """softmax·V -> output projection; s per V channel, shared by the query heads of its group."""
    value, output = attention._value_dense, attention._output_dense  # pylint: disable=protected-access
    _, _, head_dim = value.kernel.shape
    group = query_heads // kv_heads

    def expand(s):  # [kv_heads * head_dim] -> [query_heads * head_dim]; keras-hub repeats each KV head
        return np.repeat(s.reshape(kv_heads, 1, head_dim), group, axis=1).reshape(-1)

    def reduce(values):  # [query_heads * head_dim] -> [kv_heads * head_dim]
        return values.reshape(kv_heads, group, head_dim).max(axis=1).reshape(-1)

    producers = [_Scaled(value.kernel, lambda s: 1.0 / s.reshape(1, kv_heads, head_dim))]
    if value.bias is not None:
        producers.append(_Scaled(value.bias, lambda s: 1.0 / s.reshape(kv_heads, head_dim)))
    return _Site(
        layer=f"{decoder.name}/{attention.name}/{output.name}",
        family="attention_output",
        capture=output,
        channels=query_heads * head_dim,
        groups=kv_heads * head_dim,
        expand=expand,
        reduce=reduce,
        producers=producers,
        consumers=[_Scaled(output.kernel, lambda s: expand(s).reshape(query_heads, head_dim, 1))],
        consumer_rows=[_rows(output.kernel, channel_axes=2)],
    )


def _llama_sites(decoder) -> dict[str, list[_Site]]:
    # pylint: disable=protected-access
    attention = decoder._self_attention_layer
    up, gate, down = (
        decoder._feedforward_intermediate_dense,
        decoder._feedforward_gate_dense,
        decoder._feedforward_output_dense,
    )
    for layer in (
        attention._query_dense,
        attention._key_dense,
        attention._value_dense,
        attention._output_dense,
        up,
        gate,
        down,
    ):
        if getattr(layer, "bias", None) is not None:
            raise ValueError(
                f"SmoothQuant expects Llama projections without bias; {decoder.name}/{layer.name} has one."
            )
    intermediate = int(up.kernel.shape[1])
    sites = {
        "down": [
            _Site(
                layer=f"{decoder.name}/{down.name}",
                family="down",
                capture=down,
                channels=intermediate,
                groups=intermediate,
                expand=_identity,
                reduce=_identity,
                # (up · x / s) * silu(gate · x) = (up · x * silu(gate · x)) / s
                producers=[_Scaled(up.kernel, _inverse(_along(1, 2)))],
                consumers=[_Scaled(down.kernel, _along(0, 2))],
                consumer_rows=[_rows(down.kernel)],
            )
        ],
        "norm": [
            _norm_site(
                f"{decoder.name}/{attention.name}/{attention._query_dense.name}",
                [decoder._self_attention_layernorm.scale],
                [attention._query_dense, attention._key_dense, attention._value_dense],
            ),
            _norm_site(f"{decoder.name}/{gate.name}", [decoder._feedforward_layernorm.scale], [gate, up]),
        ],
        "attention_output": [
            _v_to_output_site(
                decoder, attention, query_heads=attention.num_query_heads, kv_heads=attention.num_key_value_heads
            )
        ],
    }
    return sites


def _gpt2_sites(decoder) -> dict[str, list[_Site]]:
    # pylint: disable=protected-access
    attention = decoder._self_attention_layer
    first_norm, second_norm = decoder._self_attention_layer_norm, decoder._feedforward_layer_norm
    for norm in (first_norm, second_norm):
        if not (norm.scale and norm.center):
            raise ValueError(
                f"SmoothQuant expects LayerNorms with gamma and beta; {decoder.name}/{norm.name} lacks one."
            )
    heads = attention.num_heads
    return {
        "down": [],
        "norm": [
            # y / s = (gamma / s) * x_hat + beta / s
            _norm_site(
                f"{decoder.name}/{attention.name}/{attention._query_dense.name}",
                [first_norm.gamma, first_norm.beta],
                [attention._query_dense, attention._key_dense, attention._value_dense],
            ),
            _norm_site(
                f"{decoder.name}/{decoder._feedforward_intermediate_dense.name}",
                [second_norm.gamma, second_norm.beta],
                [decoder._feedforward_intermediate_dense],
            ),
        ],
        "attention_output": [_v_to_output_site(decoder, attention, query_heads=heads, kv_heads=heads)],
    }


_LLAMA_NORM_NOTE = (
    "norm: the TFLite converter folds the RMSNorm scale into the projections' weights, so this site "
    "does not change a converted Llama's int8 activations"
)
_GPT2_DOWN_SKIPPED = (
    "down: skipped for GPT-2, the MLP output projection reads gelu(x) and no per-channel scale passes through gelu"
)


def _parse_sites(sites: str | Iterable[str] | None) -> tuple[str, ...]:
    if sites is None:
        return DEFAULT_SITES
    if isinstance(sites, str):
        sites = [part.strip() for part in sites.split(",") if part.strip()]
    chosen = tuple(dict.fromkeys(sites))
    unknown = [site for site in chosen if site not in SITE_FAMILIES]
    if unknown or not chosen:
        raise ValueError(f"Unknown SmoothQuant sites {unknown or chosen!r}; choose from {', '.join(SITE_FAMILIES)}.")
    return chosen


def _check_feeds(feeds: Sequence[Any]) -> list[np.ndarray]:
    arrays = [np.asarray(feed) for feed in feeds]
    if not arrays:
        raise ValueError("SmoothQuant needs calibration feeds: a list of int32 token-id arrays shaped [1, seq_len].")
    for array in arrays:
        if array.ndim != 2 or array.shape[0] != 1 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"SmoothQuant feeds must be integer token ids shaped [1, seq_len]; got {array.dtype} {array.shape}."
            )
    return [array.astype(np.int32) for array in arrays]


@contextlib.contextmanager
def _capturing(sites: list[_Site]) -> Iterator[dict[int, _Stats]]:
    """Records per-channel statistics of each site's activation (its capture layer's input).

    The layers' `call` is replaced on the instance for the duration: the
    decoder calls its sub-layers directly, so they cannot be read from a
    functional graph.
    """
    stats: dict[int, _Stats] = {}
    patched = []
    try:
        for site in sites:
            layer = site.capture
            if id(layer) in stats:
                continue
            record = stats[id(layer)] = _Stats(site.channels)
            original = layer.call

            def call(inputs, *args, _original=original, _record=record, **kwargs):
                _record.add(inputs)
                return _original(inputs, *args, **kwargs)

            # object.__setattr__: Keras would try to track the function otherwise.
            object.__setattr__(layer, "call", call)
            patched.append(layer)
        yield stats
    finally:
        for layer in patched:
            object.__delattr__(layer, "call")


def _measure(backbone, sites: list[_Site], feeds: list[np.ndarray], progress: bool) -> dict[int, _Stats]:
    with _capturing(sites) as stats:
        for index, ids in enumerate(feeds):
            # Eager: the patched calls read concrete values. All-ones padding
            # mask, as the converter traces the model.
            backbone({"token_ids": ids, "padding_mask": np.ones_like(ids)}, training=False)
            progress_lib.log("smooth", f"measured window {index + 1}/{len(feeds)}", enabled=progress)
    return stats


def _scales(site: _Site, stats: _Stats, alpha: float) -> np.ndarray:
    """s per scale group: max|X_j|^alpha / max|W_j|^(1 - alpha), clipped; 1 where either is 0."""
    activation = site.reduce(stats.amax)
    weight = np.max(np.stack([site.reduce(np.abs(rows()).max(axis=1)) for rows in site.consumer_rows]), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.power(activation, alpha) / np.power(weight, 1.0 - alpha)
    s = np.where((activation > 0) & (weight > 0) & np.isfinite(s), s, 1.0)
    return np.clip(s, SCALE_MIN, SCALE_MAX)


def _apply(site: _Site, s: np.ndarray) -> None:
    for scaled in site.producers + site.consumers:
        variable = scaled.variable
        value = np.asarray(variable.numpy(), np.float64) * scaled.factor(s)
        variable.assign(value.astype(variable.dtype))


@contextlib.contextmanager
def smoothed(
    model,
    feeds: Sequence[Any],
    *,
    alpha: float = 0.5,
    sites: str | Iterable[str] | None = None,
    progress: bool = False,
) -> Iterator[SmoothingReport]:
    """Applies SmoothQuant to a keras-hub model's weights for the duration of the block.

    The model computes the same float function (up to float32 rounding) while
    smoothed; on exit, normal or by exception, every touched variable gets its
    original value back bit for bit.

    Args:
      model: a keras-hub CausalLM (`.backbone` is used) or Backbone; Llama-family
        or GPT-2 (see `SUPPORTED`). Its weights are changed in place.
      feeds: calibration token ids, each int32 [1, seq_len]
        (e.g. `windows.token_ids[i:i + 1]`).
      alpha: migration strength in [0, 1]; 0.5 is SmoothQuant's default, larger
        moves more of the outliers into the weights.
      sites: site families, a sequence or comma-separated string from
        `SITE_FAMILIES`; None means `DEFAULT_SITES`. Families the architecture
        cannot take are listed in the report's `skipped`.
      progress: print progress to stderr.

    Yields:
      The `SmoothingReport` of what was smoothed.

    Raises:
      ValueError: an unsupported model (the message names the supported ones),
        unknown sites, alpha outside [0, 1], or malformed feeds; raised before
        any weight is touched.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    families = _parse_sites(sites)
    backbone = _backbone(model)
    architecture = _architecture(backbone)
    arrays = _check_feeds(feeds)
    start = time.monotonic()
    build_sites = _llama_sites if architecture == "llama" else _gpt2_sites
    per_family: dict[str, list[_Site]] = {family: [] for family in families}
    for decoder in backbone.transformer_layers:
        for family, found in build_sites(decoder).items():
            if family in per_family:
                per_family[family].extend(found)
    skipped = tuple(_GPT2_DOWN_SKIPPED for family in families if family == "down" and architecture == "gpt2")
    notes = tuple(_LLAMA_NORM_NOTE for family in families if family == "norm" and architecture == "llama")
    # The column sites (down, attention_output) go first: they rescale the up
    # and V kernels' columns, which the norm sites then read as their
    # consumers' rows. Activations are measured once, on the original model:
    # every site leaves the other sites' activations unchanged.
    ordered = [site for family in ("down", "attention_output", "norm") for site in per_family.get(family, [])]
    originals = {}
    for site in ordered:
        for scaled in site.producers + site.consumers:
            originals.setdefault(id(scaled.variable), (scaled.variable, np.array(scaled.variable.numpy(), copy=True)))
    try:
        progress_lib.log(
            "smooth", f"{architecture}: measuring {len(ordered)} activations on {len(arrays)} windows", enabled=progress
        )
        stats = _measure(backbone, ordered, arrays, progress) if ordered else {}
        reports = []
        for site in ordered:
            record = stats[id(site.capture)]
            s = _scales(site, record, alpha)
            expanded = site.expand(s)
            max_before, rms_before = record.tensor_view(np.ones(site.channels))
            max_after, rms_after = record.tensor_view(expanded)
            _apply(site, s)
            reports.append(
                SiteReport(
                    layer=site.layer,
                    family=site.family,
                    producer=tuple(_path(p.variable) for p in site.producers),
                    consumers=tuple(_path(c.variable) for c in site.consumers),
                    channels=site.channels,
                    scales=site.groups,
                    max_before=max_before,
                    rms_before=rms_before,
                    max_after=max_after,
                    rms_after=rms_after,
                    scale_min=float(s.min()),
                    scale_max=float(s.max()),
                )
            )
        order = {family: i for i, family in enumerate(families)}
        reports.sort(key=lambda r: order[r.family])
        report = SmoothingReport(
            architecture=architecture,
            alpha=float(alpha),
            sites=families,
            smoothed=tuple(reports),
            skipped=skipped,
            notes=notes,
            windows=len(arrays),
            seconds=round(time.monotonic() - start, 3),
        )
        progress_lib.log("smooth", report.summary(), enabled=progress)
        yield report
    finally:
        for variable, value in originals.values():
            variable.assign(value)
