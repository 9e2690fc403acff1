"""Selective quantization: which ops of a quantized LM run in float.

A choice is a string, so that the CLI, the Makefile and `auto` share one
vocabulary (`--keep_float=attention,mlp_down`):

* a group found by graph pattern, whatever the layers are called:
  - `attention`: the score and context BATCH_MATMULs, the SOFTMAX and the
    scaling/masking ops between them. LiteRT 2.3's XNNPACK delegate runs
    BATCH_MATMUL and SOFTMAX only in float, so in int8 these fall back to
    slow built-in kernels;
  - `mlp_down`: the MLP's down-projection FULLY_CONNECTED and the activation
    that makes its input (GELU; or SwiGLU's LOGISTIC, x * sigmoid(x) and gated
    product). Its input has outlier channels (SmolLM2-135M: max/RMS about
    320) that one int8 scale per tensor cannot hold;
  - `mlp`: `mlp_down` and the FULLY_CONNECTEDs feeding the activation
    (GPT-2's up-projection, Llama's gate and up);
  - `logits`: the FULLY_CONNECTED that writes the logits;
* a TFLite op type in capitals (`SOFTMAX`): every op of that type;
* `name:<regex>`: every op whose output tensor name matches (re.search), for
  choosing by layer name (`name:transformer_layer_0/`).

The region is run by `float_regions.run_region_in_float`: tensors between two
region ops stay float, so no calibration is needed again. A FULLY_CONNECTED in
the region keeps its int8 weights and runs dynamic-range (float activations
quantized per row on the fly, as in `dynamic` mode), so the file does not grow.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Sequence

from converter.passes.result import SurgeryResult
from converter.tflite_file import inspection, writing

_BRIDGE_OPS = ("QUANTIZE", "DEQUANTIZE")
# Elementwise ops that may sit between the score BATCH_MATMUL and the SOFTMAX
# (scale by 1/sqrt(d), mask by SELECT or ADD, type bridges).
_SCORE_PATH_OPS = {"MUL", "ADD", "SUB", "SELECT", "SELECT_V2", "RESHAPE", "TRANSPOSE", *_BRIDGE_OPS}
_MAX_SCORE_PATH = 8
NAME_PREFIX = "name:"


class _Graph:
    """Producer and readers of every tensor of one subgraph (0 unless told), and each op's type."""

    def __init__(self, model_object, subgraph_index: int = 0) -> None:
        self.model_object = model_object
        subgraph = model_object.subgraphs[subgraph_index]
        self.subgraph = subgraph
        self.operators = subgraph.operators
        self.kinds = [inspection.op_type_name(model_object, op.opcodeIndex) for op in self.operators]
        self.producer = {t: i for i, op in enumerate(self.operators) for t in op.outputs}
        self.readers: dict[int, list[int]] = collections.defaultdict(list)
        for i, op in enumerate(self.operators):
            for t in op.inputs:
                if t >= 0:
                    self.readers[t].append(i)
        self.outputs = {int(t) for t in (subgraph.outputs if subgraph.outputs is not None else [])}

    def is_constant(self, tensor: int) -> bool:
        if tensor < 0:
            return False
        buffer = self.subgraph.tensors[tensor].buffer
        if buffer <= 0 or buffer >= len(self.model_object.buffers):
            return False
        data = self.model_object.buffers[buffer].data
        return data is not None and len(data) > 0

    def source(self, tensor: int) -> int | None:
        """The op computing `tensor`, looking through QUANTIZE / DEQUANTIZE."""
        index = self.producer.get(tensor)
        while index is not None and self.kinds[index] in _BRIDGE_OPS:
            index = self.producer.get(self.operators[index].inputs[0])
        return index

    def activation_input(self, index: int) -> int:
        """The first non-constant input tensor of op `index`."""
        return next(t for t in self.operators[index].inputs if t >= 0 and not self.is_constant(t))

    def output_name(self, index: int) -> str:
        outputs = self.operators[index].outputs
        if outputs is None or len(outputs) == 0:
            return ""
        name = self.subgraph.tensors[outputs[0]].name
        return name.decode() if isinstance(name, bytes) else str(name or "")


def _attention(graph: _Graph) -> set[int]:
    region: set[int] = set()
    for softmax, kind in enumerate(graph.kinds):
        if kind != "SOFTMAX":
            continue
        region.add(softmax)
        # Back from the SOFTMAX to the score BATCH_MATMUL through elementwise ops.
        frontier, path = [softmax], []
        for _ in range(_MAX_SCORE_PATH):
            previous = [
                graph.producer.get(t)
                for i in frontier
                for t in graph.operators[i].inputs
                if t >= 0 and not graph.is_constant(t)
            ]
            previous = [p for p in previous if p is not None]
            scores = [p for p in previous if graph.kinds[p] == "BATCH_MATMUL"]
            if scores:
                region.update(scores)
                region.update(path)
                break
            frontier = [p for p in previous if graph.kinds[p] in _SCORE_PATH_OPS]
            path.extend(frontier)
            if not frontier:
                break
        # Forward from the SOFTMAX to the context BATCH_MATMUL.
        # (keras-hub masks the probabilities once more with a SELECT before the context product.)
        frontier = [softmax]
        for _ in range(4):
            following = [r for i in frontier for t in graph.operators[i].outputs for r in graph.readers.get(t, ())]
            context = [r for r in following if graph.kinds[r] == "BATCH_MATMUL"]
            if context:
                region.update(context)
                region.update(r for r in frontier if r != softmax)
                break
            frontier = [r for r in following if graph.kinds[r] in _SCORE_PATH_OPS]
    return region


def _is_gated_product(graph: _Graph, index: int) -> bool:
    """A MUL of two activations that are not a norm's x * rsqrt(...)."""
    op = graph.operators[index]
    if graph.kinds[index] != "MUL" or len(op.inputs) != 2 or any(graph.is_constant(t) for t in op.inputs):
        return False
    return (
        all(
            graph.source(t) is None
            or graph.kinds[graph.source(t)] not in ("RSQRT", "MUL")
            or _is_silu(graph, graph.source(t))
            for t in op.inputs
        )
        and op.inputs[0] != op.inputs[1]
    )


def _is_silu(graph: _Graph, index: int) -> bool:
    """x * sigmoid(x)."""
    op = graph.operators[index]
    if graph.kinds[index] != "MUL" or len(op.inputs) != 2:
        return False
    sources = [graph.source(t) for t in op.inputs]
    return any(s is not None and graph.kinds[s] == "LOGISTIC" for s in sources)


def _mlp_activation(graph: _Graph, index: int) -> set[int]:
    """The ops computing the MLP activation that op `index` (GELU or a gated product) ends, or empty."""
    if graph.kinds[index] == "GELU":
        return {index}
    if not _is_gated_product(graph, index):
        return set()
    ops = {index}
    for tensor in graph.operators[index].inputs:
        silu = graph.source(tensor)
        if silu is not None and _is_silu(graph, silu):
            ops.add(silu)
            ops.update(
                s
                for s in (graph.source(t) for t in graph.operators[silu].inputs)
                if s is not None and graph.kinds[s] == "LOGISTIC"
            )
    return ops


def _mlp_down(graph: _Graph) -> set[int]:
    region: set[int] = set()
    for index, kind in enumerate(graph.kinds):
        if kind != "FULLY_CONNECTED":
            continue
        source = graph.source(graph.activation_input(index))
        activation = set() if source is None else _mlp_activation(graph, source)
        if activation:
            region.add(index)
            region.update(activation)
    return region


def _mlp(graph: _Graph) -> set[int]:
    """`mlp_down` and the FULLY_CONNECTEDs that feed the activation (GPT-2's up, Llama's gate and up)."""
    region = _mlp_down(graph)
    for index in list(region):
        if graph.kinds[index] == "FULLY_CONNECTED":
            continue
        for tensor in graph.operators[index].inputs:
            source = graph.source(tensor)
            if source is not None and graph.kinds[source] == "FULLY_CONNECTED":
                region.add(source)
    return region


def _logits(graph: _Graph) -> set[int]:
    region = set()
    for tensor in graph.outputs:
        source = graph.source(tensor)
        if source is not None and graph.kinds[source] == "FULLY_CONNECTED":
            region.add(source)
    return region


GROUPS: dict[str, Callable[[_Graph], set[int]]] = {
    "attention": _attention,
    "mlp_down": _mlp_down,
    "mlp": _mlp,
    "logits": _logits,
}


def _builtin_op_names() -> set[str]:
    schema = inspection.schema()
    return set(inspection.enum_names(schema.BuiltinOperator).values())


def parse_choices(choices: str | Iterable[str] | None) -> tuple[str, ...]:
    """Checks selective-quantization choices; returns them normalised.

    Args:
      choices: a comma-separated string or a sequence of choices (see the
        module docstring); None or empty for none.

    Raises:
      ValueError: an unknown group or op type, or a bad regex; the message
        lists what is valid.
    """
    if choices is None:
        return ()
    if isinstance(choices, str):
        choices = choices.split(",")
    parsed = []
    known_ops = None
    for raw in choices:
        choice = str(raw).strip()
        if not choice:
            continue
        if choice.startswith(NAME_PREFIX):
            pattern = choice[len(NAME_PREFIX) :]
            if not pattern:
                raise ValueError(f"{choice!r}: give a regular expression after {NAME_PREFIX!r}.")
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"{choice!r} is not a valid regular expression: {error}.") from None
        elif choice.lower() in GROUPS:
            choice = choice.lower()
        else:
            known_ops = known_ops or _builtin_op_names()
            if choice.upper() not in known_ops:
                raise ValueError(
                    f"Unknown float choice {choice!r}. Use a group ({', '.join(GROUPS)}), a TFLite op type "
                    f"such as SOFTMAX or FULLY_CONNECTED, or {NAME_PREFIX}<regex> on op output names."
                )
            choice = choice.upper()
        if choice not in parsed:
            parsed.append(choice)
    return tuple(parsed)


def select_ops(model_object, choices: Sequence[str], *, subgraph: int = 0) -> dict[str, set[int]]:
    """The ops of a subgraph that each choice selects (bridges excluded).

    Args:
      model_object: a model (`inspection.load_model_object`).
      choices: as returned by `parse_choices`.
      subgraph: which subgraph (a generation model has one per signature).

    Returns:
      Choice -> op indices in execution order.
    """
    graph = _Graph(model_object, subgraph)
    selected: dict[str, set[int]] = {}
    for choice in parse_choices(choices):
        if choice in GROUPS:
            ops = GROUPS[choice](graph)
        elif choice.startswith(NAME_PREFIX):
            pattern = re.compile(choice[len(NAME_PREFIX) :])
            ops = {i for i in range(len(graph.operators)) if pattern.search(graph.output_name(i))}
        else:
            ops = {i for i, kind in enumerate(graph.kinds) if kind == choice}
        selected[choice] = {i for i in ops if graph.kinds[i] not in _BRIDGE_OPS}
    return selected


def describe(model_object, ops: Iterable[int]) -> str:
    """'3 FULLY_CONNECTED, 3 MUL' for a set of op indices."""
    graph = _Graph(model_object)
    counts = collections.Counter(graph.kinds[i] for i in ops)
    return ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))


def keep_in_float(model: bytes, choices: Sequence[str] = (), *, residual_stream: bool = False):
    """Runs the chosen ops of a quantized model, and optionally its residual stream, in float.

    All of them form one region (`float_regions.run_region_in_float`), so a
    tensor passed between two chosen ops is never quantized.

    Args:
      model: a quantized (int8 or int16x8) `.tflite` model.
      choices: selective-quantization choices (see the module docstring).
      residual_stream: also the residual stream's ADDs and the norm statistics
        (`float_regions.residual_and_norm_ops`).

    Returns:
      A `SurgeryResult`: the model and one line per choice
      saying what runs in float. A choice that selects nothing says so.
    """
    from converter.passes import float_regions  # pylint: disable=import-outside-toplevel

    model_object = inspection.load_model_object(model)
    kinds = _Graph(model_object).kinds
    region: set[int] = set()
    changes = []
    if residual_stream:
        stream = float_regions.residual_and_norm_ops(model_object)
        computing = {i for i in stream if kinds[i] not in _BRIDGE_OPS}
        if computing:
            region |= stream
            changes.append(f"residual stream and norm statistics run in float: {describe(model_object, computing)}")
    for choice, ops in select_ops(model_object, choices).items():
        region |= ops
        hybrid = (
            " (FULLY_CONNECTED dynamic-range: int8 weights, float activations)"
            if any(kinds[i] == "FULLY_CONNECTED" for i in ops)
            else ""
        )
        changes.append(
            f"kept in float ({choice}): {describe(model_object, ops)}{hybrid}"
            if ops
            else f"kept in float ({choice}): no op matched"
        )
    if not region:
        return SurgeryResult(model=bytes(model), changes=tuple(changes))
    float_regions.run_region_in_float(model_object, region)
    return SurgeryResult(model=writing.pack(model_object), changes=tuple(changes))
